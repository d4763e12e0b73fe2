"""benchmarks/coverage_levels.py's list figures against naive per-item / per-row references."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import coverage_levels as cl  # noqa: E402  (a script of benchmarks/, not a package)


def _naive_percentile(level1: np.ndarray, pop: np.ndarray) -> np.ndarray:
    out = np.zeros(len(level1))
    for i in range(len(level1)):
        peers = [j for j in range(len(level1)) if level1[j] == level1[i]]
        ranked = sorted(peers, key=lambda j: (-pop[j], j))
        out[i] = ranked.index(i) / max(len(peers) - 1, 1)
    return out


def test_in_cluster_percentile_matches_naive():
    rng = np.random.default_rng(0)
    level1 = rng.integers(0, 7, 60)
    level1[0] = 9  # an item alone in its code (8 unused)
    pop = rng.integers(0, 5, 60).astype(float)  # ties broken by id
    got = cl.in_cluster_percentile(level1, pop)
    np.testing.assert_allclose(got, _naive_percentile(level1, pop))
    assert got[0] == 0.0 and got.min() == 0.0 and got.max() == 1.0


def test_level_figures_match_naive():
    rng = np.random.default_rng(1)
    n, e = 40, 25
    level1 = rng.integers(0, 6, n)
    pop = rng.integers(0, 9, n).astype(float)
    lists = torch.stack([torch.randperm(n)[:10] for _ in range(e)])
    lists[3, 7:] = -1  # empty slots
    targets = rng.integers(0, n, e)
    targets[:5] = lists[:5, 2].numpy()  # some hits
    pct = cl.in_cluster_percentile(level1, pop)
    got = cl.level_figures(lists, targets, level1, pct, pop)
    rows = [[i for i in r.tolist() if i >= 0] for r in lists]
    l1_hits = [level1[t] in {level1[i] for i in r} for r, t in zip(rows, targets)]
    hits = [t in r for r, t in zip(rows, targets)]
    assert got["hr@10"] == np.mean(hits)
    assert got["l1_hr@10"] == np.mean(l1_hits)
    assert np.isclose(got["hr_given_l1"], np.mean(hits) / np.mean(l1_hits))
    assert got["l1_coverage"] == len({level1[i] for r in rows for i in r}) / len(set(level1))
    assert np.isclose(got["l1_per_list"], np.mean([len({level1[i] for i in r}) for r in rows]))
    assert np.isclose(got["in_cluster_pct"], np.mean([pct[i] for r in rows for i in r]))
    assert got["coverage@10"] == len({i for r in rows for i in r}) / n
