"""Intrinsic quality figures of item codes (also reported by semrec.itemtok.compare)."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def code_usage(raw: np.ndarray, sizes: Iterable[int] | None = None) -> list[dict]:
    """Per position: codes used, codebook size, perplexity exp(H) of the code distribution, max share."""
    raw = np.asarray(raw)
    out = []
    sizes = list(sizes) if sizes is not None else [None] * raw.shape[1]
    for l in range(raw.shape[1]):
        _, counts = np.unique(raw[:, l], return_counts=True)
        p = counts / counts.sum()
        out.append({"level": l, "codes_used": int(len(counts)), "codebook_size": sizes[l],
                    "perplexity": float(np.exp(-(p * np.log(p)).sum())), "max_share": float(p.max())})
    return out
