"""Which interactions a CF teacher trains on, and how they are cut into fixed-length windows.

Training sequences are built ONLY from the `train` split (plus the `valid` split when
`include_valid=True`, which is meant for a final test-time teacher trained for a fixed number of
epochs, without model selection). The `test` split is never read. Each example contributes the
sequence `history + [target]`, and every item of it after the first becomes a training target
(SASRec/GRU4Rec: predicted from the items before it; BERT4Rec: masked and predicted from both sides).

- Protocol P (leave-one-out): a user's train example is (seq[:-3], seq[-3]), so the teacher trains on
  seq[:-2]: every item except the valid target seq[-2] and the test target seq[-1]. With
  `include_valid`, the valid example (seq[:-2], seq[-2]) replaces it (seq[:-1]; still not seq[-1]).
- Protocol T (TCA4Rec release): each of the 10,000 `train_10000` rows is a sequence of 11 items
  (history of 10 + target) and yields 10 targets. Targets are split globally by time, so train
  rows (histories included) end before every valid and test target. The histories of valid and test
  rows are NOT used while selecting on validation: a user's later valid/test rows have histories that
  contain that user's earlier valid/test targets. With `include_valid`, the 5,000 `valid_5000` rows
  (history + target) are added; test histories are never used (they hold other test targets).

Within one user, a sequence contained in another of that user's sequences is dropped (the P train
sequence is a prefix of the P valid sequence; some T rows are duplicated), and sequences that overlap
by at least 5 items (T rows of one user are often sliding windows over the same history: shifted by
1..10 positions) are chained into one. So each interaction of the used rows is a training target once,
not once per overlapping row. Sequences longer than a window are cut into several windows so that
every target position is used exactly once.
"""

from __future__ import annotations

import numpy as np

from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError


def split_sequences(examples: Examples) -> tuple[list[np.ndarray], np.ndarray]:
    """(sequences history + [target] of each example, their users)."""
    seqs = [np.append(examples.history(e), examples.targets[e]) for e in range(len(examples))]
    return seqs, examples.users.copy()


def _overlap(a: np.ndarray, b: np.ndarray, min_overlap: int) -> int:
    """Largest k >= min_overlap with a[-k:] == b[:k] (k < len(a), k < len(b)); 0 if none."""
    for k in range(min(len(a), len(b)) - 1, min_overlap - 1, -1):
        if np.array_equal(a[len(a) - k:], b[:k]):
            return k
    return 0


def _contains(big: np.ndarray, small: np.ndarray) -> bool:
    """Whether `small` occurs in `big` as a contiguous run."""
    n, m = len(big), len(small)
    if m > n:
        return False
    if m == 0:
        return True
    windows = np.lib.stride_tricks.sliding_window_view(big, m)
    return bool((windows == small).all(1).any())


def merge_user_sequences(seqs: list[np.ndarray], users: np.ndarray, *, min_overlap: int = 5
                         ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per user, drop sequences contained in another one and chain sequences that overlap.

    A sequence that occurs as a contiguous run inside another of the same user adds nothing (the
    protocol-P train sequence is a prefix of the valid one; duplicated rows). Two sequences where the
    last k >= min_overlap items of one are the first k of the other are sliding windows over the same
    user history (protocol-T rows of one user often are), and are joined into one, so every
    interaction is a training target once instead of once per overlapping row.
    Output: one list per user in order of first appearance; users (S,) aligned with it.
    """
    by_user: dict[int, list[np.ndarray]] = {}
    for s, u in zip(seqs, users.tolist()):
        by_user.setdefault(u, []).append(np.asarray(s))
    out_seqs: list[np.ndarray] = []
    out_users: list[int] = []
    for u, group in by_user.items():
        group = sorted(group, key=len, reverse=True)
        kept: list[np.ndarray] = []
        for s in group:
            if not any(_contains(k, s) for k in kept):
                kept.append(s)
        merged = True
        while merged and len(kept) > 1:
            merged = False
            for i in range(len(kept)):
                for j in range(len(kept)):
                    if i != j and (k := _overlap(kept[i], kept[j], min_overlap)):
                        joined = np.concatenate([kept[i], kept[j][k:]])
                        kept = [x for t, x in enumerate(kept) if t not in (i, j)] + [joined]
                        merged = True
                        break
                if merged:
                    break
        out_seqs += kept
        out_users += [u] * len(kept)
    return out_seqs, np.asarray(out_users, dtype=np.int64)


def training_sequences(dataset: SeqDataset, *, include_valid: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """The sequences a teacher trains on (see the module docstring) and their users."""
    seqs, users = split_sequences(dataset.train)
    if include_valid:
        vs, vu = split_sequences(dataset.valid)
        seqs, users = seqs + vs, np.concatenate([users, vu])
    seqs, users = merge_user_sequences(seqs, users)
    if not seqs:
        raise SemrecError(f"dataset {dataset.name}: the train split is empty; nothing to train the teacher on")
    return seqs, users


def make_windows(seqs: list[np.ndarray], window_len: int, overlap: int) -> np.ndarray:
    """(W, window_len) int64 windows, left-padded with -1, covering each sequence.

    Windows are taken from the end of each sequence backwards with stride window_len - overlap.
    With overlap = 1 (next-item models: targets are window[1:]) and overlap = 0 (cloze models: every
    item is a target) each target position of a sequence falls in exactly one window.
    Sequences too short to hold a target (fewer than overlap + 1 items) are skipped.
    """
    if window_len < 2 or not 0 <= overlap < window_len:
        raise ValueError("need window_len >= 2 and 0 <= overlap < window_len")
    stride = window_len - overlap
    rows: list[np.ndarray] = []
    for s in seqs:
        end = len(s)
        while end > overlap:
            rows.append(s[max(0, end - window_len):end])
            end -= stride
    out = np.full((len(rows), window_len), -1, dtype=np.int64)
    for r, w in enumerate(rows):
        out[r, window_len - len(w):] = w
    return out


def window_lengths(windows: np.ndarray) -> np.ndarray:
    """(W,) number of real (non-padding) items of each left-padded window."""
    return (windows >= 0).sum(1)
