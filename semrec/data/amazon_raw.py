"""Raw Amazon review dumps (McAuley lab) -> `SeqDataset`, so any category can be rebuilt from the originals.

- 2014: `reviews_<Cat>_5.json.gz` or `reviews_<Cat>.json.gz` (one JSON object per line) and
  `meta_<Cat>.json.gz` (one Python dict literal per line, parsed with `ast.literal_eval`, never eval).
- 2018: `<Cat>.json.gz` or `<Cat>_5.json.gz` and `meta_<Cat>.json.gz` (JSON lines).
- 2023 (Amazon Reviews 2023): `<Cat>.jsonl[.gz]` reviews (user_id, parent_asin, timestamp in
  milliseconds, rating) and `meta_<Cat>.jsonl[.gz]` (title, store, main_category, categories, features,
  description, details, price), keyed by `parent_asin`; timestamps become unix seconds. The official
  benchmark splits (`<Cat>.train.csv`, `.valid.csv`, `.test.csv`: user_id,parent_asin,rating,timestamp
  and, in the `_w_his` variants, history = space-separated parent_asins) are read instead of the reviews
  when given: nothing is filtered or re-split (`semrec.data.given_splits`; a valid/test row's stated
  history is used as given).
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

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from semrec.data.dataset import SeqDataset
from semrec.data.events import PrepareConfig, build_from_events
from semrec.errors import SemrecError

REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")
_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_PARENT_ASIN = re.compile(r"""['"]parent_asin['"]\s*:\s*['"]([^'"]+)['"]""")
REVIEW_FIELDS_2023 = ("user_id", "parent_asin", "timestamp")
SPLIT_COLUMNS_2023 = ("user_id", "parent_asin", "timestamp")


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
        raise SemrecError(f"year must be 2014 or 2018 (2023: load_amazon2023), got {year}")


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


# ------------------------------------------------------------------------------------ Amazon Reviews 2023


def _ms_to_seconds(v, path: Path, where: str, field: str = "timestamp") -> int:
    try:
        return int(float(v)) // 1000
    except (TypeError, ValueError):
        raise SemrecError(f"{path}: {where}: {field} {v!r} is not a number (milliseconds)") from None


def read_amazon2023_reviews(path: str | Path) -> pd.DataFrame:
    """`<Cat>.jsonl[.gz]` -> events (user, item = parent_asin, timestamp in seconds, rating), in file order."""
    path = Path(path)
    users, items, times, ratings = [], [], [], []
    for lineno, line in _lines(path, "reviews"):
        r = _parse_line(json.loads, line, path, lineno)
        missing = [k for k in REVIEW_FIELDS_2023 if k not in r]
        if missing:
            raise SemrecError(f"{path}: line {lineno}: missing field(s) {', '.join(missing)} (Amazon Reviews 2023 "
                              "reviews have user_id, parent_asin, timestamp)")
        users.append(str(r["user_id"]))
        items.append(str(r["parent_asin"]))
        times.append(_ms_to_seconds(r["timestamp"], path, f"line {lineno}"))
        v = r.get("rating")
        ratings.append(float(v) if isinstance(v, (int, float)) else float("nan"))
    if not users:
        raise SemrecError(f"{path}: empty file (no reviews)")
    return pd.DataFrame({"user": pd.Series(users, dtype=object), "item": pd.Series(items, dtype=object),
                         "timestamp": pd.Series(times, dtype="int64"), "rating": ratings})


def _json_text(v) -> str | None:
    if v is None or v == {} or v == []:
        return None
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)


