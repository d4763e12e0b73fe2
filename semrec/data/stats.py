"""`semrec data stats`: the counts people check first (users, items, interactions, lengths, splits)."""

from __future__ import annotations

import numpy as np

from semrec.data.dataset import SPLITS, SeqDataset


def _distinct_events(ds: SeqDataset) -> int:
    """Distinct (user, item, position) events in the examples, position = index in history + [target]."""
    parts = []
    for ex in ds.splits.values():
        lens = ex.lengths
        users = np.concatenate([np.repeat(ex.users, lens), ex.users])
        items = np.concatenate([ex.hist_items, ex.targets])
        pos = np.concatenate([np.arange(len(ex.hist_items)) - np.repeat(ex.hist_offsets[:-1], lens), lens])
        parts.append(np.stack([users, items, pos], axis=1))
    allp = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    return int(len(np.unique(allp, axis=0)))


def dataset_stats(ds: SeqDataset) -> dict:
    """Counts as a plain dict (JSON-ready). How `interactions` is counted is said in `interactions_note`."""
    if ds.interactions is not None:
        n_inter = len(ds.interactions)
        note = "events in the dataset's interaction log"
        seq_lens = np.bincount(ds.interactions["user_id"].to_numpy(np.int64), minlength=ds.num_users)
        seq_lens = seq_lens[seq_lens > 0]
    elif ds.protocol == "T":
        n_inter = sum(len(ds.splits[s]) for s in SPLITS)
        note = ("protocol T: counts example rows (history + target); the release has no full "
                "interaction log")
        seq_lens = None
    else:
        n_inter = _distinct_events(ds)
        note = "distinct (user, item, position) events reconstructed from the examples"
        seq_lens = None
    titles = ds.titles
    out = {
        "name": ds.name,
        "protocol": ds.protocol,
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": int(n_inter),
        "interactions_note": note,
        "items_without_title": int(sum(1 for t in titles if not t)),
        "splits": {},
    }
    if seq_lens is not None and len(seq_lens):
        out["sequence_length"] = {"avg": round(float(seq_lens.mean()), 4), "max": int(seq_lens.max()),
                                  "min": int(seq_lens.min())}
    for s in SPLITS:
        ex = ds.splits[s]
        lens = ex.lengths
        out["splits"][s] = {
            "examples": len(ex),
            "users": int(len(np.unique(ex.users))),
            "avg_history": round(float(lens.mean()), 4) if len(ex) else 0.0,
            "max_history": int(lens.max()) if len(ex) else 0,
        }
        ts = ex.timestamps[ex.timestamps >= 0]
        if len(ts):
            out["splits"][s]["time_range"] = [int(ts.min()), int(ts.max())]
    return out


def format_stats(stats: dict) -> str:
    """Printable multi-line text of `dataset_stats`."""
    lines = [
        f"dataset      {stats['name']} (protocol {stats['protocol']})",
        f"users        {stats['users']:,}",
        f"items        {stats['items']:,}  ({stats['items_without_title']:,} without a title)",
        f"interactions {stats['interactions']:,}  [{stats['interactions_note']}]",
    ]
    if "sequence_length" in stats:
        sl = stats["sequence_length"]
        lines.append(f"sequences    avg length {sl['avg']:.2f}, max {sl['max']:,}, min {sl['min']:,}")
    lines.append("split        examples    users  avg hist  max hist")
    for s, d in stats["splits"].items():
        lines.append(f"{s:<12} {d['examples']:>8,} {d['users']:>8,} {d['avg_history']:>9.2f} {d['max_history']:>9,}")
    return "\n".join(lines)
