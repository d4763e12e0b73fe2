"""From an event log + an items table to a `SeqDataset`: the one pipeline behind raw Amazon dumps and
`semrec data import` (rating filter, time window, title cleaning, unknown/untitled items, duplicates,
k-core, id remapping, split). Every row dropped is counted in `info["dropped"]`.

Input contract: `events` has columns `user`, `item` (str raw ids), `timestamp` (int64 unix seconds)
and any extra columns (kept in `SeqDataset.interactions`); row order is the tie-break for equal
timestamps. `items` has a unique str column `raw_id`, a `title` column and any other text columns.
"""

from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from semrec.data.dataset import SeqDataset
from semrec.data.splits import kcore_mask, leave_one_out, split_labels, time_split
from semrec.errors import SemrecError

_WS = re.compile(r"\s+")


@dataclass
class PrepareConfig:
    """How an event log becomes a dataset (YAML keys = field names; see `semrec data import --help`)."""

    min_user_interactions: int = 0  # k-core: users need this many events (iterated with the item bound)
    min_item_interactions: int = 0
    min_rating: float | None = None  # keep events with rating >= this (needs the rating column)
    rating_col: str = "rating"
    window_months: int | None = None  # keep only the last N months before the newest event
    drop_duplicates: bool = True  # identical (user, item, timestamp) events count once
    unknown_items: Literal["error", "drop", "keep"] = "error"  # events whose item is not in the items table
    drop_untitled: bool = False  # drop items (and their events) without a title
    title_html_unescape: bool = True  # titles: &amp; -> &, then whitespace collapsed
    title_ascii_only: bool = False  # drop items whose title has non-ASCII characters (TCA4Rec does)
    title_max_len: int | None = None  # truncate titles to this many characters
    split: Literal["loo", "time"] = "loo"  # leave-one-out, or global chronological split of samples
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # time split: train/valid/test
    min_history: int = 1  # time split: a sample needs this many earlier events
    max_history: int | None = None  # keep the last N items of each stored history (None: all)
    subsample: list[int] | None = None  # time split: draw [n_train, n_valid, n_test] rows at random
    seed: int = 42

    def __post_init__(self) -> None:
        for k in ("min_user_interactions", "min_item_interactions", "min_history", "seed"):
            if getattr(self, k) < 0:
                raise SemrecError(f"{k} must be >= 0, got {getattr(self, k)}")
        for k in ("window_months", "max_history", "title_max_len"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise SemrecError(f"{k} must be >= 1 (or null), got {v}")
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or sum(self.ratios) <= 0:
            raise SemrecError(f"ratios must be three non-negative numbers (train valid test), got {self.ratios}")
        if self.subsample is not None and (len(self.subsample) != 3 or any(n < 0 for n in self.subsample)):
            raise SemrecError(f"subsample must be three non-negative row counts, got {self.subsample}")

    def effective_min_user(self) -> int:
        """The user threshold actually applied: leave-one-out needs 3 events per user, so it is raised to 3.

        A time split keeps the bound as given (as TCA4Rec does): users with <= min_history events give
        no sample but still count in the k-core."""
        return max(self.min_user_interactions, 3) if self.split == "loo" else self.min_user_interactions


def clean_title(title, *, html_unescape: bool = True, max_len: int | None = None) -> str | None:
    """HTML-unescape, collapse whitespace, truncate; None for missing or empty titles."""
    if title is None or (isinstance(title, float) and np.isnan(title)):
        return None
    t = str(title)
    if html_unescape:
        t = html.unescape(t)
    t = _WS.sub(" ", t).strip()
    if max_len is not None:
        t = t[:max_len].rstrip()
    return t or None


def _check_left(n: int, stage: str, name: str) -> None:
    if n == 0:
        raise SemrecError(f"{name}: no interactions left after {stage}")


def build_from_events(events: pd.DataFrame, items: pd.DataFrame, cfg: PrepareConfig, *, name: str,
                      events_source: str = "interactions", items_source: str = "items",
                      protocol: str = "custom", info: dict | None = None) -> SeqDataset:
    """Filter, remap and split an event log (see the module docstring for the input contract)."""
    info = dict(info or {})
    dropped: dict[str, int] = {}
    if len(events) == 0:
        raise SemrecError(f"{events_source}: no interactions")
    ev = events.reset_index(drop=True)
    n_read = len(ev)

    if cfg.min_rating is not None:
        if cfg.rating_col not in ev.columns:
            raise SemrecError(f"{events_source}: no rating column '{cfg.rating_col}' to apply min_rating to")
        keep = pd.to_numeric(ev[cfg.rating_col], errors="coerce").to_numpy() >= cfg.min_rating
        dropped["rating_below_min"] = int((~keep).sum())
        ev = ev[keep]
        _check_left(len(ev), f"the rating filter (rating >= {cfg.min_rating})", events_source)

    ts = ev["timestamp"].to_numpy(dtype=np.int64)
    if cfg.window_months is not None:
        newest = pd.Timestamp(int(ts.max()), unit="s")
        cutoff = int((newest - pd.DateOffset(months=cfg.window_months)).timestamp())
        keep = ts >= cutoff
        dropped["outside_time_window"] = int((~keep).sum())
        ev = ev[keep]
        info["time_window"] = {"months": cfg.window_months, "from": cutoff, "to": int(ts.max())}

    # items: clean titles, then decide which items are usable
    items = items.reset_index(drop=True).copy()
    items["raw_id"] = items["raw_id"].astype(str)
    items["title"] = pd.Series([clean_title(t, html_unescape=cfg.title_html_unescape, max_len=cfg.title_max_len)
                                for t in items["title"].tolist()], index=items.index, dtype=object)
    known = ev["item"].isin(items["raw_id"]).to_numpy()
    n_unknown = int((~known).sum())
    if n_unknown:
        unknown_ids = pd.unique(ev["item"].to_numpy()[~known])
        if cfg.unknown_items == "error":
            raise SemrecError(
                f"{events_source}: {len(unknown_ids)} item id(s) ({n_unknown} interactions) are not in "
                f"{items_source}, e.g. '{unknown_ids[0]}' (pass --drop-unknown-items to drop them)")
        if cfg.unknown_items == "drop":
            dropped["unknown_item_interactions"] = n_unknown
            dropped["unknown_items"] = len(unknown_ids)
            ev = ev[known]
            _check_left(len(ev), f"dropping items absent from {items_source}", events_source)
        else:
            info["items_added_without_metadata"] = len(unknown_ids)
            items = pd.concat([items, pd.DataFrame({"raw_id": unknown_ids.astype(str), "title": None})],
                              ignore_index=True)
    bad_items = pd.Series(False, index=items.index)
    if cfg.title_ascii_only:
        non_ascii = items["title"].map(lambda t: t is not None and not t.isascii())
        dropped["non_ascii_title_items"] = int(non_ascii.sum())
        bad_items |= non_ascii
    if cfg.drop_untitled:
        untitled = items["title"].isna() & ~bad_items
        dropped["untitled_items"] = int(untitled.sum())
        bad_items |= untitled
    if bad_items.any():
        keep = ~ev["item"].isin(items.loc[bad_items, "raw_id"]).to_numpy()
        dropped["title_filter_interactions"] = int((~keep).sum())
        ev = ev[keep]
        items = items[~bad_items]
        _check_left(len(ev), "the title filters", events_source)

    if cfg.drop_duplicates:
        dup = ev.duplicated(subset=["user", "item", "timestamp"]).to_numpy()
        dropped["duplicate_interactions"] = int(dup.sum())
        ev = ev[~dup]

    # k-core on integer codes, to a fixed point
    ucode, _ = pd.factorize(ev["user"])
    icode, _ = pd.factorize(ev["item"])
    min_user = cfg.effective_min_user()
    keep, rounds = kcore_mask(ucode, icode, min_user, cfg.min_item_interactions)
    dropped["kcore_interactions"] = int((~keep).sum())
    info["kcore"] = {"min_user": min_user, "min_item": cfg.min_item_interactions, "rounds": rounds}
    ev = ev[keep]
    _check_left(len(ev), f"k-core filtering (users >= {min_user}, items >= {cfg.min_item_interactions} "
                f"interactions; {int(len(keep))} before it)", events_source)

    # ids by first appearance in global time order (ties: file order); sequences by (user, time, file order)
    ev = ev.reset_index(drop=True)
    ts = ev["timestamp"].to_numpy(dtype=np.int64)
    chrono = np.argsort(ts, kind="stable")
    user_raw, user_codes = _first_appearance_codes(ev["user"].to_numpy()[chrono])
    item_raw, item_codes = _first_appearance_codes(ev["item"].to_numpy()[chrono])
    u = np.empty(len(ev), dtype=np.int64)
    i = np.empty(len(ev), dtype=np.int64)
    u[chrono], i[chrono] = user_codes, item_codes
    order = np.lexsort((np.arange(len(ev)), ts, u))
    u, i, ts = u[order], i[order], ts[order]
    ptr = np.zeros(len(user_raw) + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=len(user_raw)), out=ptr[1:])

    split_info: dict = {"scheme": cfg.split, "max_history": cfg.max_history}
    if cfg.split == "loo":
        splits, event_split = leave_one_out(ptr, i, ts, max_history=cfg.max_history)
    else:
        splits, event_split, extra = time_split(
            ptr, i, ts, ratios=tuple(cfg.ratios), min_history=cfg.min_history, max_history=cfg.max_history,
            subsample=None if cfg.subsample is None else tuple(cfg.subsample), seed=cfg.seed)
        split_info.update(ratios=list(cfg.ratios), min_history=cfg.min_history, **extra)

    pos = pd.Index(items["raw_id"]).get_indexer(item_raw)
    info["items_without_interactions"] = int(len(items) - len(item_raw))
    out_items = items.iloc[pos].reset_index(drop=True)
    users = pd.DataFrame({"raw_id": pd.Series(user_raw.astype(str), dtype=object)})
    extras = [c for c in ev.columns if c not in ("user", "item", "timestamp")]
    inter = pd.DataFrame({"user_id": u, "item_id": i, "timestamp": ts,
                          "split": split_labels(event_split)})
    for c in extras:
        inter[c] = ev[c].to_numpy()[order]
    info.update({
        "interactions_read": n_read, "dropped": dropped, "num_interactions": int(len(inter)),
        "split": split_info, "config": asdict(cfg),
    })
    ds = SeqDataset(name=name, items=out_items, splits=splits, users=users, protocol=protocol, info=info,
                    interactions=inter)
    ds.validate()
    return ds


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uniques in order of first appearance, code of each value)."""
    codes, uniques = pd.factorize(values)
    return np.asarray(uniques, dtype=object), codes.astype(np.int64)
