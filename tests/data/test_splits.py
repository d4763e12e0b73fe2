"""k-core and the two split schemes against naive Python references."""

import numpy as np
import pytest

from semrec.data.dataset import Examples
from semrec.data.splits import gather_ranges, kcore_mask, leave_one_out, time_split
from semrec.errors import SemrecError


def naive_kcore(users, items, mu, mi):
    keep = [True] * len(users)
    while True:
        cu, ci = {}, {}
        for k, (u, i) in enumerate(zip(users, items)):
            if keep[k]:
                cu[u] = cu.get(u, 0) + 1
                ci[i] = ci.get(i, 0) + 1
        new = [keep[k] and cu.get(u, 0) >= mu and ci.get(i, 0) >= mi for k, (u, i) in enumerate(zip(users, items))]
        if new == keep:
            return np.array(keep)
        keep = new


def random_sequences(rng, n_users=30, n_items=15, max_len=9, min_len=1):
    lens = rng.integers(min_len, max_len + 1, size=n_users)
    ptr = np.concatenate([[0], np.cumsum(lens)])
    items = rng.integers(0, n_items, size=ptr[-1])
    times = np.concatenate([np.sort(rng.integers(0, 50, size=n)) for n in lens])
    return ptr, items, times


def as_lists(ex: Examples):
    return [(int(u), [int(x) for x in ex.history(e)], int(t), int(ts))
            for e, (u, t, ts) in enumerate(zip(ex.users, ex.targets, ex.timestamps))]


@pytest.mark.parametrize("mu,mi", [(1, 1), (2, 3), (3, 2), (5, 5)])
def test_kcore_matches_naive_fixed_point(mu, mi):
    rng = np.random.default_rng(mu * 10 + mi)
    users = rng.integers(0, 40, size=400)
    items = rng.zipf(1.6, size=400) % 60
    mask, rounds = kcore_mask(users, items, mu, mi)
    np.testing.assert_array_equal(mask, naive_kcore(users.tolist(), items.tolist(), mu, mi))
    if mask.any():  # the result is a fixed point: every kept user/item meets its bound
        assert np.bincount(users[mask])[np.unique(users[mask])].min() >= mu
        assert np.bincount(items[mask])[np.unique(items[mask])].min() >= mi


def test_gather_ranges():
    vals = np.arange(100, 120)
    flat, off = gather_ranges(vals, np.array([0, 5, 5, 18]), np.array([3, 5, 9, 20]))
    assert flat.tolist() == [100, 101, 102, 105, 106, 107, 108, 118, 119]
    assert off.tolist() == [0, 3, 3, 7, 9]


@pytest.mark.parametrize("max_history", [None, 2])
def test_leave_one_out_matches_naive(max_history):
    rng = np.random.default_rng(0)
    ptr, items, times = random_sequences(rng)
    splits, event_split = leave_one_out(ptr, items, times, max_history=max_history)
    want = {"train": [], "valid": [], "test": []}
    for u in range(len(ptr) - 1):
        seq, ts = items[ptr[u]:ptr[u + 1]].tolist(), times[ptr[u]:ptr[u + 1]].tolist()
        if len(seq) < 3:
            assert (event_split[ptr[u]:ptr[u + 1]] == -1).all()
            continue
        for name, back in (("train", 3), ("valid", 2), ("test", 1)):
            k = len(seq) - back
            lo = 0 if max_history is None else max(0, k - max_history)
            want[name].append((u, seq[lo:k], seq[k], ts[k]))
        assert event_split[ptr[u]:ptr[u + 1]].tolist() == [0] * (len(seq) - 2) + [1, 2]
    for name in want:
        assert as_lists(splits[name]) == want[name]


@pytest.mark.parametrize("ratios,min_history,max_history", [((0.8, 0.1, 0.1), 1, None), ((0.5, 0.3, 0.2), 3, 2)])
def test_time_split_matches_naive_and_is_chronological(ratios, min_history, max_history):
    rng = np.random.default_rng(1)
    ptr, items, times = random_sequences(rng, n_users=40)
    splits, event_split, info = time_split(ptr, items, times, ratios=ratios, min_history=min_history,
                                           max_history=max_history)
    samples = []
    for u in range(len(ptr) - 1):
        seq, ts = items[ptr[u]:ptr[u + 1]].tolist(), times[ptr[u]:ptr[u + 1]].tolist()
        for k in range(min_history, len(seq)):
            lo = 0 if max_history is None else max(0, k - max_history)
            samples.append((ts[k], u, k, seq[lo:k], seq[k]))
    samples.sort(key=lambda s: (s[0], s[1], s[2]))
    n = len(samples)
    b1, b2 = round(n * ratios[0]), round(n * (ratios[0] + ratios[1]))
    for name, part in zip(("train", "valid", "test"), (samples[:b1], samples[b1:b2], samples[b2:])):
        assert as_lists(splits[name]) == [(u, h, t, ts) for ts, u, k, h, t in part]
    assert info["samples"] == n
    tr, va, te = (splits[s].timestamps for s in ("train", "valid", "test"))
    assert tr.max() <= va.min() and va.max() <= te.min()
    assert (event_split >= 0).sum() == n


def test_time_split_subsample_is_a_chronological_subset():
    rng = np.random.default_rng(2)
    ptr, items, times = random_sequences(rng, n_users=60)
    full, _, _ = time_split(ptr, items, times)
    sub, event_split, info = time_split(ptr, items, times, subsample=(20, 5, 1000), seed=3)
    assert [len(sub[s]) for s in ("train", "valid", "test")] == [20, 5, len(full["test"])]
    rows = {(u, t, ts) for u, t, ts in zip(full["train"].users, full["train"].targets, full["train"].timestamps)}
    assert {(u, t, ts) for u, t, ts in zip(sub["train"].users, sub["train"].targets, sub["train"].timestamps)} <= rows
    assert np.all(np.diff(sub["train"].timestamps) >= 0)
    assert (event_split == 0).sum() == 20


def test_time_split_rejects_bad_ratios():
    with pytest.raises(SemrecError, match="ratios"):
        time_split(np.array([0, 2]), np.array([0, 1]), np.array([0, 1]), ratios=(1.0, -0.1, 0.1))
