"""`semrec data import-rows`: datasets released as rows of (user, history list, target[, timestamp]).

MiniOneRec, BIGRec, LC-Rec and TCA4Rec publish train/valid/test CSV files whose rows are already
examples: a user, the items before the target (a list literal such as `[12, 7, 301]` or
`['B00X', 'B01Y']`) and the target item. The default column names fit the MiniOneRec/BIGRec layout
(`user_id`, `history_item_id`, `item_id`); `RowsConfig` names other layouts. Rows are kept as
given (no reordering, capping or de-duplication), so such a dataset behaves like the protocol-T
built-ins: one example per row, no full interaction log, and the CF teacher trains on the train rows
(each history + target as one sequence), never on valid or test histories.

Items: the items file (CSV/TSV/JSONL/Parquet read by `semrec.data.importer.read_items`, or a JSON
object `{item_id: {"title": ..., ...}}` as MiniOneRec's `*.item.json`) fixes the item ids: row i is
item i. Every history and target item must be in it; an empty history, a malformed list, a history
whose length disagrees with the stated length column, or an unknown item is an error naming the file
and line. Users are numbered by first appearance over the train, valid and test files.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from semrec.data.dataset import SPLITS, Examples, SeqDataset
from semrec.data.importer import ImportConfig, read_items, read_table, require_column, row_where
from semrec.errors import SemrecError


@dataclass
class RowsConfig:
    """Column names and list format of the row files, and the items file's columns."""

    user_col: str = "user_id"
    history_col: str = "history_item_id"
    target_col: str = "item_id"
    time_col: str | None = None  # None: "timestamp" when the files have it, else no timestamps (-1)
    length_col: str | None = None  # a column stating each history's length, checked when given
    list_format: Literal["literal", "split"] = "literal"  # '[1, 2]' / "['a', 'b']", or items joined by list_sep
    list_sep: str | None = None  # list_format split: separator (None: whitespace)
    sep: str | None = None  # separator of the row files (None: sniffed)
    items_sep: str | None = None
    items_id_col: str = "item_id"
    title_col: str = "title"
    text_cols: list[str] | None = None


def raw_id(v) -> str:
    """A raw id as str; integral floats without a trailing '.0'."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def parse_list(cell, cfg: RowsConfig) -> list[str] | None:
    """One history cell -> raw item ids, or None when it is not a list in the configured format."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    if isinstance(cell, (list, tuple, np.ndarray)):  # Parquet / JSON lines hold real lists
        return [raw_id(x) for x in (cell.tolist() if isinstance(cell, np.ndarray) else cell)]
    s = str(cell).strip()
    if cfg.list_format == "split":
        return s.split(cfg.list_sep) if cfg.list_sep is not None else s.split()
    if not (s.startswith("[") and s.endswith("]")):
        return None
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(v, (list, tuple)) or any(isinstance(x, (list, tuple, dict, set)) for x in v):
        return None
    return [raw_id(x) for x in v]


def read_items_table(path: str | Path, cfg: RowsConfig) -> pd.DataFrame:
    """Items file -> items table (raw_id, title, text columns); also a JSON object of per-item objects."""
    path = Path(path)
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            obj = None  # JSON lines: read below
        except UnicodeDecodeError as e:
            raise SemrecError(f"{path}: not UTF-8 text ({e.reason})") from None
        if isinstance(obj, dict):
            rows = []
            for k, v in obj.items():
                if not isinstance(v, dict):
                    v = {cfg.title_col: v}
                rows.append({cfg.items_id_col: k, **v})
            if not rows:
                raise SemrecError(f"{path}: no items")
            tmp = pd.DataFrame(rows)
            if cfg.title_col not in tmp.columns:
                require_column(tmp, cfg.title_col, path, "--title-col")
            out = pd.DataFrame({"raw_id": [raw_id(x) for x in tmp[cfg.items_id_col]],
                                "title": [None if not isinstance(t, str) or not t.strip() else t
                                          for t in tmp[cfg.title_col]]}, dtype=object)
            extras = [c for c in tmp.columns if c not in (cfg.items_id_col, cfg.title_col)
                      and (cfg.text_cols is None or c in cfg.text_cols)]
            for c in extras:
                out[c] = [None if v is None or (isinstance(v, float) and np.isnan(v))
                          else v if isinstance(v, str) else json.dumps(v) for v in tmp[c].tolist()]
            return out
    icfg = ImportConfig(items_id_col=cfg.items_id_col, title_col=cfg.title_col, text_cols=cfg.text_cols,
                        items_sep=cfg.items_sep)
    return read_items(path, icfg)


