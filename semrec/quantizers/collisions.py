"""Making semantic IDs unique per item.

- `collision_stats(codes)`: how many items share their full code tuple with another item (before any
  resolution): `collisions` = N - number of distinct tuples (items that need disambiguating),
  `items_in_collisions` = items in groups of size > 1, `max_group`.
- "extra_code" (TIGER): append one level whose code is the item's rank (by item id) inside its group of
  identical tuples; its codebook size is the largest group.
- "sinkhorn" (LETTER / LC-Rec): inside every prefix group (items sharing the first L-1 codes) that has a
  collision, re-assign the LAST level of the colliding items by a balanced optimal transport onto the
  codes no other item of the group holds (Sinkhorn on the min-max-centred squared distances, uniform
  marginals), rounded to a one-to-one assignment maximising the log plan (Hungarian algorithm); items
  whose tuple was already unique keep their codes. A prefix group larger than the last codebook cannot be made unique at that
  level; those leftover collisions then get an extra code (reported as `fallback_extra_code`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from semrec.errors import SemrecError


def group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) codes -> (group id (N,) of each item's tuple, group sizes (G,)). Groups numbered by first
    appearance order of np.unique over rows (lexicographic)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise SemrecError(f"codes: expected a 2-D (items, levels) array, got shape {codes.shape}")
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inv.reshape(-1).astype(np.int64), counts.astype(np.int64)


def collision_stats(codes: np.ndarray) -> dict:
    """{"collisions": N - distinct tuples, "items_in_collisions", "max_group", "collision_rate"}."""
    n = int(np.asarray(codes).shape[0])
    _, counts = group_ids(codes)
    distinct = int(len(counts))
    return {"collisions": n - distinct, "items_in_collisions": int(counts[counts > 1].sum()),
            "max_group": int(counts.max()) if len(counts) else 0,
            "collision_rate": (n - distinct) / n if n else 0.0}


def extra_code(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append the rank of each item (by item id) within its group of identical tuples.

    Returns (codes (N, L+1), extra codebook size = largest group, at least 1)."""
    codes = np.asarray(codes, dtype=np.int64)
    gid, counts = group_ids(codes)
    n = len(gid)
    order = np.lexsort((np.arange(n), gid))  # by group, then item id
    sorted_g = gid[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_g)) + 1] if n else np.zeros(0, dtype=np.int64)
    rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    size = int(counts.max()) if len(counts) else 1
    return np.concatenate([codes, rank[:, None]], axis=1), max(size, 1)


