"""Residual k-means (faiss): level l runs k-means on the residuals left by levels < l."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semrec.quantizers.base import Quantizer, register_quantizer


@dataclass
class RQKMeansConfig:
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    niter: int = 25  # k-means iterations per level
    nredo: int = 1  # k-means restarts per level (best objective kept)
    seed: int = 0


def kmeans(x: np.ndarray, k: int, *, niter: int = 25, seed: int = 0, nredo: int = 1) -> np.ndarray:
    """(k, d) float32 centroids of faiss k-means on all rows of x (N, d), deterministic under `seed`."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, verbose=False,
                      max_points_per_centroid=max(256, -(-x.shape[0] // k)), min_points_per_centroid=1)
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, x.shape[1])


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes (N,) int64, squared distances to all centroids (N, K) float32) by exact search."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    np.maximum(d, 0.0, out=d)
    return d.argmin(axis=1).astype(np.int64), d


@register_quantizer("rqkmeans")
class RQKMeans(Quantizer):
    """Residual k-means; codebooks are float32 arrays (K_l, d) in the embedding space."""

    config_class = RQKMeansConfig

    def __init__(self, config=None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.codebooks: list[np.ndarray] = []

    def _fit(self, emb: np.ndarray, cf_emb: np.ndarray | None) -> None:
        from tqdm.auto import tqdm

        resid = np.array(emb, dtype=np.float32, copy=True)
        self.codebooks = []
        usage = []
        for level, k in enumerate(tqdm(self.codebook_sizes, desc="rq-kmeans level", leave=False, disable=not self.progress)):
            c = kmeans(resid, k, niter=self.config.niter, seed=self.config.seed + level, nredo=self.config.nredo)
            codes, _ = nearest(resid, c)
            resid -= c[codes]
            self.codebooks.append(c)
            usage.append(int(np.unique(codes).size))
        self.fit_info["codes_used_in_fit"] = usage
        self.fit_info["relative_residual"] = float((resid ** 2).sum() / max((emb ** 2).sum(), 1e-12))

    def _encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = emb.shape[0]
        codes = np.empty((n, self.num_levels), dtype=np.int64)
        last = np.empty((n, self.codebook_sizes[-1]), dtype=np.float32)
        step = 65536
        for lo in range(0, n, step):
            resid = np.array(emb[lo:lo + step], dtype=np.float32, copy=True)
            for level, c in enumerate(self.codebooks):
                idx, d = nearest(resid, c)
                codes[lo:lo + step, level] = idx
                resid -= c[idx]
            last[lo:lo + step] = d
        return codes, last

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, L) raw codes -> (N, d) sum of the chosen centroids."""
        codes = np.asarray(codes, dtype=np.int64)
        return sum(c[codes[:, l]] for l, c in enumerate(self.codebooks)).astype(np.float32)

    def reconstruct(self, emb: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(emb))

    def _state(self) -> dict[str, np.ndarray]:
        return {f"codebook.{l}": c for l, c in enumerate(self.codebooks)}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.codebooks = [np.asarray(state[f"codebook.{l}"], dtype=np.float32) for l in range(self.num_levels)]
