"""Protocol T: the TCA4Rec authors' Amazon-2018 release (`data/amazon18_*_tca4rec`).

`item.csv.gz` (`,rawid,title,mapping_iid[,brand,style,category],iid`) gives the items, iid 1..N;
`{train_10000,valid_5000,test_5000}.csv.gz` give rows (uid, target iid, hist_id = 10 earlier iids,
timestamp). Item id = iid - 1. Users are the uids seen in the three files, remapped to 0..U-1 in
increasing uid order (raw uid kept in `users.raw_id`). Each row is one example; the release has no
full interaction log, so `interactions` is None.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SPLITS, Examples, SeqDataset
from semrec.errors import SemrecError
from semrec.artifacts import read_json

SPLIT_FILES = {"train": "train_10000.csv.gz", "valid": "valid_5000.csv.gz", "test": "test_5000.csv.gz"}
ROW_COLUMNS = ("uid", "iid", "his_len", "hist_id", "timestamp")
LIST_COLUMNS = ("style", "category")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise SemrecError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise SemrecError(f"{path}: cannot parse CSV ({str(e).strip().splitlines()[-1]})") from None


def _require(df: pd.DataFrame, cols, path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SemrecError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})")


def _text(values) -> list:
    return [None if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in values]


def _parse_list_cells(values, path: Path, col: str) -> list:
    """Python list literals -> lists of str ('[]' fast path; repeated cells parsed once)."""
    cache: dict[str, list] = {"[]": []}
    out = []
    for row, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
            continue
        s = str(v)
        if s not in cache:
            try:
                parsed = ast.literal_eval(s) if s.startswith("[") else s
            except (ValueError, SyntaxError):
                raise SemrecError(f"{path}: line {row + 2}: column {col}: not a list literal: {s[:60]!r}") from None
            cache[s] = [str(x) for x in parsed] if isinstance(parsed, (list, tuple)) else [str(parsed)]
        out.append(list(cache[s]))
    return out


def _parse_histories(cells, lengths: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """hist_id list literals '[1, 2, ...]' -> (flat int64 array, offsets)."""
    flat, lens = [], np.empty(len(cells), dtype=np.int64)
    for row, s in enumerate(cells):
        s = str(s).strip()
        try:
            if not (s.startswith("[") and s.endswith("]")):
                raise ValueError
            body = s[1:-1].strip()
            h = [int(x) for x in body.split(",")] if body else []
        except ValueError:
            raise SemrecError(f"{path}: line {row + 2}: hist_id is not a list of integers: {s[:60]!r}") from None
        if len(h) != lengths[row]:
            raise SemrecError(f"{path}: line {row + 2}: hist_id has {len(h)} items but his_len is {lengths[row]}")
        lens[row] = len(h)
        flat.extend(h)
    offsets = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return np.asarray(flat, dtype=np.int64), offsets


def load_items_tca4rec(folder: Path) -> pd.DataFrame:
    """item.csv.gz -> items table (row i = iid i+1): raw_id, title, mapping_raw_id, brand/style/category."""
    path = folder / "item.csv.gz"
    df = _read_csv(path)
    _require(df, ("rawid", "title", "mapping_iid", "iid"), path)
    if len(df) == 0:
        raise SemrecError(f"{path}: no items")
    iid = pd.to_numeric(df["iid"], errors="coerce").to_numpy()
    if np.isnan(iid).any():
        raise SemrecError(f"{path}: line {int(np.flatnonzero(np.isnan(iid))[0]) + 2}: iid is not an integer")
    order = np.argsort(iid, kind="stable")
    if not np.array_equal(iid[order], np.arange(1, len(df) + 1)):
        raise SemrecError(f"{path}: iid must be exactly 1..{len(df)} (found {int(iid.min())}..{int(iid.max())}, "
                          f"{len(np.unique(iid))} distinct)")
    df = df.iloc[order].reset_index(drop=True)
    items = pd.DataFrame({
        "raw_id": _text(df["rawid"].tolist()),
        "title": _text(df["title"].tolist()),
        "mapping_raw_id": _text(df["mapping_iid"].tolist()),
    })
    if "brand" in df.columns:
        items["brand"] = _text(df["brand"].tolist())
    for col in LIST_COLUMNS:
        if col in df.columns:
            items[col] = _parse_list_cells(df[col].tolist(), path, col)
    return items.astype(object)


def load_tca4rec(folder: str | Path, *, name: str | None = None) -> SeqDataset:
    """Load a TCA4Rec release folder (protocol T). See the module docstring for the conventions."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SemrecError(f"{folder}: no such directory")
    items = load_items_tca4rec(folder)
    n_items = len(items)
    rows = {}
    for split in SPLITS:
        path = folder / SPLIT_FILES[split]
        df = _read_csv(path)
        _require(df, ROW_COLUMNS, path)
        if len(df) == 0:
            raise SemrecError(f"{path}: no rows")
        for col in ("uid", "iid", "his_len", "timestamp"):
            v = pd.to_numeric(df[col], errors="coerce")
            if v.isna().any():
                raise SemrecError(f"{path}: line {int(np.flatnonzero(v.isna())[0]) + 2}: {col} is not a number")
        flat, offsets = _parse_histories(df["hist_id"].tolist(), df["his_len"].to_numpy(np.int64), path)
        targets = df["iid"].to_numpy(np.int64)
        for what, arr in (("iid", targets), ("hist_id", flat)):
            bad = (arr < 1) | (arr > n_items)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                row = k if what == "iid" else int(np.searchsorted(offsets, k, side="right") - 1)
                raise SemrecError(f"{path}: line {row + 2}: {what} {int(arr[k])} is not an item of item.csv.gz "
                                  f"(1..{n_items})")
        rows[split] = (df["uid"].to_numpy(np.int64), targets - 1, flat - 1, offsets,
                       df["timestamp"].to_numpy(np.int64))
    raw_uids = np.unique(np.concatenate([r[0] for r in rows.values()]))
    splits = {s: Examples(np.searchsorted(raw_uids, r[0]), r[1], r[2], r[3], r[4]) for s, r in rows.items()}
    users = pd.DataFrame({"raw_id": pd.Series([str(x) for x in raw_uids], dtype=object)})
    info = {
        "source": folder.name,
        "format": "tca4rec",
        "files": {"items": "item.csv.gz", **SPLIT_FILES},
        "rows": {s: len(splits[s]) for s in SPLITS},
        "num_items": n_items,
        "num_users_seen": len(raw_uids),
        "history_length": sorted({int(x) for s in SPLITS for x in np.unique(splits[s].lengths)}),
        "note": "protocol T: one example per released row (history of 10 + target); the full training "
                "log (train.csv) is not released, so there is no interaction table",
    }
    stat = folder / "data_stat.json"
    if stat.is_file():
        info["data_stat"] = read_json(stat)
    ds = SeqDataset(name=name or folder.name, items=items, splits=splits, users=users, protocol="T", info=info)
    ds.validate()
    return ds
