"""Raw Amazon review dumps (McAuley lab) -> `SeqDataset`, so any category can be rebuilt from the originals.

- 2014: `reviews_<Cat>_5.json.gz` or `reviews_<Cat>.json.gz` (one JSON object per line) and
  `meta_<Cat>.json.gz` (one Python dict literal per line, parsed with `ast.literal_eval`, never eval).
- 2018: `<Cat>.json.gz` or `<Cat>_5.json.gz` and `meta_<Cat>.json.gz` (JSON lines).
Reviews give (reviewerID, asin, unixReviewTime, overall -> rating). Items keep title, brand, category
path(s) and description raw; titles are cleaned by the options. Then `semrec.data.events` filters
(rating, time window, titles, duplicates, k-core), remaps ids and splits. Defaults: 5-core, items
missing from the meta file kept without a title, leave-one-out.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import pandas as pd
from tqdm.auto import tqdm

from semrec.data.dataset import SeqDataset
from semrec.data.events import PrepareConfig, build_from_events
from semrec.errors import SemrecError

REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")
_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


@dataclass
class AmazonConfig(PrepareConfig):
    """PrepareConfig with the Amazon conventions as defaults: 5-core, missing metadata kept untitled."""

    min_user_interactions: int = 5
    min_item_interactions: int = 5
    unknown_items: Literal["error", "drop", "keep"] = "keep"


def _open(path: Path):
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _lines(path: Path, desc: str) -> Iterator[tuple[int, str]]:
    try:
        with _open(path) as f:
            for lineno, line in enumerate(tqdm(f, desc=desc, unit=" lines", disable=None, leave=False), 1):
                if line.strip():
                    yield lineno, line
    except (OSError, EOFError) as e:  # truncated or corrupt gzip
        raise SemrecError(f"{path}: cannot read ({e})") from None


def _parser(year: int, kind: str) -> Callable[[str], object]:
    if year == 2018:
        return json.loads
    if kind == "meta":
        return ast.literal_eval
    def parse(line: str):  # 2014 reviews are JSON; a few mirrors write them as Python literals
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return ast.literal_eval(line)
    return parse


def _parse_line(parse, line: str, path: Path, lineno: int) -> dict:
    try:
        obj = parse(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        what = "a Python dict literal" if parse is ast.literal_eval else "valid JSON"
        raise SemrecError(f"{path}: line {lineno}: not {what}: {line.strip()[:60]!r}") from None
    if not isinstance(obj, dict):
        raise SemrecError(f"{path}: line {lineno}: expected an object, got {type(obj).__name__}")
    return obj


def _check_year(year: int) -> None:
    if year not in (2014, 2018):
        raise SemrecError(f"year must be 2014 or 2018, got {year}")


def read_amazon_reviews(path: str | Path, year: int) -> pd.DataFrame:
    """Review dump -> events DataFrame (user, item, timestamp, rating), in file order."""
    _check_year(year)
    path = Path(path)
    parse = _parser(year, "reviews")
    users, items, times, ratings = [], [], [], []
    for lineno, line in _lines(path, "reviews"):
        r = _parse_line(parse, line, path, lineno)
        missing = [k for k in REVIEW_FIELDS if k not in r]
        if missing:
            raise SemrecError(f"{path}: line {lineno}: missing field(s) {', '.join(missing)}")
        try:
            t = int(r["unixReviewTime"])
        except (TypeError, ValueError):
            raise SemrecError(f"{path}: line {lineno}: unixReviewTime {r['unixReviewTime']!r} "
                              "is not an integer") from None
        users.append(str(r["reviewerID"]))
        items.append(str(r["asin"]))
        times.append(t)
        v = r.get("overall")
        ratings.append(float(v) if isinstance(v, (int, float)) else float("nan"))
    if not users:
        raise SemrecError(f"{path}: empty file (no reviews)")
    return pd.DataFrame({"user": pd.Series(users, dtype=object), "item": pd.Series(items, dtype=object),
                         "timestamp": pd.Series(times, dtype="int64"), "rating": ratings})


def _str_or_none(v) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _str_list(v) -> list[str] | None:
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [str(v)]


def _meta_row(r: dict, year: int) -> dict:
    if year == 2014:
        cats = r.get("categories")
        return {
            "title": r.get("title"),
            "brand": _str_or_none(r.get("brand")),
            "categories": [_str_list(c) or [] for c in cats] if isinstance(cats, (list, tuple)) else None,
            "description": _str_or_none(r.get("description")),
        }
    return {
        "title": r.get("title"),
        "brand": _str_or_none(r.get("brand")),
        "category": _str_list(r.get("category")),
        "main_cat": _str_or_none(r.get("main_cat")),
        "description": _str_list(r.get("description")),
    }


def read_amazon_meta(path: str | Path, year: int, asins: set[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Meta dump -> items table (raw_id, title, brand, categories|category, ...) for `asins` (all if None).

    Lines for other products are skipped before parsing (the dumps cover the whole category). Returns
    (items, info) where info counts the lines read and duplicate products (first line kept)."""
    _check_year(year)
    path = Path(path)
    parse = _parser(year, "meta")
    rows: dict[str, dict] = {}
    n_lines = dup = 0
    for lineno, line in _lines(path, "meta"):
        n_lines += 1
        m = _ASIN.search(line)
        if m is not None and asins is not None and m.group(1) not in asins:
            continue
        r = _parse_line(parse, line, path, lineno)
        if "asin" not in r:
            raise SemrecError(f"{path}: line {lineno}: missing field asin")
        asin = str(r["asin"])
        if asins is not None and asin not in asins:
            continue
        if asin in rows:
            dup += 1
            continue
        rows[asin] = {"raw_id": asin, **_meta_row(r, year)}
    if n_lines == 0:
        raise SemrecError(f"{path}: empty file (no products)")
    cols = ["raw_id", "title", "brand"] + (["categories", "description"] if year == 2014
                                           else ["category", "main_cat", "description"])
    items = pd.DataFrame(list(rows.values()), columns=cols, dtype=object)
    return items, {"meta_lines": n_lines, "meta_products_used": len(rows), "duplicate_meta_products": dup}


def load_amazon(reviews: str | Path, meta: str | Path, year: int, cfg: AmazonConfig | None = None, *,
                name: str | None = None) -> SeqDataset:
    """Build a dataset from an Amazon 2014 or 2018 review dump + meta dump (see the module docstring)."""
    _check_year(year)
    cfg = cfg or AmazonConfig()
    reviews, meta = Path(reviews), Path(meta)
    events = read_amazon_reviews(reviews, year)
    items, meta_info = read_amazon_meta(meta, year, set(events["item"].unique()))
    stem = reviews.name.split(".")[0].removeprefix("reviews_")
    info = {"source": {"reviews": reviews.name, "meta": meta.name, "year": year}, **meta_info}
    return build_from_events(events, items, cfg, name=name or f"amazon{year % 100}-{stem}",
                             events_source=str(reviews), items_source=str(meta), info=info)
