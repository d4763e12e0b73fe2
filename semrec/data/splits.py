"""k-core filtering and the two split schemes, on plain integer arrays (one implementation for every loader).

Sequences are given as CSR arrays: `ptr` (U+1,) offsets into `items`/`times` (E,), each user's events
in time order. Split functions return `(splits, event_split, ...)`: the three `Examples` and an (E,) int8
array naming, for every event, the split whose examples target it (0 train, 1 valid, 2 test, -1 none).
With leave-one-out, every event before the valid target is train (a target of `train.expand_prefixes()`).
"""

from __future__ import annotations

import numpy as np

from semrec.data.dataset import SPLITS, Examples
from semrec.errors import SemrecError

NO_SPLIT = -1


def split_labels(event_split: np.ndarray):
    """(E,) int8 split codes -> pandas object Series of "train"/"valid"/"test"/"none"."""
    import pandas as pd

    names = np.array(["none", *SPLITS], dtype=object)
    return pd.Series(names[np.asarray(event_split, dtype=np.int64) + 1], dtype=object)


def kcore_mask(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> tuple[np.ndarray, int]:
    """Events kept by iterated k-core filtering (every kept user has >= min_user kept events and every
    kept item >= min_item), iterated to a fixed point. users, items: (E,) non-negative int codes.
    Returns (mask (E,) bool, number of rounds)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep, 0
    nu = int(users.max()) + 1 if len(users) else 0
    ni = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        rounds += 1
        cu = np.bincount(users[keep], minlength=nu)
        ci = np.bincount(items[keep], minlength=ni)
        new = keep & (cu[users] >= min_user) & (ci[items] >= min_item)
        if np.array_equal(new, keep):
            return keep, rounds
        keep = new


def gather_ranges(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate values[starts[r]:ends[r]] for every r. Returns (flat, offsets (R+1,))."""
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.asarray(ends, dtype=np.int64) - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    total = int(offsets[-1])
    # index of element j of range r is starts[r] + (j - offsets[r])
    idx = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets[:-1], lens)
    return np.asarray(values)[idx], offsets


def _examples(users, target_idx, hist_start, items, times) -> Examples:
    flat, offsets = gather_ranges(items, hist_start, target_idx)
    return Examples(users, items[target_idx], flat, offsets, times[target_idx])


def _hist_start(ptr_user: np.ndarray, target_idx: np.ndarray, max_history: int | None) -> np.ndarray:
    return ptr_user if max_history is None else np.maximum(ptr_user, target_idx - max_history)


def leave_one_out(ptr: np.ndarray, items: np.ndarray, times: np.ndarray, *,
                  max_history: int | None = None) -> tuple[dict[str, Examples], np.ndarray]:
    """Leave-one-out: test = (seq[:-1], seq[-1]), valid = (seq[:-2], seq[-2]), train = (seq[:-3], seq[-3]),
    one example per user and split, users in id order. Histories keep the last `max_history` items.

    Users with fewer than 3 events get no example at all (their events are marked -1); the
    builders raise the user k-core threshold to 3 so that this does not happen to them."""
    ptr = np.asarray(ptr, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    n = np.diff(ptr)
    users = np.flatnonzero(n >= 3)
    event_split = np.full(len(items), NO_SPLIT, dtype=np.int8)
    splits = {}
    for code, (name, back) in enumerate(zip(SPLITS, (3, 2, 1))):
        tgt = ptr[users] + n[users] - back
        splits[name] = _examples(users, tgt, _hist_start(ptr[users], tgt, max_history), items, times)
        event_split[tgt] = code
    # the events before seq[-3] are train history: mark them train too (they are seen in training)
    pos = np.arange(len(items)) - np.repeat(ptr[:-1], n)
    early = (pos < np.repeat(n, n) - 3) & np.repeat(n >= 3, n)
    event_split[early] = 0
    return splits, event_split


def time_split(ptr: np.ndarray, items: np.ndarray, times: np.ndarray, *,
               ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), min_history: int = 1,
               max_history: int | None = None, subsample: tuple[int, int, int] | None = None,
               seed: int = 42) -> tuple[dict[str, Examples], np.ndarray, dict]:
    """TCA4Rec-style global chronological split of samples.

    Every event with at least `min_history` earlier events of its user is a sample (history = the
    user's earlier events, the last `max_history` of them). Samples are sorted by (target time, user,
    position) over all users and cut by `ratios`, so every train target time <= every valid target time
    <= every test target time. `subsample=(n_train, n_valid, n_test)` then draws that many rows of each
    split at random (seed), kept in time order (the release's 10k/5k/5k). Returns (splits, event_split, info)."""
    ptr = np.asarray(ptr, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or np.any(r < 0) or r.sum() <= 0:
        raise SemrecError(f"split ratios must be three non-negative numbers, got {list(ratios)}")
    n = np.diff(ptr)
    user_of = np.repeat(np.arange(len(n), dtype=np.int64), n)
    pos = np.arange(len(items), dtype=np.int64) - ptr[user_of]
    tgt = np.flatnonzero(pos >= min_history)
    order = np.lexsort((pos[tgt], user_of[tgt], times[tgt]))
    tgt = tgt[order]
    total = len(tgt)
    c = np.cumsum(r) / r.sum()
    b1, b2 = int(round(total * c[0])), int(round(total * c[1]))
    parts = [tgt[:b1], tgt[b1:b2], tgt[b2:]]
    info = {"samples": total, "samples_per_split": {s: len(p) for s, p in zip(SPLITS, parts)}}
    if subsample is not None:
        rng = np.random.default_rng(seed)
        for k, want in enumerate(subsample):
            if want is not None and 0 <= want < len(parts[k]):
                parts[k] = parts[k][np.sort(rng.choice(len(parts[k]), size=want, replace=False))]
        info["subsample"] = list(subsample)
        info["seed"] = seed
    event_split = np.full(len(items), NO_SPLIT, dtype=np.int8)
    splits = {}
    for code, (name, t) in enumerate(zip(SPLITS, parts)):
        u = user_of[t]
        splits[name] = _examples(u, t, _hist_start(ptr[u], t, max_history), items, times)
        event_split[t] = code
    return splits, event_split, info
