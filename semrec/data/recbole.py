"""RecBole atomic files <-> `SeqDataset` (`semrec data import --recbole`, `semrec data export --recbole`).

RecBole keeps a dataset NAME as `NAME.inter` (interactions), `NAME.item` and `NAME.user` (features),
each a delimited text file (tab in RecBole's own files; the separator is sniffed) whose header names
every field as `name:type`, type one of token, token_seq, float, float_seq (sequences are
space-separated). Benchmark splits come as `NAME.train.inter`, `NAME.valid.inter`, `NAME.test.inter`,
either plain interactions (the file says the split of each event) or rows with an item list field
(`item_id_list:token_seq`, the history, next to `item_id:token`, the target).

`DIR/NAME` names the files; a folder `DIR/NAME/` holding `NAME.inter` (RecBole's own layout) is
accepted too. Import:
- no benchmark files: `NAME.inter` is an event log that `semrec.data.events.build_from_events` filters
  and splits (leave-one-out by default), exactly as `semrec data import` does;
- plain benchmark files: every event keeps its file's split (`semrec.data.given_splits`: each valid and
  test event is an example whose history is all of that user's earlier events, in every file, and each
  user's train events give one train example);
- row benchmark files: one example per row, kept as given (as `semrec data import-rows`, protocol T);
  `NAME.inter`, when present, becomes the interaction log (protocol "custom", as for any imported
  log), each event labelled with the split whose
  example targets it, else train when it precedes the user's first valid/test target, else none.
Items are the `.item` rows in file order (item i = row i) with the first token_seq field whose name
contains "title" (else the first token_seq field) as the title and the other fields kept as text;
without a `.item` file, items are numbered by first appearance. Users follow `.user` when present.

Export writes `NAME.item`, `NAME.user`, `NAME.inter` (the full log, when the dataset has one) and the
three benchmark files in row form (user, item_id_list, item_id, timestamp), so the exact examples and
their order come back on import. Field types recorded at import are written back unchanged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SPLITS, SeqDataset
from semrec.data.events import PrepareConfig, build_from_events
from semrec.data.given_splits import build_from_split_events
from semrec.data.importer import sniff_separator
from semrec.data.rows import build_from_rows
from semrec.data.splits import split_labels
from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
LIST_SUFFIX = "_list"


@dataclass
class RecBoleConfig(PrepareConfig):
    """RecBole's field names (USER_ID_FIELD, ITEM_ID_FIELD, TIME_FIELD) plus the filtering/splitting options
    applied when there are no benchmark files."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    title_col: str | None = None  # item field used as title (None: first token_seq field with "title" in it)
    sep: str | None = None  # separator of the .inter files (None: sniffed)
    items_sep: str | None = None  # separator of the .item / .user files (None: sniffed)


def read_atomic(path: Path, sep: str | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """One atomic file -> (table with plain field names, all cells str or None; {field: type})."""
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    sep = sep if sep is not None else sniff_separator(path)
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE,
                         engine="python" if len(sep) > 1 else "c")
    except pd.errors.EmptyDataError:
        raise SemrecError(f"{path}: empty file") from None
    except pd.errors.ParserError as e:
        raise SemrecError(f"{path}: cannot parse with separator {sep!r} ({str(e).strip().splitlines()[-1]})") from None
    except UnicodeDecodeError as e:
        raise SemrecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    types: dict[str, str] = {}
    for col in df.columns:
        name, colon, kind = str(col).rpartition(":")
        if not colon or not name:
            raise SemrecError(f"{path}: header field {str(col)!r} is not 'name:type' (RecBole atomic files name "
                              f"each field as e.g. user_id:token; separator {sep!r})")
        if kind not in FIELD_TYPES:
            raise SemrecError(f"{path}: field {str(col)!r} has type {kind!r}; RecBole types are "
                              f"{', '.join(FIELD_TYPES)}")
        if name in types:
            raise SemrecError(f"{path}: field {name!r} appears twice in the header")
        types[name] = kind
    df.columns = list(types)
    return df.astype(object).where(df.notna(), None), types


def _need(types: dict[str, str], field: str, path: Path, flag: str) -> None:
    if field not in types:
        raise SemrecError(f"{path}: no field '{field}' (fields: {', '.join(types)}; set {flag})")


def _no_missing(df: pd.DataFrame, field: str, path: Path) -> None:
    na = df[field].isna().to_numpy()
    if na.any():
        raise SemrecError(f"{path}: line {int(np.flatnonzero(na)[0]) + 2}: empty value in field '{field}'")


def _timestamps(df: pd.DataFrame, field: str | None, path: Path) -> np.ndarray:
    if field is None:
        return np.full(len(df), -1, dtype=np.int64)
    ts = pd.to_numeric(df[field], errors="coerce")
    bad = ts.isna().to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise SemrecError(f"{path}: line {r + 2}: {field} {df[field].iloc[r]!r} is not a number")
    return np.floor(ts.to_numpy(np.float64)).astype(np.int64)


