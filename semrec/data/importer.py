"""`semrec data import`: a user's own interactions + items files -> `SeqDataset`.

Interactions: CSV / TSV (optionally .gz) or Parquet with user, item and timestamp columns (names set by
`user_col`, `item_col`, `time_col`); timestamps are unix seconds (numbers) or dates/datetimes (read as
UTC). Other columns are kept in `SeqDataset.interactions` (all of them, or `keep_cols`), and a rating
column can filter events (`min_rating`, `rating_col`). Items: CSV / TSV / JSONL / Parquet with an id
column (`items_id_col`) and a title column (`title_col`); other columns are kept as raw text fields
(all, or `text_cols`). Each text file's separator is sniffed from its header line (tab, comma, semicolon,
pipe or `::`), whatever its extension (`.inter`, `.item`, `.dat` ...); `sep` / `items_sep` override it
for the interactions / items file. Raw ids are compared as strings; they are remapped to 0..N-1 / 0..U-1 and kept
in `items.raw_id` / `users.raw_id`. Filtering and splitting: `semrec.data.events.PrepareConfig`.
By default, an item referenced by the interactions but absent from the items file is an error;
`unknown_items: drop` drops those interactions and reports the count.
"""

from __future__ import annotations

import difflib
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from semrec.data.dataset import SeqDataset
from semrec.data.events import PrepareConfig, build_from_events
from semrec.errors import SemrecError

RESERVED_EVENT_COLS = {"user", "item", "timestamp", "user_id", "item_id", "split"}
RESERVED_ITEM_COLS = {"raw_id", "title", "item_id"}


