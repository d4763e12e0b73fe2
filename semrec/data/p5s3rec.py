"""Protocol P: the Amazon-2014 5-core sequences of S3Rec / P5 / TIGER (`data/amazon14_p5s3rec_seq`).

Reads `s3rec_<Cat>.txt.gz` (`user item item ...`, chronological, ids from 1),
`item_meta_<Short>.jsonl.gz` (one object per item, `s3rec_id` 1..N, `asin`, `title`, `categories`,
`idgenrec_text_id`) and `s3rec_<Cat>_item2attributes.json.gz` (anonymised attribute ids).
Item id = s3rec_id - 1; users keep file order (raw id = the S3Rec user id). Items table columns:
raw_id (ASIN), title (HTML-unescaped; None for Sports, which has no titles), categories (list of
category paths, None for Sports), keywords (IDGenRec's generated keywords, all three categories),
attributes (list of int attribute ids, [] where the attribute file has none).
Splits: leave-one-out (`semrec.data.splits.leave_one_out`); a user with fewer than 3 items would get
no example and is counted in `info["users_without_examples"]` (none in the bundled files: every
sequence has at least 5 items). There are no timestamps (-1).
"""

from __future__ import annotations

import gzip
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SeqDataset
from semrec.data.splits import leave_one_out, split_labels
from semrec.errors import SemrecError

# category name in the S3Rec files -> name in the item_meta / idgenrec files
CATEGORIES = {"Beauty": "Beauty", "Sports_and_Outdoors": "Sports", "Toys_and_Games": "Toys"}


def _category(category: str) -> tuple[str, str]:
    for long, short in CATEGORIES.items():
        if category in (long, short):
            return long, short
    raise SemrecError(f"unknown P5/S3Rec category '{category}' (choose from {', '.join(CATEGORIES)})")


def _open_text(path: Path):
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_sequences(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`user item item ...` lines -> (raw user ids, ptr (U+1,), flat item ids as written)."""
    users, lens, flat = [], [], []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                seq = [int(x) for x in parts[1:]]
            except ValueError:
                raise SemrecError(f"{path}: line {lineno}: item ids must be integers") from None
            if not seq:
                raise SemrecError(f"{path}: line {lineno}: user {parts[0]} has no items")
            users.append(parts[0])
            lens.append(len(seq))
            flat.extend(seq)
    if not users:
        raise SemrecError(f"{path}: empty file")
    if len(set(users)) != len(users):
        raise SemrecError(f"{path}: a user id appears on more than one line")
    ptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lens, out=ptr[1:])
    return users, ptr, np.asarray(flat, dtype=np.int64)


def read_item_meta(path: Path) -> pd.DataFrame:
    """item_meta_<Cat>.jsonl.gz -> items table ordered by s3rec_id (checked to be 1..N)."""
    rows = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise SemrecError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(r, dict) or "s3rec_id" not in r or "asin" not in r:
                raise SemrecError(f"{path}: line {lineno}: expected an object with s3rec_id and asin")
            rows.append(r)
    if not rows:
        raise SemrecError(f"{path}: empty file")
    ids = np.array([int(r["s3rec_id"]) for r in rows])
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(1, len(rows) + 1)):
        raise SemrecError(f"{path}: s3rec_id must be exactly 1..{len(rows)}")
    rows = [rows[k] for k in order]
    title = [html.unescape(r["title"]) if r.get("title") else None for r in rows]
    cats = [[[str(c) for c in path_] for path_ in r["categories"]] if r.get("categories") else None for r in rows]
    return pd.DataFrame({
        "raw_id": [str(r["asin"]) for r in rows],
        "title": title,
        "categories": cats,
        "keywords": [r.get("idgenrec_text_id") or None for r in rows],
    }, dtype=object)


def read_attributes(path: Path, n_items: int) -> list[list[int]]:
    """s3rec item2attributes JSON {"item id": [attribute ids]} -> per-item lists (index = id - 1)."""
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise SemrecError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise SemrecError(f"{path}: expected a JSON object mapping item id -> attribute ids")
    out: list[list[int]] = [[] for _ in range(n_items)]
    for key, attrs in data.items():
        try:
            k = int(key)
            vals = [int(a) for a in attrs]
        except (TypeError, ValueError):
            raise SemrecError(f"{path}: item {key!r}: attributes must be a list of integers") from None
        if not 1 <= k <= n_items:
            raise SemrecError(f"{path}: item id {key} is not an item of the sequences (1..{n_items})")
        out[k - 1] = vals
    return out


def load_p5s3rec(folder: str | Path, category: str, *, name: str | None = None) -> SeqDataset:
    """Load one P5/S3Rec category (protocol P, leave-one-out). See the module docstring."""
    folder = Path(folder)
    long, short = _category(category)
    seq_path = folder / f"s3rec_{long}.txt.gz"
    meta_path = folder / f"item_meta_{short}.jsonl.gz"
    attr_path = folder / f"s3rec_{long}_item2attributes.json.gz"
    users, ptr, flat = read_sequences(seq_path)
    items = read_item_meta(meta_path)
    n_items = len(items)
    bad = (flat < 1) | (flat > n_items)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        line = int(np.searchsorted(ptr, k, side="right"))
        raise SemrecError(f"{seq_path}: line {line}: item {int(flat[k])} is not in {meta_path.name} (1..{n_items})")
    items["attributes"] = pd.Series(read_attributes(attr_path, n_items), dtype=object)
    item_ids = flat - 1
    times = np.full(len(item_ids), -1, dtype=np.int64)
    splits, event_split = leave_one_out(ptr, item_ids, times)
    n = np.diff(ptr)
    user_of = np.repeat(np.arange(len(users), dtype=np.int64), n)
    inter = pd.DataFrame({"user_id": user_of, "item_id": item_ids, "timestamp": times,
                          "split": split_labels(event_split)})
    info = {
        "source": folder.name,
        "format": "p5s3rec",
        "category": long,
        "files": {"sequences": seq_path.name, "items": meta_path.name, "attributes": attr_path.name},
        "num_interactions": int(len(item_ids)),
        "users_without_examples": int((n < 3).sum()),
        "items_never_interacted": int(n_items - len(np.unique(item_ids))),
        "items_with_title": int(items["title"].notna().sum()),
        "text": "title + category paths" if items["title"].notna().any()
        else "no titles: only IDGenRec keywords (column 'keywords') and anonymised attribute ids",
        "split": {"scheme": "loo"},
    }
    ds = SeqDataset(name=name or f"p5s3rec-{short.lower()}", items=items, splits=splits,
                    users=pd.DataFrame({"raw_id": pd.Series(users, dtype=object)}), protocol="P", info=info,
                    interactions=inter)
    ds.validate()
    return ds
