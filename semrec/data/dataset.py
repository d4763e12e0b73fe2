"""The canonical dataset: an items table plus train/valid/test examples (history -> target).

Item ids are contiguous integers 0..N-1 (row i of `items` is item i); user ids are 0..U-1.
Models that need a padding index shift ids themselves. Every example is a user, a time-ordered
history of item ids (ragged, stored flat with offsets), a target item and a timestamp (-1 if unknown).

How each protocol fills the splits:
- protocol T (TCA4Rec release): one example per released row (history of exactly 10 + target).
- protocol P / leave-one-out: one example per user and split; test = (seq[:-1], seq[-1]),
  valid = (seq[:-2], seq[-2]), train = (seq[:-3], seq[-3]). `Examples.expand_prefixes` yields
  every (seq[:k], seq[k]) of the training sequences, as TIGER and SASRec train.

Datasets built from a full event log (protocol P, raw dumps, imports) also carry `interactions`:
one row per kept event, ordered by user then time, columns `user_id`, `item_id`, `timestamp` (-1 if
unknown), `split` ("train"/"valid"/"test": the split whose examples target the event, where with
leave-one-out every event before the valid target is "train"; "none" for events no example targets)
plus any extra columns kept (e.g. `rating`). It is the WHOLE log, valid and test
targets included: train only on the events the split allows. Protocol T has no full log (None).

On disk (`SeqDataset.save_pretrained(dir)`): `meta.json`, `items.parquet`, `users.parquet`
(raw user ids), `{train,valid,test}.npz` (no pickles) and `interactions.parquet` when present.
Written atomically. List-valued item fields (categories, attributes) load back as Python lists and
missing strings as None.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, read_json, write_json

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1


@dataclass
class Examples:
    """A split: E examples with ragged histories stored as `hist_items[hist_offsets[e]:hist_offsets[e+1]]`."""

    users: np.ndarray  # (E,) int64
    targets: np.ndarray  # (E,) int64
    hist_items: np.ndarray  # (sum of history lengths,) int64
    hist_offsets: np.ndarray  # (E+1,) int64
    timestamps: np.ndarray  # (E,) int64, -1 when unknown

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.targets = np.asarray(self.targets, dtype=np.int64)
        self.hist_items = np.asarray(self.hist_items, dtype=np.int64)
        self.hist_offsets = np.asarray(self.hist_offsets, dtype=np.int64)
        self.timestamps = np.asarray(self.timestamps, dtype=np.int64)
        e = len(self.targets)
        if not (len(self.users) == e == len(self.timestamps) and len(self.hist_offsets) == e + 1):
            raise SemrecError("examples: users, targets, timestamps and offsets disagree in length")
        if e and (self.hist_offsets[0] != 0 or self.hist_offsets[-1] != len(self.hist_items)
                  or np.any(np.diff(self.hist_offsets) < 0)):
            raise SemrecError("examples: history offsets are not a valid partition of the history items")

    @classmethod
    def from_lists(cls, users, histories: list, targets, timestamps=None) -> "Examples":
        """Build from Python lists of histories (each a sequence of item ids)."""
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        offsets = np.zeros(len(histories) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((i for h in histories for i in h), dtype=np.int64, count=int(offsets[-1]))
        ts = np.full(len(histories), -1, dtype=np.int64) if timestamps is None else timestamps
        return cls(users, targets, flat, offsets, ts)

    @classmethod
    def empty(cls) -> "Examples":
        return cls.from_lists([], [], [])

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def lengths(self) -> np.ndarray:
        """(E,) history lengths."""
        return np.diff(self.hist_offsets)

    def history(self, e: int) -> np.ndarray:
        return self.hist_items[self.hist_offsets[e]:self.hist_offsets[e + 1]]

    def histories(self) -> Iterator[np.ndarray]:
        for e in range(len(self)):
            yield self.history(e)

    def padded_histories(self, max_len: int, *, pad: int = -1, side: str = "left") -> np.ndarray:
        """(E, max_len) int64: the last `max_len` history items of each example, padded with `pad`.

        side='left' right-aligns histories (most recent item in the last column)."""
        if side not in ("left", "right"):
            raise ValueError("side must be 'left' or 'right'")
        e = len(self)
        out = np.full((e, max_len), pad, dtype=np.int64)
        if e == 0 or max_len == 0:
            return out
        lens = np.minimum(self.lengths, max_len)
        ends = self.hist_offsets[1:]
        # position k (0..max_len-1) of row r takes item ends[r] - lens[r] + k, when k < lens[r]
        k = np.arange(max_len)[None, :]
        valid = k < lens[:, None]
        src = (ends - lens)[:, None] + k
        cols = np.broadcast_to(k, (e, max_len)) if side == "right" else k + (max_len - lens)[:, None]
        rows = np.broadcast_to(np.arange(e)[:, None], (e, max_len))
        out[rows[valid], cols[valid]] = self.hist_items[src[valid]]
        return out

    def subset(self, index: np.ndarray) -> "Examples":
        """Examples at positions `index` (int array or boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return Examples.from_lists(self.users[index], [self.history(i) for i in index],
                                   self.targets[index], self.timestamps[index])

    def expand_prefixes(self, *, min_history: int = 1, max_history: int | None = None) -> "Examples":
        """Every (seq[:k], seq[k]) with k >= min_history of each example's sequence history + [target].

        Histories are capped to the last `max_history` items. Order: example by example, k ascending."""
        users, hists, targets = [], [], []
        for e in range(len(self)):
            seq = np.append(self.history(e), self.targets[e])
            for k in range(min_history, len(seq)):
                lo = 0 if max_history is None else max(0, k - max_history)
                users.append(self.users[e])
                hists.append(seq[lo:k])
                targets.append(seq[k])
        return Examples.from_lists(users, hists, targets)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class SeqDataset:
    """Items table + user table + the three splits. See the module docstring for conventions."""

    name: str
    items: pd.DataFrame  # index 0..N-1; columns: raw_id (str), title (str or None), other raw text fields
    splits: dict[str, Examples]
    users: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"raw_id": pd.Series([], dtype=str)}))
    protocol: str = "custom"  # "T", "P", or "custom"
    info: dict = field(default_factory=dict)  # provenance, preprocessing, counts of dropped rows, ...
    interactions: pd.DataFrame | None = None  # full event log (see module docstring), or None

    def __post_init__(self) -> None:
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise SemrecError(f"dataset {self.name}: missing split(s) {missing}")
        self.items = _plain_cells(self.items.copy())  # text cells: str or None; list cells: lists
        self.users = _plain_cells(self.users.copy())
        if self.interactions is not None:
            self.interactions = _plain_cells(self.interactions.reset_index(drop=True))
        if "title" not in self.items.columns:
            self.items["title"] = pd.Series([None] * len(self.items), index=self.items.index, dtype=object)
        if "raw_id" not in self.items.columns:
            self.items["raw_id"] = pd.Series([str(i) for i in range(len(self.items))], index=self.items.index,
                                             dtype=object)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def train(self) -> Examples:
        return self.splits["train"]

    @property
    def valid(self) -> Examples:
        return self.splits["valid"]

    @property
    def test(self) -> Examples:
        return self.splits["test"]

    @property
    def titles(self) -> list[str | None]:
        return [None if (t is None or (isinstance(t, float) and np.isnan(t))) else str(t)
                for t in self.items["title"].tolist()]

    def validate(self) -> None:
        """Check that every id in every split is in range; raise SemrecError naming the first problem."""
        n, u = self.num_items, self.num_users
        for s, ex in self.splits.items():
            for arr, what, hi in ((ex.targets, "target item", n), (ex.hist_items, "history item", n),
                                  (ex.users, "user", u)):
                if len(arr) and (arr.min() < 0 or arr.max() >= hi):
                    bad = arr[(arr < 0) | (arr >= hi)][0]
                    raise SemrecError(f"dataset {self.name}: {s} split has {what} id {bad} outside 0..{hi - 1}")
        if self.interactions is not None:
            for col, hi in (("user_id", u), ("item_id", n)):
                if col not in self.interactions.columns:
                    raise SemrecError(f"dataset {self.name}: interactions table has no column '{col}'")
                arr = self.interactions[col].to_numpy()
                if len(arr) and (arr.min() < 0 or arr.max() >= hi):
                    raise SemrecError(f"dataset {self.name}: interactions.{col} outside 0..{hi - 1}")

    def save_pretrained(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write the dataset directory atomically."""
        self.validate()
        with atomic_dir(out, overwrite=overwrite) as tmp:
            items = self.items.copy()
            items.insert(0, "item_id", np.arange(len(items), dtype=np.int64))
            items.to_parquet(tmp / "items.parquet", index=False)
            users = self.users.copy()
            users.insert(0, "user_id", np.arange(len(users), dtype=np.int64))
            users["raw_id"] = users["raw_id"].astype(str)
            users.to_parquet(tmp / "users.parquet", index=False)
            for s in SPLITS:
                np.savez(tmp / f"{s}.npz", **self.splits[s]._arrays())
            if self.interactions is not None:
                self.interactions.to_parquet(tmp / "interactions.parquet", index=False)
            write_json(tmp / "meta.json", {
                "format": "semrec-dataset", "format_version": FORMAT_VERSION, "name": self.name,
                "protocol": self.protocol, "num_items": self.num_items, "num_users": self.num_users,
                "split_sizes": {s: len(self.splits[s]) for s in SPLITS},
                "num_interactions": None if self.interactions is None else len(self.interactions),
                "info": self.info,
            })
        return Path(out)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "SeqDataset":
        """Load a dataset directory written by `save_pretrained`."""
        path = Path(path)
        if not path.is_dir():
            raise SemrecError(f"{path}: not a dataset directory (run 'semrec data prepare' or 'semrec data import')")
        meta = read_json(path / "meta.json")
        if meta.get("format") != "semrec-dataset":
            raise SemrecError(f"{path}/meta.json: not a semrec dataset")
        items, users = (_read_table(path / f"{t}.parquet") for t in ("items", "users"))
        if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
            raise SemrecError(f"{path}/items.parquet: item_id must be 0..N-1 in order")
        items = items.drop(columns=["item_id"])
        users = users.drop(columns=["user_id"])
        interactions = None
        if (path / "interactions.parquet").is_file():
            interactions = _read_table(path / "interactions.parquet")
            if len(interactions) != meta.get("num_interactions"):
                raise SemrecError(f"{path}: meta.json interaction count disagrees with interactions.parquet")
        splits = {}
        for s in SPLITS:
            f = path / f"{s}.npz"
            if not f.is_file():
                raise SemrecError(f"{f}: missing split file")
            try:
                with np.load(f, allow_pickle=False) as z:
                    splits[s] = Examples(**{k.name: z[k.name] for k in dataclasses.fields(Examples)})
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise SemrecError(f"{f}: corrupt or truncated split file ({type(e).__name__}: {e})") from None
        ds = cls(name=meta["name"], items=items, splits=splits, users=users,
                 protocol=meta.get("protocol", "custom"), info=meta.get("info", {}), interactions=interactions)
        if ds.num_items != meta.get("num_items") or ds.num_users != meta.get("num_users"):
            raise SemrecError(f"{path}: meta.json counts disagree with the tables (truncated or edited?)")
        ds.validate()
        return ds


def _read_table(f: Path) -> pd.DataFrame:
    if not f.is_file():
        raise SemrecError(f"{f}: no such file")
    try:
        return pd.read_parquet(f)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise SemrecError(f"{f}: corrupt or truncated parquet file ({e})") from None


def _plain_value(v):
    if isinstance(v, np.ndarray):
        return [_plain_value(x) for x in v.tolist()] if v.dtype == object else v.tolist()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _plain_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Undo parquet's reading conventions: list cells come back as lists (not arrays), missing text as None."""
    for c in df.columns:
        col = df[c]
        if col.dtype == object:
            if pd.api.types.infer_dtype(col, skipna=False) in ("string", "empty"):
                continue  # plain str cells already (fast path for long columns such as `split`)
            df[c] = pd.Series([_plain_value(v) for v in col.tolist()], index=df.index, dtype=object)
        elif pd.api.types.is_string_dtype(col.dtype):  # pandas' str dtype: NaN for missing
            df[c] = col.astype(object).where(col.notna(), None)
    return df


def load_dataset(path: str | Path) -> SeqDataset:
    """Load a dataset directory (alias of SeqDataset.from_pretrained)."""
    return SeqDataset.from_pretrained(path)