def _floats(df: pd.DataFrame, field: str, path: Path) -> np.ndarray:
    num = pd.to_numeric(df[field], errors="coerce")
    bad = (num.isna() & df[field].notna()).to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise SemrecError(f"{path}: line {r + 2}: {field} {df[field].iloc[r]!r} is not a number (type float)")
    return num.to_numpy(np.float64)


def _read_items(path: Path, cfg: RecBoleConfig) -> tuple[pd.DataFrame, dict[str, str]]:
    df, types = read_atomic(path, cfg.items_sep)
    _need(types, cfg.item_col, path, "--item-col")
    _no_missing(df, cfg.item_col, path)
    seq_fields = [f for f, t in types.items() if t == "token_seq" and f != cfg.item_col]
    titled = [f for f in seq_fields if "title" in f.lower()]
    title = cfg.title_col or (titled or seq_fields or [None])[0]
    if title is not None:
        _need(types, title, path, "--title-col")
    ids = df[cfg.item_col].astype(str)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        r = int(np.flatnonzero(dup)[0])
        raise SemrecError(f"{path}: line {r + 2}: duplicate item id '{ids.iloc[r]}'")
    items = pd.DataFrame({"raw_id": ids.tolist(), "title": df[title].tolist() if title else None}, dtype=object)
    for f, t in types.items():
        if f in (cfg.item_col, title):
            continue
        col = f if f not in ("raw_id", "title", "item_id") else f"{f}_orig"
        items[col] = _floats(df, f, path).tolist() if t == "float" else df[f].tolist()
    return items, {"file": path.name, "fields": types, "title_field": title}


def _read_users(path: Path, cfg: RecBoleConfig) -> tuple[pd.DataFrame, dict[str, str]]:
    df, types = read_atomic(path, cfg.items_sep)
    _need(types, cfg.user_col, path, "--user-col")
    _no_missing(df, cfg.user_col, path)
    users = df.rename(columns={cfg.user_col: "raw_id"})
    users["raw_id"] = users["raw_id"].astype(str)
    if users["raw_id"].duplicated().any():
        raise SemrecError(f"{path}: duplicate user id '{users['raw_id'][users['raw_id'].duplicated()].iloc[0]}'")
    return users, {"file": path.name, "fields": types}


def _read_events(path: Path, cfg: RecBoleConfig) -> pd.DataFrame:
    """A plain .inter file -> events (user, item, timestamp, other fields) in file order."""
    df, types = read_atomic(path, cfg.sep)
    for f, flag in ((cfg.user_col, "--user-col"), (cfg.item_col, "--item-col")):
        _need(types, f, path, flag)
        _no_missing(df, f, path)
    time = cfg.time_col if cfg.time_col in types else None
    ev = pd.DataFrame({"user": df[cfg.user_col].astype(str).tolist(), "item": df[cfg.item_col].astype(str).tolist(),
                       "timestamp": _timestamps(df, time, path)})
    for f, t in types.items():
        if f in (cfg.user_col, cfg.item_col, time):
            continue
        name = f if f not in ("user", "item", "timestamp", "user_id", "item_id", "split") else f"{f}_orig"
        ev[name] = _floats(df, f, path) if t == "float" else df[f].tolist()
    return ev


def _read_row_file(path: Path, cfg: RecBoleConfig) -> pd.DataFrame:
    df, types = read_atomic(path, cfg.sep)
    hist = cfg.item_col + LIST_SUFFIX
    _need(types, hist, path, "--item-col")
    for f, flag in ((cfg.user_col, "--user-col"), (cfg.item_col, "--item-col")):
        _need(types, f, path, flag)
        _no_missing(df, f, path)
    hists = []
    for r, cell in enumerate(df[hist].tolist()):
        h = [] if cell is None else str(cell).split()
        if not h:
            raise SemrecError(f"{path}: line {r + 2}: empty history in field '{hist}'")
        hists.append(h)
    time = cfg.time_col if cfg.time_col in types else None
    return pd.DataFrame({"user": df[cfg.user_col].astype(str).tolist(), "history": hists,
                         "target": df[cfg.item_col].astype(str).tolist(), "timestamp": _timestamps(df, time, path),
                         "line": [f"line {r + 2}" for r in range(len(df))]})


def _has_list_field(path: Path, cfg: RecBoleConfig) -> bool:
    return cfg.item_col + LIST_SUFFIX in read_atomic(path, cfg.sep)[1]


def _catalogue(items: pd.DataFrame | None, ids_in_order: list[str]) -> pd.DataFrame:
    """The .item table, or items numbered by first appearance when there is none."""
    if items is not None:
        return items
    return pd.DataFrame({"raw_id": list(dict.fromkeys(ids_in_order)), "title": None}, dtype=object)