def read_rows(path: str | Path, cfg: RowsConfig) -> pd.DataFrame:
    """Row file -> DataFrame(user, history (list of raw ids), target, timestamp, line) in file order."""
    path = Path(path)
    cols = [cfg.user_col, cfg.history_col, cfg.target_col]
    df, kind = read_table(path, cfg.sep, cols)
    if len(df) == 0:
        raise SemrecError(f"{path}: no rows (only a header)")
    for col, flag in ((cfg.user_col, "--user-col"), (cfg.history_col, "--history-col"),
                      (cfg.target_col, "--target-col")):
        require_column(df, col, path, flag)
    time_col = cfg.time_col if cfg.time_col is not None else ("timestamp" if "timestamp" in df.columns else None)
    if time_col is not None:
        require_column(df, time_col, path, "--time-col")
    if cfg.length_col is not None:
        require_column(df, cfg.length_col, path, "--length-col")
    hists = []
    for r, (idx, cell) in enumerate(zip(df.index, df[cfg.history_col].tolist())):
        h = parse_list(cell, cfg)
        where = f"{path}: {row_where(kind, int(idx))}"
        if h is None:
            raise SemrecError(f"{where}: column {cfg.history_col}: not a list literal: {str(cell)[:60]!r} "
                              "(see --list-format)")
        if not h:
            raise SemrecError(f"{where}: empty history in column {cfg.history_col}")
        hists.append(h)
    for col in (cfg.user_col, cfg.target_col):
        na = df[col].isna().to_numpy()
        if na.any():
            raise SemrecError(f"{path}: {row_where(kind, int(df.index[np.flatnonzero(na)[0]]))}: "
                              f"empty value in column '{col}'")
    if cfg.length_col is not None:
        stated = pd.to_numeric(df[cfg.length_col], errors="coerce").to_numpy()
        lens = np.array([len(h) for h in hists])
        bad = ~(stated == lens)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise SemrecError(f"{path}: {row_where(kind, int(df.index[r]))}: history has {lens[r]} items but "
                              f"{cfg.length_col} is {str(df[cfg.length_col].iloc[r])!r}")
    if time_col is not None:
        ts = pd.to_numeric(df[time_col], errors="coerce")
        if ts.isna().any():
            r = int(np.flatnonzero(ts.isna().to_numpy())[0])
            raise SemrecError(f"{path}: {row_where(kind, int(df.index[r]))}: timestamp "
                              f"{df[time_col].iloc[r]!r} in column '{time_col}' is not a number")
        ts = np.floor(ts.to_numpy(np.float64)).astype(np.int64)
    else:
        ts = np.full(len(df), -1, dtype=np.int64)
    return pd.DataFrame({"user": [raw_id(u) for u in df[cfg.user_col].tolist()], "history": hists,
                         "target": [raw_id(t) for t in df[cfg.target_col].tolist()], "timestamp": ts,
                         "line": [row_where(kind, int(i)) for i in df.index]})


def build_from_rows(rows: dict[str, pd.DataFrame], items: pd.DataFrame, *, name: str, sources: dict[str, str],
                    items_source: str, users: list[str] | None = None, protocol: str = "T",
                    info: dict | None = None, interactions: pd.DataFrame | None = None) -> SeqDataset:
    """Rows of each split (as `read_rows` returns) + an items table -> SeqDataset, one example per row.

    Item i is row i of `items`; users are numbered in the order of `users` (raw ids) when given, then by
    first appearance over train, valid and test. Unknown items are errors naming file and line."""
    item_index = pd.Index(items["raw_id"].astype(str))
    if not item_index.is_unique:
        dup = item_index[item_index.duplicated()][0]
        raise SemrecError(f"{items_source}: duplicate item id '{dup}'")
    user_ids: dict[str, int] = {u: k for k, u in enumerate(users or [])}
    splits = {}
    for s in SPLITS:
        df = rows[s]
        for u in df["user"].tolist():
            user_ids.setdefault(u, len(user_ids))
        lens = np.fromiter((len(h) for h in df["history"]), dtype=np.int64, count=len(df))
        flat_raw = [i for h in df["history"] for i in h]
        flat = item_index.get_indexer(flat_raw) if flat_raw else np.zeros(0, dtype=np.int64)
        targets = item_index.get_indexer(df["target"].tolist()) if len(df) else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(df) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        for what, arr, raw in (("target item", targets, df["target"].tolist()), ("history item", flat, flat_raw)):
            bad = np.flatnonzero(arr < 0)
            if len(bad):
                k = int(bad[0])
                r = k if what == "target item" else int(np.searchsorted(offsets, k, side="right") - 1)
                raise SemrecError(f"{sources[s]}: {df['line'].iloc[r]}: {what} '{raw[k]}' is not in {items_source} "
                                  f"({len(bad)} unknown in this file)")
        uids = np.array([user_ids[u] for u in df["user"].tolist()], dtype=np.int64)
        splits[s] = Examples(uids, targets, flat, offsets, df["timestamp"].to_numpy(np.int64))
    lengths = np.concatenate([splits[s].lengths for s in SPLITS])
    info = dict(info or {})
    info.update({
        "source": sources | {"items": items_source},
        "rows": {s: len(splits[s]) for s in SPLITS},
        "history_length": {"min": int(lengths.min()), "max": int(lengths.max()), "mean": float(lengths.mean())},
        "teacher_rows": "as protocol T: the train rows, each history + target one sequence; valid and test "
                        "histories are never trained on",
    })
    user_table = pd.DataFrame({"raw_id": pd.Series(list(user_ids), dtype=object)})
    ds = SeqDataset(name=name, items=items.reset_index(drop=True), splits=splits, users=user_table,
                    protocol=protocol, info=info, interactions=interactions)
    ds.validate()
    return ds


def import_rows(train: str | Path, valid: str | Path, test: str | Path, items: str | Path,
                cfg: RowsConfig | None = None, *, name: str | None = None) -> SeqDataset:
    """Read and check the three row files and the items file (see the module docstring)."""
    cfg = cfg or RowsConfig()
    paths = {"train": Path(train), "valid": Path(valid), "test": Path(test)}
    item_table = read_items_table(items, cfg)
    rows = {s: read_rows(p, cfg) for s, p in paths.items()}
    return build_from_rows(rows, item_table, name=name or paths["train"].name.split(".")[0],
                           sources={s: str(p) for s, p in paths.items()}, items_source=str(items),
                           info={"format": "rows", "columns": {"user": cfg.user_col, "history": cfg.history_col,
                                                              "target": cfg.target_col}})