@dataclass
class ImportConfig(PrepareConfig):
    """Column names and formats of the user's files, plus the filtering/splitting options."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    sep: str | None = None  # interactions separator; None: sniffed from the header line
    items_sep: str | None = None  # items separator; None: sniffed from the header line
    keep_cols: list[str] | None = None  # extra interaction columns to keep (None: all)
    items_id_col: str = "item_id"
    title_col: str = "title"
    text_cols: list[str] | None = None  # extra item columns to keep (None: all)


def _suffixes(path: Path) -> list[str]:
    s = [x.lower() for x in path.suffixes]
    return s[:-1] if s and s[-1] in (".gz", ".bz2", ".zip", ".xz") else s


def _kind(path: Path) -> str:
    s = _suffixes(path)
    last = s[-1] if s else ""
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if last in (".tsv", ".tab"):
        return "tsv"
    return "csv"


SEPARATORS = ("\t", ",", ";", "|", "::")


def _open_text(path: Path):
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    return opener(path, "rt", encoding="utf-8", errors="replace")


def sniff_separator(path: str | Path) -> str:
    """The separator of a delimited text file, from its first non-blank line: the candidate (tab, comma,
    semicolon, pipe, '::') occurring most often there; tab for .tsv/.tab and comma otherwise if none does."""
    path = Path(path)
    first = ""
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    first = line
                    break
    except (OSError, EOFError) as e:
        raise SemrecError(f"{path}: cannot read ({e})") from None
    counts = {c: first.count(c) for c in SEPARATORS}
    best = max(SEPARATORS, key=lambda c: counts[c])  # ties: the earlier candidate
    if counts[best]:
        return best
    return "\t" if _kind(path) == "tsv" else ","


def row_where(kind: str, row: int) -> str:
    """Human position of 0-based data row `row`: CSV line (header = line 1) or Parquet row."""
    return f"row {row + 1}" if kind == "parquet" else f"line {row + 2}"


def read_table(path: Path, sep: str | None, str_cols: list[str]) -> tuple[pd.DataFrame, str]:
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    kind = _kind(path)
    if kind == "parquet":
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise SemrecError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]})") from None
        if len(df.columns) == 0:
            raise SemrecError(f"{path}: empty file")
        return df, kind
    if kind == "jsonl":
        return _read_jsonl(path), kind
    sep = sep if sep is not None else sniff_separator(path)
    try:
        df = pd.read_csv(path, sep=sep, dtype={c: str for c in str_cols}, keep_default_na=False,
                         na_values=[""], skip_blank_lines=False, engine="python" if len(sep) > 1 else "c")
    except pd.errors.EmptyDataError:
        raise SemrecError(f"{path}: empty file") from None
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            raise SemrecError(f"{path}: line {m.group(2)}: expected {m.group(1)} fields, saw {m.group(3)} "
                              f"(separator {sep!r})") from None
        raise SemrecError(f"{path}: cannot parse ({str(e).strip().splitlines()[-1]})") from None
    except UnicodeDecodeError as e:
        raise SemrecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError) as e:
        raise SemrecError(f"{path}: cannot read ({e})") from None
    return df.dropna(how="all"), kind  # blank lines; the index keeps the line numbers


def _read_jsonl(path: Path) -> pd.DataFrame:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    rows, index = [], []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SemrecError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise SemrecError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
                rows.append(obj)
                index.append(lineno - 2)  # so that row_where(...) gives back `lineno`
    except UnicodeDecodeError as e:
        raise SemrecError(f"{path}: not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError) as e:
        raise SemrecError(f"{path}: cannot read ({e})") from None
    if not rows:
        raise SemrecError(f"{path}: empty file")
    return pd.DataFrame(rows, index=index)


def require_column(df: pd.DataFrame, col: str, path: Path, flag: str) -> None:
    if col not in df.columns:
        cols = [str(c) for c in df.columns]
        close = difflib.get_close_matches(col, cols, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SemrecError(f"{path}: no column '{col}'{hint} (columns: {', '.join(cols)}; set {flag})")


def _no_missing(df: pd.DataFrame, col: str, path: Path, kind: str) -> None:
    na = df[col].isna().to_numpy()
    if na.any():
        raise SemrecError(f"{path}: {row_where(kind, int(df.index[np.flatnonzero(na)[0]]))}: "
                          f"empty value in column '{col}'")


def _as_id(series: pd.Series) -> pd.Series:
    """Raw ids as str; integral floats (Parquet/JSON numbers) without a trailing '.0'."""
    def one(v):
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    return pd.Series([one(v) for v in series.tolist()], index=series.index, dtype=object)


def _timestamps(col: pd.Series, path: Path, kind: str, name: str) -> np.ndarray:
    """Unix seconds (int64) from numbers, datetimes or date strings; the first bad row is an error."""
    if pd.api.types.is_datetime64_any_dtype(col):
        dt = pd.to_datetime(col, utc=True)
        return ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    num = pd.to_numeric(col, errors="coerce")
    if not num.isna().any():
        return np.floor(num.to_numpy(np.float64)).astype(np.int64)
    dt = pd.to_datetime(col.astype(str), errors="coerce", utc=True, format="mixed")
    bad = (num.isna() if num.isna().sum() < dt.isna().sum() else dt.isna()).to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise SemrecError(f"{path}: {row_where(kind, int(col.index[r]))}: cannot read timestamp "
                          f"{col.iloc[r]!r} in column '{name}' (unix seconds or a date)")
    return ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _rename_reserved(df: pd.DataFrame, reserved: set[str]) -> pd.DataFrame:
    return df.rename(columns={c: f"{c}_orig" for c in df.columns if c in reserved})


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns pyarrow cannot store as they are (mixed str/list/number cells) become JSON text."""
    import pyarrow as pa

    for c in df.columns:
        if df[c].dtype != object:
            continue
        try:
            pa.array(df[c].tolist(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            df[c] = [None if v is None or (isinstance(v, float) and np.isnan(v))
                     else v if isinstance(v, str) else json.dumps(v) for v in df[c].tolist()]
    return df


def read_interactions(path: str | Path, cfg: ImportConfig | None = None) -> pd.DataFrame:
    """Interactions file -> events DataFrame (user, item, timestamp, kept extra columns)."""
    cfg = cfg or ImportConfig()
    path = Path(path)
    df, kind = read_table(path, cfg.sep, [cfg.user_col, cfg.item_col])
    if len(df) == 0:
        raise SemrecError(f"{path}: no rows (only a header)")
    for col, flag in ((cfg.user_col, "--user-col"), (cfg.item_col, "--item-col"), (cfg.time_col, "--time-col")):
        require_column(df, col, path, flag)
        _no_missing(df, col, path, kind)
    if cfg.min_rating is not None:
        require_column(df, cfg.rating_col, path, "--rating-col")
        num = pd.to_numeric(df[cfg.rating_col], errors="coerce")
        bad = (num.isna() & df[cfg.rating_col].notna()).to_numpy()
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise SemrecError(f"{path}: {row_where(kind, int(df.index[r]))}: rating "
                              f"{df[cfg.rating_col].iloc[r]!r} in column '{cfg.rating_col}' is not a number")
        df[cfg.rating_col] = num
    key = {cfg.user_col, cfg.item_col, cfg.time_col}
    extras = [c for c in df.columns if c not in key]
    if cfg.keep_cols is not None:
        for c in cfg.keep_cols:
            require_column(df, c, path, "--keep-cols")
        extras = [c for c in extras if c in cfg.keep_cols or (cfg.min_rating is not None and c == cfg.rating_col)]
    out = pd.DataFrame({
        "user": _as_id(df[cfg.user_col]),
        "item": _as_id(df[cfg.item_col]),
        "timestamp": _timestamps(df[cfg.time_col], path, kind, cfg.time_col),
    }, index=df.index)
    ext = _rename_reserved(df[extras], RESERVED_EVENT_COLS)
    return pd.concat([out, ext], axis=1).reset_index(drop=True)


def read_items(path: str | Path, cfg: ImportConfig | None = None) -> pd.DataFrame:
    """Items file -> items table (raw_id, title, kept text columns); duplicate ids are an error."""
    cfg = cfg or ImportConfig()
    path = Path(path)
    df, kind = read_table(path, cfg.items_sep, [cfg.items_id_col])
    if len(df) == 0:
        raise SemrecError(f"{path}: no rows (only a header)")
    require_column(df, cfg.items_id_col, path, "--items-id-col")
    require_column(df, cfg.title_col, path, "--title-col")
    _no_missing(df, cfg.items_id_col, path, kind)
    ids = _as_id(df[cfg.items_id_col])
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids[dup].iloc[0]
        rows = [int(r) for r in ids.index[(ids == first).to_numpy()]]
        n_dup = int(ids.duplicated().sum())
        raise SemrecError(f"{path}: duplicate item id '{first}' ({row_where(kind, rows[0])} and "
                          f"{row_where(kind, rows[1])}; {n_dup} duplicate row(s) in all)")
    extras = [c for c in df.columns if c not in (cfg.items_id_col, cfg.title_col)]
    if cfg.text_cols is not None:
        for c in cfg.text_cols:
            require_column(df, c, path, "--text-cols")
        extras = [c for c in extras if c in cfg.text_cols]
    title = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
             for v in df[cfg.title_col].tolist()]
    out = pd.DataFrame({"raw_id": ids.tolist(), "title": title}, dtype=object)
    ext = _rename_reserved(df[extras].reset_index(drop=True), RESERVED_ITEM_COLS)
    for c in ext.columns:
        col = ext[c]
        out[c] = col.astype(object).where(col.notna(), None) if col.dtype != object else col
    return _arrow_safe(out)


def import_dataset(interactions: str | Path, items: str | Path, cfg: ImportConfig | None = None, *,
                   name: str | None = None) -> SeqDataset:
    """Read, check, filter, remap and split a user's interactions + items files."""
    cfg = cfg or ImportConfig()
    interactions, items = Path(interactions), Path(items)
    events = read_interactions(interactions, cfg)
    item_table = read_items(items, cfg)
    info = {"source": {"interactions": interactions.name, "items": items.name}}
    ds = build_from_events(events, item_table, cfg, name=name or interactions.name.split(".")[0],
                           events_source=str(interactions), items_source=str(items), info=info)
    return ds