def _label_log(log: pd.DataFrame, ds: SeqDataset, path: Path) -> pd.DataFrame:
    """The .inter log in dataset ids, each event labelled (see the module docstring)."""
    item_index = pd.Index(ds.items["raw_id"].astype(str))
    user_index = pd.Index(ds.users["raw_id"].astype(str))
    u, i = user_index.get_indexer(log["user"]), item_index.get_indexer(log["item"])
    for what, arr, raw in (("user", u, log["user"]), ("item", i, log["item"])):
        if (arr < 0).any():
            r = int(np.flatnonzero(arr < 0)[0])
            raise SemrecError(f"{path}: line {r + 2}: {what} '{raw.iloc[r]}' appears in no benchmark file")
    ts = log["timestamp"].to_numpy(np.int64)
    label = np.full(len(log), -1, dtype=np.int64)
    first_eval = np.full(ds.num_users, np.iinfo(np.int64).max)
    for code, s in enumerate(SPLITS):
        ex = ds.splits[s]
        keys = {(a, b, c) for a, b, c in zip(ex.users.tolist(), ex.targets.tolist(), ex.timestamps.tolist())}
        hit = np.array([(a, b, c) in keys for a, b, c in zip(u.tolist(), i.tolist(), ts.tolist())], dtype=bool)
        label[hit] = code
        if s != "train" and len(ex):
            np.minimum.at(first_eval, ex.users, ex.timestamps)
    label[(label < 0) & (ts < first_eval[u])] = 0
    out = pd.DataFrame({"user_id": u, "item_id": i, "timestamp": ts, "split": split_labels(label)})
    for c in log.columns:
        if c not in ("user", "item", "timestamp"):
            out[c] = log[c].to_numpy()
    return out


def load_recbole(prefix: str | Path, cfg: RecBoleConfig | None = None, *, name: str | None = None) -> SeqDataset:
    """Read DIR/NAME.{inter,item,user} and, when present, the benchmark files (see the module docstring)."""
    cfg = cfg or RecBoleConfig()
    prefix = Path(prefix)
    if prefix.is_dir():  # RecBole's own layout: DIR/NAME/NAME.inter
        prefix = prefix / prefix.name
    if prefix.suffix in (".inter", ".item", ".user"):
        prefix = prefix.with_suffix("")
    base = prefix.name
    folder = prefix.parent
    inter = folder / f"{base}.inter"
    bench = {s: folder / f"{base}.{s}.inter" for s in SPLITS}
    found = [s for s, p in bench.items() if p.is_file()]
    if found and len(found) < 3:
        missing = [str(bench[s]) for s in SPLITS if s not in found]
        raise SemrecError(f"{bench[found[0]]}: benchmark split files come in threes; missing {', '.join(missing)}")
    if not found and not inter.is_file():
        raise SemrecError(f"{inter}: no such file (a RecBole dataset DIR/NAME needs NAME.inter or "
                          "NAME.train.inter, NAME.valid.inter and NAME.test.inter)")
    items = user_table = None
    info: dict = {"format": "recbole", "source": {"prefix": base}, "recbole": {}}
    if (folder / f"{base}.item").is_file():
        items, info["recbole"]["item"] = _read_items(folder / f"{base}.item", cfg)
    if (folder / f"{base}.user").is_file():
        user_table, info["recbole"]["user"] = _read_users(folder / f"{base}.user", cfg)
    users = None if user_table is None else user_table["raw_id"].tolist()
    name = name or base
    if not found:
        ev = _read_events(inter, cfg)
        if items is None:
            items = _catalogue(None, ev["item"].tolist())
        ds = build_from_events(ev, items, cfg, name=name, events_source=str(inter),
                               items_source=str(folder / f"{base}.item"), info=info)
    elif _has_list_field(bench["train"], cfg):
        rows = {s: _read_row_file(bench[s], cfg) for s in SPLITS}
        ids = [x for s in SPLITS for h, t in zip(rows[s]["history"], rows[s]["target"]) for x in [*h, t]]
        ds = build_from_rows(rows, _catalogue(items, ids), name=name, sources={s: str(p) for s, p in bench.items()},
                             items_source=str(folder / f"{base}.item"), users=users, info=info)
        if inter.is_file():  # a full log as well: like an imported log, not a bare row release
            ds.interactions = _label_log(_read_events(inter, cfg), ds, inter)
            ds.protocol = "custom"
    else:
        parts = []
        for code, s in enumerate(SPLITS):
            ev = _read_events(bench[s], cfg)
            ev["split_code"], ev["source"], ev["line"] = code, str(bench[s]), np.arange(len(ev)) + 2
            parts.append(ev)
        ev = pd.concat(parts, ignore_index=True)
        split_of = ev.pop("split_code").to_numpy(np.int64)
        ds = build_from_split_events(ev, split_of, _catalogue(items, ev["item"].tolist()), name=name,
                                     items_source=str(folder / f"{base}.item"), users=users, info=info)
    if user_table is not None:
        extra = user_table.set_index("raw_id")
        feats = extra.reindex(ds.users["raw_id"].astype(str))
        for c in extra.columns:
            ds.users[c if c not in ("raw_id", "user_id") else f"{c}_orig"] = feats[c].tolist()
    ds.validate()
    return ds