def read_amazon2023_meta(path: str | Path, asins: set[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """`meta_<Cat>.jsonl[.gz]` -> items table keyed by parent_asin (raw_id, title, brand = store, main_category,
    categories, features, description, details as JSON text, price), for `asins` (all if None)."""
    path = Path(path)
    rows: dict[str, dict] = {}
    n_lines = dup = 0
    for lineno, line in _lines(path, "meta"):
        n_lines += 1
        m = _PARENT_ASIN.search(line)
        if m is not None and asins is not None and m.group(1) not in asins:
            continue
        r = _parse_line(json.loads, line, path, lineno)
        if "parent_asin" not in r:
            raise SemrecError(f"{path}: line {lineno}: missing field parent_asin")
        asin = str(r["parent_asin"])
        if asins is not None and asin not in asins:
            continue
        if asin in rows:
            dup += 1
            continue
        rows[asin] = {"raw_id": asin, "title": r.get("title"), "brand": _str_or_none(r.get("store")),
                      "main_category": _str_or_none(r.get("main_category")),
                      "categories": _str_list(r.get("categories")), "features": _str_list(r.get("features")),
                      "description": _str_list(r.get("description")), "details": _json_text(r.get("details")),
                      "price": _str_or_none(r.get("price"))}
    if n_lines == 0:
        raise SemrecError(f"{path}: empty file (no products)")
    cols = ["raw_id", "title", "brand", "main_category", "categories", "features", "description", "details", "price"]
    items = pd.DataFrame(list(rows.values()), columns=cols, dtype=object)
    return items, {"meta_lines": n_lines, "meta_products_used": len(rows), "duplicate_meta_products": dup}


def read_amazon2023_splits(paths: dict[str, str | Path]) -> tuple[pd.DataFrame, np.ndarray, list | None]:
    """The benchmark CSVs -> (events with source/line, split code per event, given histories or None)."""
    parts, codes, hists = [], [], []
    any_history = False
    for code, split in enumerate(("train", "valid", "test")):
        path = Path(paths[split])
        if not path.is_file():
            raise SemrecError(f"{path}: no such file")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            raise SemrecError(f"{path}: empty file") from None
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
            raise SemrecError(f"{path}: cannot parse CSV ({str(e).strip().splitlines()[-1]})") from None
        missing = [c for c in SPLIT_COLUMNS_2023 if c not in df.columns]
        if missing:
            raise SemrecError(f"{path}: missing column(s) {', '.join(missing)} (Amazon Reviews 2023 benchmark files "
                              f"have user_id,parent_asin,rating,timestamp[,history]; has: {', '.join(df.columns)})")
        for c in ("user_id", "parent_asin", "timestamp"):
            na = df[c].isna().to_numpy()
            if na.any():
                raise SemrecError(f"{path}: line {int(np.flatnonzero(na)[0]) + 2}: empty value in column '{c}'")
        ts = pd.to_numeric(df["timestamp"], errors="coerce")
        if ts.isna().any():
            r = int(np.flatnonzero(ts.isna().to_numpy())[0])
            raise SemrecError(f"{path}: line {r + 2}: timestamp {df['timestamp'].iloc[r]!r} is not a number "
                              "(milliseconds)")
        rating = pd.to_numeric(df["rating"], errors="coerce") if "rating" in df.columns else np.nan
        parts.append(pd.DataFrame({"user": df["user_id"].astype(str).tolist(),
                                   "item": df["parent_asin"].astype(str).tolist(),
                                   "timestamp": (ts.to_numpy(np.float64) // 1000).astype(np.int64),
                                   "rating": rating, "source": str(path), "line": np.arange(len(df)) + 2}))
        codes.append(np.full(len(df), code, dtype=np.int64))
        if "history" in df.columns:
            any_history = True
            hists += [None if (split == "train" or h is None or (isinstance(h, float) and np.isnan(h)))
                      else str(h).split() for h in df["history"].tolist()]
        else:
            hists += [None] * len(df)
    events = pd.concat(parts, ignore_index=True)
    if len(events) == 0:
        raise SemrecError(f"{paths['train']}: the benchmark files have no rows")
    return events, np.concatenate(codes), hists if any_history else None


def load_amazon2023(meta: str | Path, reviews: str | Path | None = None, cfg: AmazonConfig | None = None, *,
                    splits: dict[str, str | Path] | None = None, name: str | None = None) -> SeqDataset:
    """Amazon Reviews 2023: the reviews dump filtered and split by `cfg`, or the official benchmark splits
    (`splits`: {"train": ..., "valid": ..., "test": ...}) kept as given. See the module docstring."""
    from semrec.data.given_splits import build_from_split_events

    if (reviews is None) == (splits is None):
        raise SemrecError("Amazon 2023: give either the reviews file or the three benchmark split files")
    meta = Path(meta)
    if splits is not None:
        events, split_of, hists = read_amazon2023_splits(splits)
        wanted = set(events["item"].unique()) | {i for h in (hists or []) if h for i in h}
        items, meta_info = read_amazon2023_meta(meta, wanted)
        missing = sorted(wanted - set(items["raw_id"]))
        if missing:  # kept without metadata, as the dumps' default
            items = pd.concat([items, pd.DataFrame({"raw_id": missing, "title": None})], ignore_index=True)
        stem = Path(splits["train"]).name.split(".")[0]
        info = {"source": {"splits": {s: Path(p).name for s, p in splits.items()}, "meta": meta.name, "year": 2023},
                **meta_info, "items_added_without_metadata": len(missing)}
        return build_from_split_events(events, split_of, items, name=name or f"amazon23-{stem}",
                                       items_source=str(meta), info=info, histories=hists)
    cfg = cfg or AmazonConfig()
    reviews = Path(reviews)
    events = read_amazon2023_reviews(reviews)
    items, meta_info = read_amazon2023_meta(meta, set(events["item"].unique()))
    stem = reviews.name.split(".")[0]
    info = {"source": {"reviews": reviews.name, "meta": meta.name, "year": 2023}, **meta_info}
    return build_from_events(events, items, cfg, name=name or f"amazon23-{stem}", events_source=str(reviews),
                             items_source=str(meta), info=info)
