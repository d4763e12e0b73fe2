"""Product quantization (PQ) and optimized product quantization (OPQ, Ge et al. 2014), trained with faiss.

Not residual. The d-dim item vector (OPQ: first rotated by a learned orthogonal d x d matrix R, y = R x)
is cut into L equal sub-vectors of d / L dimensions, one per level: level l is the code of sub-vector l
in its own codebook of K centroids (faiss ProductQuantizer: k-means in each sub-space), and the code order
is the sub-vector order. Decoding concatenates the chosen sub-centroids (OPQ then applies R^T).

What a prefix means: the first m codes describe the item by its first m sub-vectors only, a coarse
description by part of the vector (PQ: some of the embedding's dimensions; OPQ: part of the rotated space),
not the coarse-to-fine refinement of a residual quantizer, whose first code already approximates the whole
vector. Items sharing a PQ prefix agree on those dimensions and may differ anywhere else. The prefix index
and the Collaborative Tokenizer take these codes unchanged; their trie simply branches by vector part.

faiss constraints: every level has the same codebook size, a power of two (K = 2^nbits), and d must be a
multiple of L. OPQ runs faiss OPQMatrix (`opq_iters` alternations of PQ training and a Procrustes update of
R, from a seeded random rotation), then trains the PQ afresh on the rotated vectors. Encoding is exact
nearest-centroid search in each sub-space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semrec.errors import SemrecError
from semrec.quantizers.base import Quantizer, register_quantizer
from semrec.quantizers.rqkmeans import nearest


@dataclass
class PQConfig:
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])  # one level per sub-vector
    niter: int = 25  # k-means iterations per sub-quantizer
    seed: int = 0


@dataclass
class OPQConfig(PQConfig):
    opq_iters: int = 50  # alternations of PQ training and rotation update (faiss OPQMatrix.niter)

    def __post_init__(self) -> None:
        if self.opq_iters < 1:
            raise ValueError(f"opq_iters must be >= 1, got {self.opq_iters}")


def code_bits(sizes: list[int], where: str) -> int:
    """nbits with 2^nbits the common codebook size; a one-line error unless the sizes are equal powers of 2."""
    k = sizes[0]
    if any(s != k for s in sizes) or k < 2 or k & (k - 1):
        raise SemrecError(f"{where}: faiss product quantization needs every level to have the same "
                          f"power-of-two size (2, 4, ..., 256, ...), got {sizes}")
    return k.bit_length() - 1


@register_quantizer("pq")
class PQ(Quantizer):
    """Product quantizer: codebooks are float32 arrays (K, d / L), one per sub-vector (see module docstring)."""

    config_class = PQConfig

    def __init__(self, config=None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.nbits = code_bits(self.codebook_sizes, f"{self.name}.codebook_sizes")
        self.codebooks: list[np.ndarray] = []
        self.rotation: np.ndarray | None = None  # OPQ: R (d, d) orthogonal; rotated rows are x @ R.T

    def _product_quantizer(self, d: int, n: int):
        """An untrained faiss ProductQuantizer for n vectors of dimension d (all of them used, seeded)."""
        import faiss

        pq = faiss.ProductQuantizer(d, self.num_levels, self.nbits)
        pq.cp.niter, pq.cp.seed = self.config.niter, self.config.seed
        pq.cp.min_points_per_centroid = 1
        pq.cp.max_points_per_centroid = max(256, -(-n // self.codebook_sizes[0]))
        return pq

    def _learn_rotation(self, x: np.ndarray) -> np.ndarray | None:
        return None  # plain PQ cuts the embedding as it is

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.ascontiguousarray(x if self.rotation is None else x @ self.rotation.T)

    def _fit(self, emb: np.ndarray, cf_emb: np.ndarray | None) -> None:
        import faiss

        n, d = emb.shape
        if d % self.num_levels:
            raise SemrecError(f"{self.name}: embedding dimension {d} is not divisible by the {self.num_levels} "
                              f"sub-vectors (one per level of codebook_sizes)")
        self.rotation = self._learn_rotation(np.ascontiguousarray(emb, dtype=np.float32))
        pq = self._product_quantizer(d, n)
        pq.train(self._rotate(emb))
        sub = d // self.num_levels
        self.codebooks = list(faiss.vector_to_array(pq.centroids).reshape(self.num_levels, -1, sub))
        codes, _ = self._encode(emb)
        self.fit_info["codes_used_in_fit"] = [int(np.unique(col).size) for col in codes.T]
        err = ((emb - self.decode(codes)) ** 2).sum()
        self.fit_info["relative_residual"] = float(err / max((emb ** 2).sum(), 1e-12))

    def _encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, sub = emb.shape[0], emb.shape[1] // self.num_levels
        codes = np.empty((n, self.num_levels), dtype=np.int64)
        last = np.empty((n, self.codebook_sizes[-1]), dtype=np.float32)
        step = 65536
        for lo in range(0, n, step):
            y = self._rotate(emb[lo:lo + step])
            for level, c in enumerate(self.codebooks):
                codes[lo:lo + step, level], dist = nearest(y[:, level * sub:(level + 1) * sub], c)
            last[lo:lo + step] = dist
        return codes, last

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, L) raw codes -> (N, d): the chosen sub-centroids concatenated in sub-vector order (OPQ: times R,
        i.e. R^T applied to each concatenated column vector)."""
        codes = np.asarray(codes, dtype=np.int64)
        y = np.concatenate([c[codes[:, l]] for l, c in enumerate(self.codebooks)], axis=1)
        return (y if self.rotation is None else y @ self.rotation).astype(np.float32)

    def reconstruct(self, emb: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(emb))

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"codebook.{l}": c for l, c in enumerate(self.codebooks)}
        if self.rotation is not None:
            state["rotation"] = self.rotation
        return state

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.codebooks = [np.asarray(state[f"codebook.{l}"], dtype=np.float32) for l in range(self.num_levels)]
        self.rotation = np.asarray(state["rotation"], dtype=np.float32) if "rotation" in state else None


@register_quantizer("opq")
class OPQ(PQ):
    """PQ after a learned rotation (faiss OPQMatrix); the rotation is saved as `rotation` (d, d)."""

    config_class = OPQConfig

    def _learn_rotation(self, x: np.ndarray) -> np.ndarray:
        import faiss

        n, d = x.shape
        opq = faiss.OPQMatrix(d, self.num_levels)
        opq.niter = self.config.opq_iters
        q, r = np.linalg.qr(np.random.default_rng(self.config.seed).standard_normal((d, d)))
        faiss.copy_array_to_vector((q * np.sign(np.diag(r))).astype(np.float32).ravel(), opq.A)  # seeded start
        inner = self._product_quantizer(d, n)  # referenced here while training: OPQMatrix keeps a raw pointer
        opq.pq = inner
        opq.train(x)
        return faiss.vector_to_array(opq.A).reshape(d, d).astype(np.float32)
