"""The quantizer interface: fit on item embeddings (optionally with CF item embeddings), encode to
per-level codes, save/load Hugging Face style (config.json + weights.safetensors, no pickles).

Level l of an item's code picks c_l in [0, codebook_sizes[l]). In the residual quantizers (RQ-KMeans,
balanced RQ-KMeans, RQ-VAE, LETTER) it codes the residual left by levels < l, so a prefix is a coarse
approximation of the whole vector that later levels refine; in product quantization (PQ, OPQ) it codes
sub-vector l on its own, so a prefix describes part of the vector (semrec.quantizers.pq). Either way the
last level is the one collision resolution may re-assign. `encode` returns RAW codes (N, L) int64 (no
vocabulary offsets; `semrec.itemtok.artifact` adds them).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from semrec.config import load_config
from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, load_safetensors, read_json, write_json

QUANTIZERS: dict[str, type["Quantizer"]] = {}
FORMAT = "semrec-quantizer"


def register_quantizer(name: str):
    """Class decorator adding a Quantizer subclass to QUANTIZERS under `name`."""

    def deco(cls):
        cls.name = name
        QUANTIZERS[name] = cls
        return cls

    return deco


def check_codebook_sizes(sizes: list[int], where: str = "codebook_sizes") -> None:
    if not sizes:
        raise SemrecError(f"{where}: give at least one level")
    if any(k < 1 for k in sizes):
        raise SemrecError(f"{where}: every codebook needs at least one code, got {sizes}")


class Quantizer(abc.ABC):
    """Abstract quantizer (residual or product). Subclasses set `config_class` and implement the abstract methods."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type]

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        if config is None or isinstance(config, dict):
            data = dict(config or {})
            data.update(overrides)
            config = load_config(self.config_class, data, name=f"{self.name} config")
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise SemrecError(f"{self.name}: expected a {self.config_class.__name__}, got {type(config).__name__}")
        check_codebook_sizes(list(config.codebook_sizes), f"{self.name}.codebook_sizes")
        self.config = config
        self.progress = True  # show tqdm bars while fitting
        self.fit_info: dict = {}
        self.in_dim: int | None = None

    # ----------------------------------------------------------------------------------------- shape
    @property
    def codebook_sizes(self) -> list[int]:
        return [int(k) for k in self.config.codebook_sizes]

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def is_fitted(self) -> bool:
        return self.in_dim is not None

    def _check_input(self, emb: np.ndarray, *, fitting: bool = False) -> np.ndarray:
        from semrec.embeddings import check_matrix

        emb = check_matrix(emb, what=f"{self.name}: embeddings")
        if fitting:
            kmax = max(self.codebook_sizes)
            if emb.shape[0] < kmax:
                raise SemrecError(f"{self.name}: {emb.shape[0]} items cannot fill a codebook of {kmax} codes; "
                                  f"use smaller codebook_sizes")
        else:
            if not self.is_fitted:
                raise SemrecError(f"{self.name}: not fitted (call fit first or load with from_pretrained)")
            if emb.shape[1] != self.in_dim:
                raise SemrecError(f"{self.name}: embeddings have dimension {emb.shape[1]}, the quantizer was "
                                  f"fitted on dimension {self.in_dim}")
        return emb

    # ------------------------------------------------------------------------------------- interface
    def fit(self, emb: np.ndarray, cf_emb: np.ndarray | None = None, *, progress: bool = True) -> "Quantizer":
        """Fit on (N, d) item embeddings; `cf_emb` (N, d_cf) is used by collaborative quantizers."""
        self.progress = progress
        emb = self._check_input(emb, fitting=True)
        if cf_emb is not None:
            from semrec.embeddings import check_matrix

            cf_emb = check_matrix(cf_emb, rows=emb.shape[0], what=f"{self.name}: CF item embeddings")
        t0 = time.perf_counter()
        self._fit(emb, cf_emb)
        self.in_dim = int(emb.shape[1])
        self.fit_info["fit_seconds"] = time.perf_counter() - t0
        self.fit_info["num_items"] = int(emb.shape[0])
        return self

    @abc.abstractmethod
    def _fit(self, emb: np.ndarray, cf_emb: np.ndarray | None) -> None: ...

    def fit_encode(self, emb: np.ndarray, cf_emb: np.ndarray | None = None, *, progress: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Fit on the catalogue and return its codes as `encode_with_distances(emb)` does, except for a
        quantizer whose fit assigns codes under a constraint (balanced RQ-KMeans): that assignment."""
        self.fit(emb, cf_emb, progress=progress)
        return self._fitted_codes(emb)

    def _fitted_codes(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted items' (codes, last-level distances) right after `_fit`: nearest codes by default."""
        return self.encode_with_distances(emb)

    def encode(self, emb: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, L) int64 raw codes."""
        return self.encode_with_distances(emb)[0]

    def encode_with_distances(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, d) -> (codes (N, L) int64, squared distances (N, K_last) float32 of what each item's last level
        codes (its last residual, or its last sub-vector in PQ) to the last codebook: used to re-assign the
        last level when resolving collisions)."""
        return self._encode(self._check_input(emb))

    @abc.abstractmethod
    def _encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (codes (N, L) int64, last-level squared distances (N, K_last) float32)."""

    @abc.abstractmethod
    def reconstruct(self, emb: np.ndarray) -> np.ndarray:
        """(N, d) -> (N, d) float32: the embedding rebuilt from the item's codes."""

    # ------------------------------------------------------------------------------------------- io
    @abc.abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Named float/int arrays to save (safetensors)."""

    @abc.abstractmethod
    def _load_state(self, state: dict[str, np.ndarray]) -> None: ...

    def save_pretrained(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write config.json (class name, config, fit info) and weights.safetensors atomically."""
        from safetensors.numpy import save_file

        if not self.is_fitted:
            raise SemrecError(f"{self.name}: nothing to save, the quantizer is not fitted")
        with atomic_dir(out, overwrite=overwrite) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self._state().items()},
                      str(tmp / "weights.safetensors"))
            write_json(tmp / "config.json", {"format": FORMAT, "quantizer": self.name, "in_dim": self.in_dim,
                                             "config": dataclasses.asdict(self.config),
                                             "fit_info": self.fit_info})
            self._write_extra(tmp)
        return Path(out)

    def _write_extra(self, directory: Path) -> None:
        """Hook for additional human-readable files (RQ-VAE writes its loss-curve plot)."""

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Quantizer":
        """Load a saved quantizer; on the base class the subclass is dispatched by the saved name."""
        path = Path(path)
        meta = read_json(path / "config.json")
        if meta.get("format") != FORMAT:
            raise SemrecError(f"{path}/config.json: not a semrec quantizer")
        name = meta.get("quantizer")
        if name not in QUANTIZERS:
            raise SemrecError(f"{path}/config.json: unknown quantizer '{name}' (known: {', '.join(QUANTIZERS)})")
        klass = QUANTIZERS[name]
        if cls is not Quantizer and not issubclass(klass, cls):
            raise SemrecError(f"{path}: holds a '{name}' quantizer, not a {cls.__name__}")
        q = klass(load_config(klass.config_class, meta["config"], name=f"{path}/config.json: config"))
        wfile = path / "weights.safetensors"
        if not wfile.is_file():
            raise SemrecError(f"{wfile}: missing weights")
        q._load_state(load_safetensors(wfile, numpy=True))
        q.in_dim = int(meta["in_dim"])
        q.fit_info = meta.get("fit_info", {})
        return q


def load_quantizer(path: str | Path) -> Quantizer:
    """Load any saved quantizer (alias of Quantizer.from_pretrained)."""
    return Quantizer.from_pretrained(path)
