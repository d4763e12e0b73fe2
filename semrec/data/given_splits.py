"""Event logs whose split the source already states (benchmark files) -> `SeqDataset`.

RecBole's `NAME.{train,valid,test}.inter` and the Amazon Reviews 2023 benchmark CSVs give every
interaction's split. Nothing is filtered or re-split: within a user, events are ordered by time, then
by input order; every valid and test event is an example whose history is all of that user's earlier
events (whatever their split), or the history the source gives for it; each user's train events give
one train example, their last one after the earlier ones (`Examples.expand_prefixes` yields the rest,
as with leave-one-out). An event with no earlier event gives no example. The interaction log keeps every
event with its given split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from semrec.data.dataset import SPLITS, Examples, SeqDataset
from semrec.data.splits import split_labels
from semrec.errors import SemrecError


def build_from_split_events(events: pd.DataFrame, split_of: np.ndarray, items: pd.DataFrame, *, name: str,
                            items_source: str, users: list[str] | None = None, info: dict | None = None,
                            histories: list[list[str] | None] | None = None,
                            protocol: str = "custom") -> SeqDataset:
    """events: columns user, item (raw ids), timestamp, source and line (where each came from) and any extra
    columns; split_of (E,) 0 train / 1 valid / 2 test. Item i is row i of `items`; users follow `users`,
    then first appearance. `histories` (E,): a valid/test event's history as given by the source (raw ids),
    or None to use the earlier events."""
    item_index = pd.Index(items["raw_id"].astype(str))
    item = item_index.get_indexer(events["item"])
    if (item < 0).any():
        r = int(np.flatnonzero(item < 0)[0])
        raise SemrecError(f"{events['source'].iloc[r]}: line {int(events['line'].iloc[r])}: item "
                          f"'{events['item'].iloc[r]}' is not in {items_source}")
    user_ids = {r: k for k, r in enumerate(users or [])}
    for x in events["user"].tolist():
        user_ids.setdefault(x, len(user_ids))
    user = np.array([user_ids[x] for x in events["user"].tolist()], dtype=np.int64)
    ts = events["timestamp"].to_numpy(np.int64)
    split_of = np.asarray(split_of, dtype=np.int64)
    order = np.lexsort((np.arange(len(events)), ts, user))  # within a user: time, then input order
    user, item, ts, split_sorted = user[order], item[order], ts[order], split_of[order]
    given = None if histories is None else [histories[k] for k in order]
    lists: dict[str, tuple[list, list, list, list]] = {s: ([], [], [], []) for s in SPLITS}
    bounds = np.r_[0, np.flatnonzero(np.diff(user)) + 1, len(user)] if len(user) else np.zeros(1, dtype=np.int64)
    for a, b in zip(bounds[:-1], bounds[1:]):
        train_pos = [k for k in range(a, b) if split_sorted[k] == 0]
        if len(train_pos) >= 2:
            _append(lists["train"], user[train_pos[-1]], item[train_pos[:-1]], item[train_pos[-1]], ts[train_pos[-1]])
        for k in range(a, b):
            if split_sorted[k] == 0:
                continue
            if given is not None and given[k] is not None:
                hist = item_index.get_indexer(given[k])
                if (hist < 0).any():
                    r = int(order[k])
                    bad = given[k][int(np.flatnonzero(hist < 0)[0])]
                    raise SemrecError(f"{events['source'].iloc[r]}: line {int(events['line'].iloc[r])}: history "
                                      f"item '{bad}' is not in {items_source}")
            else:
                hist = item[a:k]
            if len(hist):
                _append(lists[SPLITS[split_sorted[k]]], user[k], hist, item[k], ts[k])
    splits = {s: Examples.from_lists(u, h, t, np.asarray(x, dtype=np.int64)) for s, (u, h, t, x) in lists.items()}
    inter = pd.DataFrame({"user_id": user, "item_id": item, "timestamp": ts, "split": split_labels(split_sorted)})
    for c in events.columns:
        if c not in ("user", "item", "timestamp", "source", "line"):
            inter[c] = events[c].to_numpy()[order]
    user_table = pd.DataFrame({"raw_id": pd.Series(list(user_ids), dtype=object)})
    info = dict(info or {})
    info["split"] = {"scheme": "given", "examples": {s: len(splits[s]) for s in SPLITS},
                     "events": {s: int((split_of == k).sum()) for k, s in enumerate(SPLITS)}}
    ds = SeqDataset(name=name, items=items.reset_index(drop=True), splits=splits, users=user_table,
                    protocol=protocol, info=info, interactions=inter)
    ds.validate()
    return ds


def _append(lists: tuple[list, list, list, list], user, hist, target, ts) -> None:
    for lst, v in zip(lists, (user, hist, target, ts)):
        lst.append(v)