def sinkhorn(cost: np.ndarray, epsilon: float = 0.05, iters: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Sinkhorn-Knopp: transport plan (m, K) with row sums 1/m and column sums 1/K for `cost`, entropic
    regularisation `epsilon` on the cost min-max-centred to [-1, 1] (as LETTER does, so `epsilon` is
    scale-free; the kernel then stays within exp(+-1/epsilon), safe in float64 for epsilon >= 0.002)."""
    c = np.asarray(cost, dtype=np.float64)
    lo, hi = c.min(), c.max()
    c = (c - (hi + lo) / 2) / max((hi - lo) / 2, 1e-12)
    m, k = c.shape
    kern = np.exp(-(c - c.min(axis=1, keepdims=True)) / max(epsilon, 2e-3))  # row shift: max entry 1 per row
    a, b = np.full(m, 1.0 / m), np.full(k, 1.0 / k)
    v = np.ones(k)
    for _ in range(iters):
        u = a / np.maximum(kern @ v, 1e-300)
        v_new = b / np.maximum(kern.T @ u, 1e-300)
        done = np.abs(v_new - v).max() <= tol * v.max()
        v = v_new
        if done:
            break
    u = a / np.maximum(kern @ v, 1e-300)
    return u[:, None] * kern * v[None, :]


def sinkhorn_last_level(codes: np.ndarray, last_dist: np.ndarray, *, epsilon: float = 0.05,
                        iters: int = 100) -> tuple[np.ndarray, int]:
    """Re-assign the last level of colliding items (see module docstring).

    Inside each prefix group (same first L-1 codes) that has a collision, items whose full tuple is
    already unique keep their code; the colliding items are transported onto the codes those do not
    occupy (balanced Sinkhorn plan over their last-level distances) and the plan is rounded to a
    one-to-one assignment (Hungarian). codes (N, L) raw codes; last_dist (N, K) squared distances of each
    item's last residual to the last codebook. Returns (new codes (N, L), number of items moved)."""
    from scipy.optimize import linear_sum_assignment

    codes = np.array(codes, dtype=np.int64, copy=True)
    last_dist = np.asarray(last_dist, dtype=np.float64)
    n, levels = codes.shape
    if last_dist.shape[0] != n:
        raise SemrecError(f"sinkhorn: {last_dist.shape[0]} distance rows for {n} items")
    k = last_dist.shape[1]
    gid, counts = group_ids(codes)
    colliding = counts[gid] > 1
    if not colliding.any():
        return codes, 0
    prefix_gid = group_ids(codes[:, :-1])[0] if levels > 1 else np.zeros(n, dtype=np.int64)
    changed = 0
    order = np.argsort(prefix_gid, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(prefix_gid[order])) + 1, n]
    todo = np.zeros(int(prefix_gid.max()) + 1, dtype=bool)
    todo[prefix_gid[colliding]] = True
    for s, e in zip(bounds[:-1], bounds[1:]):
        members = order[s:e]
        if not todo[prefix_gid[members[0]]]:
            continue
        movable = members[colliding[members]]
        free = np.setdiff1d(np.arange(k), codes[members[~colliding[members]], -1])
        if len(movable) > len(free):  # cannot be unique at this level: left for the extra-code fallback
            continue
        cost = last_dist[np.ix_(movable, free)]
        plan = sinkhorn(cost, epsilon, iters)
        # one-to-one rounding of the plan; ties broken towards smaller distance
        score = np.log(np.maximum(plan, 1e-300)) - 1e-9 * cost
        rows, cols = linear_sum_assignment(-score)
        new = np.empty(len(movable), dtype=np.int64)
        new[rows] = free[cols]
        changed += int((codes[movable, -1] != new).sum())
        codes[movable, -1] = new
    return codes, changed


def resolve_collisions(codes: np.ndarray, method: Literal["extra_code", "sinkhorn"] = "extra_code", *,
                       last_dist: np.ndarray | None = None, codebook_sizes: list[int] | None = None,
                       epsilon: float = 0.05, iters: int = 100) -> tuple[np.ndarray, list[int], dict]:
    """Make every row of `codes` (N, L) unique. Returns (codes (N, L or L+1), codebook sizes, report).

    report: {"method", "before": collision_stats, "after": collision_stats, "extra_level": bool, ...}."""
    codes = np.asarray(codes, dtype=np.int64)
    sizes = list(codebook_sizes) if codebook_sizes is not None else [int(c.max()) + 1 for c in codes.T]
    before = collision_stats(codes)
    report: dict = {"method": method, "before": before}
    if method == "extra_code":
        codes, extra = extra_code(codes)
        sizes = sizes + [extra]
        report["extra_level"] = True
    elif method == "sinkhorn":
        if last_dist is None:
            raise SemrecError("sinkhorn collision resolution needs the last-level distances")
        codes, changed = sinkhorn_last_level(codes, last_dist, epsilon=epsilon, iters=iters)
        report["reassigned_items"] = changed
        report["after_sinkhorn"] = collision_stats(codes)
        if report["after_sinkhorn"]["collisions"] > 0:
            codes, extra = extra_code(codes)
            sizes = sizes + [extra]
            report["extra_level"] = True
            report["fallback_extra_code"] = True
        else:
            report["extra_level"] = False
    else:
        raise SemrecError(f"collisions.method: expected 'extra_code' or 'sinkhorn', got {method!r}")
    report["after"] = collision_stats(codes)
    assert report["after"]["collisions"] == 0
    return codes, sizes, report