# ------------------------------------------------------------------------------------------- export


def _field_type(values: list) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if vals and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in vals):
        return "float"
    return "token_seq" if any(isinstance(v, (list, tuple)) or " " in str(v) for v in vals) else "token"


def _cell(v, kind: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (list, tuple)):
        v = " ".join(str(x) for x in v)
    if kind == "float" and isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    return " ".join(str(v).split())  # tabs and newlines would break the file


def _write(path: Path, header: list[str], rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")


def _check_ids(ids: list[str], what: str) -> None:
    for x in ids:
        if not x or any(c.isspace() for c in x):
            raise SemrecError(f"cannot export to RecBole: {what} id {x!r} is empty or contains whitespace "
                              "(token_seq fields are space-separated)")


def export_recbole(ds: SeqDataset, prefix: str | Path, *, overwrite: bool = False) -> Path:
    """Write DIR/NAME.{item,user,inter,train.inter,valid.inter,test.inter}; DIR is written atomically."""
    prefix = Path(prefix)
    folder, base = prefix.parent, prefix.name
    if not base:
        raise SemrecError(f"{prefix}: give DIR/NAME (files are written as DIR/NAME.inter, ...)")
    item_ids = [str(x) for x in ds.items["raw_id"].tolist()]
    user_ids = [str(x) for x in ds.users["raw_id"].tolist()]
    _check_ids(item_ids, "item")
    _check_ids(user_ids, "user")
    meta = ds.info.get("recbole", {}) if isinstance(ds.info.get("recbole"), dict) else {}
    item_meta = meta.get("item") or {}
    known = item_meta.get("fields") or {}
    title_field = item_meta.get("title_field") or "title"
    cols = [c for c in ds.items.columns if c not in ("raw_id", "title")]
    names = {c: c.removesuffix("_orig") if c.endswith("_orig") else c for c in cols}
    types = {c: known.get(names[c]) or _field_type(ds.items[c].tolist()) for c in cols}
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        header = ["item_id:token", f"{title_field}:token_seq"] + [f"{names[c]}:{types[c]}" for c in cols]
        _write(tmp / f"{base}.item", header,
               ([i, _cell(t, "token_seq")] + [_cell(v, types[c]) for c, v in zip(cols, vals)]
                for i, t, *vals in zip(item_ids, ds.items["title"].tolist(), *(ds.items[c].tolist() for c in cols))))
        ucols = [c for c in ds.users.columns if c != "raw_id"]
        utypes = {c: _field_type(ds.users[c].tolist()) for c in ucols}
        _write(tmp / f"{base}.user", ["user_id:token"] + [f"{c.removesuffix('_orig')}:{utypes[c]}" for c in ucols],
               ([u] + [_cell(v, utypes[c]) for c, v in zip(ucols, vals)]
                for u, *vals in zip(user_ids, *(ds.users[c].tolist() for c in ucols))))
        if ds.interactions is not None:
            log = ds.interactions
            extra = [c for c in log.columns if c not in ("user_id", "item_id", "timestamp", "split")]
            etypes = {c: _field_type(log[c].tolist()) for c in extra}
            _write(tmp / f"{base}.inter",
                   ["user_id:token", "item_id:token", "timestamp:float"] + [f"{c}:{etypes[c]}" for c in extra],
                   ([user_ids[u], item_ids[i], str(t)] + [_cell(v, etypes[c]) for c, v in zip(extra, vals)]
                    for u, i, t, *vals in zip(log["user_id"].tolist(), log["item_id"].tolist(),
                                              log["timestamp"].tolist(), *(log[c].tolist() for c in extra))))
        timed = any(len(ds.splits[s]) and ds.splits[s].timestamps.max() >= 0 for s in SPLITS)
        header = ["user_id:token", "item_id_list:token_seq", "item_id:token"] + (["timestamp:float"] if timed else [])
        for s in SPLITS:
            ex = ds.splits[s]
            _write(tmp / f"{base}.{s}.inter", header,
                   ([user_ids[ex.users[e]], " ".join(item_ids[i] for i in ex.history(e)), item_ids[ex.targets[e]]]
                    + ([str(int(ex.timestamps[e]))] if timed else []) for e in range(len(ex))))
    return prefix
