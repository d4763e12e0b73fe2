"""Balanced residual k-means (the RQ-Kmeans of OneRec and MiniOneRec's RQ-Kmeans+): at every level the
fitted items are split into clusters of (near) equal size, so codes are used evenly and fewer items share
a code tuple.

Each level starts from plain faiss k-means on the residuals, then alternates `balance_iters` times:
  1. balanced soft assignment: a Sinkhorn plan over the squared distances of the residuals to the
     centroids with uniform marginals (every cluster receives mass n/k);
  2. hard assignment under a capacity of ceil(n/k) items per cluster (`capacity_assignment` on the
     plan's log, i.e. each item's posterior over clusters);
  3. centroid update: the mean of each cluster's residuals (an empty cluster keeps its centroid);
and a last assignment with the final centroids gives the level's codes.

Size bound: at every level each cluster holds at most ceil(n/k) of the n fitted items (n >= k always holds,
`fit` refuses fewer items than codes). Balance is a property of the fitted catalogue only: `encode` of
any embeddings (new items, or the fitted ones again) picks the nearest centroid at each level, like plain
RQ-KMeans; `fit_encode` returns the balanced codes of the fitted items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from semrec.errors import SemrecError
from semrec.quantizers.base import register_quantizer
from semrec.quantizers.collisions import sinkhorn
from semrec.quantizers.rqkmeans import RQKMeans, RQKMeansConfig, kmeans, nearest


@dataclass
class BalancedRQKMeansConfig(RQKMeansConfig):
    balance_iters: int = 10  # balanced assignment + centroid update rounds per level, after plain k-means
    sinkhorn_epsilon: float = 0.05  # entropic regularisation on costs scaled to [-1, 1] (see collisions.sinkhorn)
    sinkhorn_iters: int = 100

    def __post_init__(self) -> None:
        if self.balance_iters < 0:
            raise ValueError(f"balance_iters must be >= 0, got {self.balance_iters}")
        if not self.sinkhorn_epsilon > 0:
            raise ValueError(f"sinkhorn_epsilon must be positive, got {self.sinkhorn_epsilon}")
        if self.sinkhorn_iters < 1:
            raise ValueError(f"sinkhorn_iters must be >= 1, got {self.sinkhorn_iters}")


def capacity_assignment(score: np.ndarray, capacity: int) -> np.ndarray:
    """Assign each of n rows to one of k columns, at most `capacity` rows per column, preferring high
    scores: in rounds, every unassigned row proposes to its best column that still has room, and each
    column accepts its best-scoring proposers up to its room. score (n, k) -> codes (n,) int64.
    Every row is assigned when n <= k * capacity; each round fills a column or assigns every proposer,
    so there are at most k + 1 rounds."""
    n, k = score.shape
    if n > k * capacity:
        raise SemrecError(f"capacity_assignment: {n} rows do not fit in {k} columns of {capacity}")
    codes = np.full(n, -1, dtype=np.int64)
    room = np.full(k, capacity, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        s = np.where(room[None, :] > 0, score[todo], -np.inf)
        choice = s.argmax(1)
        best = s[np.arange(todo.size), choice]
        order = np.lexsort((-best, choice))  # grouped by column, best proposer first (stable on ties)
        col = choice[order]
        rank = np.arange(col.size) - np.searchsorted(col, col, side="left")
        take = np.zeros(todo.size, dtype=bool)
        take[order[rank < room[col]]] = True
        codes[todo[take]] = choice[take]
        room -= np.bincount(choice[take], minlength=k)
        todo = todo[~take]
    return codes


def cluster_means(x: np.ndarray, codes: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(k, d) mean of the rows of x (n, d) in each cluster; `previous` (k, d) where a cluster is empty."""
    k = previous.shape[0]
    onehot = sparse.csr_matrix((np.ones(len(codes), dtype=np.float64), (codes, np.arange(len(codes)))),
                               shape=(k, len(codes)))
    sums = np.asarray(onehot @ x.astype(np.float64))
    sizes = np.bincount(codes, minlength=k)
    out = previous.astype(np.float32, copy=True)
    full = sizes > 0
    out[full] = (sums[full] / sizes[full, None]).astype(np.float32)
    return out


@register_quantizer("rqkmeans_balanced")
class BalancedRQKMeans(RQKMeans):
    """Residual k-means with equal-size clusters at every level on the fitted items (see module docstring);
    encoding, decoding and saved weights are those of RQKMeans."""

    config_class = BalancedRQKMeansConfig

    def __init__(self, config=None, **overrides) -> None:
        super().__init__(config, **overrides)
        self._assignment: tuple[np.ndarray, np.ndarray] | None = None

    def _balanced_level(self, x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One level on residuals x (n, d): (centroids (k, d), codes (n,), squared distances (n, k))."""
        cfg = self.config
        c = kmeans(x, k, niter=cfg.niter, seed=seed, nredo=cfg.nredo)
        capacity = -(-x.shape[0] // k)
        for it in range(cfg.balance_iters + 1):
            _, dist = nearest(x, c)
            plan = sinkhorn(dist, cfg.sinkhorn_epsilon, cfg.sinkhorn_iters)
            codes = capacity_assignment(np.log(np.maximum(plan, 1e-300)), capacity)
            if it < cfg.balance_iters:
                c = cluster_means(x, codes, c)
        return c, codes, dist

    def _fit(self, emb: np.ndarray, cf_emb: np.ndarray | None) -> None:
        from tqdm.auto import tqdm

        resid = np.array(emb, dtype=np.float32, copy=True)
        codes = np.empty((emb.shape[0], self.num_levels), dtype=np.int64)
        self.codebooks, largest, moved = [], [], []
        for level, k in enumerate(tqdm(self.codebook_sizes, desc="balanced rq-kmeans level", leave=False,
                                       disable=not self.progress)):
            c, codes[:, level], dist = self._balanced_level(resid, k, self.config.seed + level)
            largest.append(int(np.bincount(codes[:, level], minlength=k).max()))
            moved.append(float((dist.argmin(1) != codes[:, level]).mean()))
            resid -= c[codes[:, level]]
            self.codebooks.append(c)
        self._assignment = (codes, dist.astype(np.float32))
        self.fit_info["largest_cluster"] = largest
        self.fit_info["share_not_nearest"] = moved  # fitted items whose code is not their nearest centroid
        self.fit_info["codes_used_in_fit"] = [int(np.unique(col).size) for col in codes.T]
        self.fit_info["relative_residual"] = float((resid ** 2).sum() / max((emb ** 2).sum(), 1e-12))

    def _fitted_codes(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The balanced assignment made while fitting (not the nearest-centroid encoding)."""
        out, self._assignment = self._assignment, None  # not kept: (N, K) distances are large
        return out
