"""Full-ranking metrics computed from the rank of each example's single target item.

Ranks are 1-based: rank 1 means the target scored highest of all N items. A rank of 0 (or any
value < 1, NaN or inf) means the target is absent from the ranking (e.g. excluded as an already-seen
item, or not produced by a generative model's beam) and counts as a miss for every metric.

With one target per example, Recall@K equals HR@K (both are reported, under both names).
NDCG@K = 1 / log2(rank + 1) if rank <= K else 0 (the ideal DCG of one relevant item is 1).
MRR is the mean of 1 / rank over all examples, untruncated.

Ties: `rank_of_targets` counts the items scoring strictly higher than the target, and by default
("pessimistic") also every *other* item scoring exactly the same, so a model that gives all items
the same score ranks every target last rather than first. `ties="optimistic"` counts only strictly
higher items. No sort of the N scores is needed: one comparison pass, O(B x N).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from semrec.errors import SemrecError

DEFAULT_KS = (1, 3, 5, 10, 20)


def _exclude_mask(exclude: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """(B, N) bool mask from either a bool mask or an item-id tensor (B, L) padded with negatives."""
    b, n = shape
    if exclude.dtype == torch.bool:
        if exclude.shape != shape:
            raise SemrecError(f"exclude mask has shape {tuple(exclude.shape)}, expected {(b, n)}")
        return exclude.to(device)
    if exclude.dim() != 2 or exclude.shape[0] != b:
        raise SemrecError(f"exclude history has shape {tuple(exclude.shape)}, expected ({b}, L)")
    ids = exclude.to(device=device, dtype=torch.long)
    if ids.numel() and int(ids.max()) >= n:
        raise SemrecError(f"exclude history has item id {int(ids.max())} outside 0..{n - 1}")
    mask = torch.zeros((b, n + 1), dtype=torch.bool, device=device)
    # negatives (padding) are sent to the spare column n, dropped below
    mask.scatter_(1, torch.where(ids < 0, torch.full_like(ids, n), ids), True)
    return mask[:, :n]


def rank_of_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: torch.Tensor | None = None,
    *,
    ties: str = "pessimistic",
) -> torch.Tensor:
    """1-based rank of each target among all N items, without sorting.

    scores: (B, N) float; an item scored NaN never ranks ahead of the target, and a target scored NaN
    is absent (rank 0). targets: (B,) item ids in 0..N-1.
    exclude: None, a (B, N) bool mask of items to drop, or a (B, L) item-id tensor (e.g. histories)
    whose negative entries are padding. A target that is itself excluded gets rank 0 (absent).
    ties: "pessimistic" (default; other items with an equal score rank ahead of the target) or
    "optimistic" (only strictly higher scores count).
    Returns a LongTensor (B,) on the scores' device.
    """
    if scores.dim() != 2:
        raise SemrecError(f"scores must be (B, N), got shape {tuple(scores.shape)}")
    b, n = scores.shape
    targets = torch.as_tensor(targets, device=scores.device).long().reshape(-1)
    if targets.shape[0] != b:
        raise SemrecError(f"{targets.shape[0]} targets for {b} score rows")
    if b and (int(targets.min()) < 0 or int(targets.max()) >= n):
        bad = targets[(targets < 0) | (targets >= n)][0]
        raise SemrecError(f"target item id {int(bad)} outside 0..{n - 1}")
    if ties not in ("pessimistic", "optimistic"):
        raise SemrecError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    s = scores
    absent = torch.zeros(b, dtype=torch.bool, device=s.device)
    if exclude is not None:
        mask = _exclude_mask(torch.as_tensor(exclude), s.shape, s.device)
        absent = mask.gather(1, targets[:, None])[:, 0]
        s = s.masked_fill(mask, -math.inf)
    t = s.gather(1, targets[:, None])
    # one pass over the scores; NaN compares False, so NaN items never rank ahead of anything
    if ties == "pessimistic":
        rank = (s >= t).sum(1)  # counts the target itself: rank = higher + other ties + 1
    else:
        rank = (s > t).sum(1) + 1
    absent = absent | torch.isnan(t[:, 0])
    return torch.where(absent, torch.zeros_like(rank), rank)


def _as_float_ranks(ranks) -> np.ndarray:
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    # absent: rank < 1, NaN or inf -> inf (a miss everywhere, 1/inf = 0 for MRR)
    return np.where(np.isfinite(r) & (r >= 1), r, np.inf)


def rank_metrics(ranks, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """HR@K, Recall@K, NDCG@K for each K, and MRR, averaged over examples.

    ranks: array-like (E,) 1-based target ranks; 0 / inf / NaN mean absent (a miss).
    Returns {"hr@1": .., "recall@1": .., "ndcg@1": .., ..., "mrr": ..} as Python floats.
    """
    r = _as_float_ranks(ranks)
    if r.size == 0:
        raise SemrecError("rank_metrics: no examples to evaluate")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise SemrecError(f"rank_metrics: cut-offs must be positive integers, got {list(ks)}")
    out: dict[str, float] = {}
    gain = np.where(np.isfinite(r), 1.0 / np.log2(np.minimum(r, 1e300) + 1.0), 0.0)
    for k in ks:
        hit = r <= k
        hr = float(hit.mean())
        out[f"hr@{k}"] = hr
        out[f"recall@{k}"] = hr
        out[f"ndcg@{k}"] = float(np.where(hit, gain, 0.0).mean())
    out["mrr"] = float((1.0 / r).mean())
    return out


def collaborative_consistency(generated_top1, teacher) -> float:
    """Share of rows whose generated top-1 item is also the CF teacher's top-1.

    generated_top1: (E,) item ids (negative = nothing generated, counted as a mismatch).
    teacher: either (E, N) teacher scores -- a row matches when no item scores strictly higher than
    the generated item (so tied maxima all count as the teacher's top-1) -- or (E,) teacher top-1 ids.
    """
    gen = torch.as_tensor(generated_top1).long().reshape(-1)
    teacher = torch.as_tensor(teacher)
    if gen.numel() == 0:
        raise SemrecError("collaborative_consistency: no rows")
    if teacher.dim() == 1:
        if teacher.shape[0] != gen.shape[0]:
            raise SemrecError(f"collaborative_consistency: {gen.shape[0]} generated vs {teacher.shape[0]} teacher rows")
        return float(((gen >= 0) & (gen == teacher.to(gen.device).long())).float().mean())
    if teacher.dim() != 2 or teacher.shape[0] != gen.shape[0]:
        raise SemrecError(f"collaborative_consistency: teacher scores shape {tuple(teacher.shape)} "
                          f"does not match {gen.shape[0]} generated rows")
    gen = gen.to(teacher.device)
    n = teacher.shape[1]
    if int(gen.max()) >= n:
        raise SemrecError(f"collaborative_consistency: generated item id {int(gen.max())} outside 0..{n - 1}")
    valid = gen >= 0
    rank = rank_of_targets(teacher, gen.clamp(min=0), ties="optimistic")
    return float(((rank == 1) & valid).float().mean())


def item_popularity(targets, num_items: int) -> np.ndarray:
    """(N,) int64 count of each item among `targets` (e.g. the training split's target items)."""
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if t.size and (t.min() < 0 or t.max() >= num_items):
        raise SemrecError(f"item_popularity: item id outside 0..{num_items - 1}")
    return np.bincount(t, minlength=num_items).astype(np.int64)


def list_diagnostics(items, num_items: int, popularity=None, *, head_share: float = 0.01) -> dict[str, float]:
    """How personal a set of top-K lists is.

    items: (E, K) recommended item ids per row (negative = empty slot). Returns `coverage@K` (distinct
    items recommended / N), `distinct_top1` (distinct first items across rows) and, with `popularity`
    (N,) counts, `pop1%@K`: the share of the filled slots taken by the `head_share` most popular items
    (a popularity recommender scores 1.0 when K <= that head; a uniform one about `head_share`)."""
    it = torch.as_tensor(items).long()
    if it.dim() != 2 or it.shape[0] == 0:
        raise SemrecError(f"list_diagnostics: items must be a non-empty (E, K) table, got {tuple(it.shape)}")
    k = it.shape[1]
    filled = it[it >= 0]
    out = {f"coverage@{k}": float(torch.unique(filled).numel() / num_items),
           "distinct_top1": float(torch.unique(it[:, 0][it[:, 0] >= 0]).numel())}
    if popularity is not None:
        pop = torch.as_tensor(np.asarray(popularity), dtype=torch.float64)
        if pop.shape != (num_items,):
            raise SemrecError(f"list_diagnostics: popularity has shape {tuple(pop.shape)}, expected ({num_items},)")
        n_head = max(1, int(round(head_share * num_items)))
        head = torch.zeros(num_items, dtype=torch.bool)
        head[torch.argsort(-pop, stable=True)[:n_head]] = True
        out[f"pop{head_share:.0%}@{k}"] = float(head[filled].float().mean()) if filled.numel() else 0.0
    return out


def paired_gain(ranks, base_ranks, k: int = 10) -> tuple[float, float]:
    """Mean per-row NDCG@k gain of `ranks` over `base_ranks` (same rows, (E,) 1-based ranks, 0 = absent)
    and its standard error: the gain is clearly positive when mean > 2 * se."""
    a, b = _as_float_ranks(ranks), _as_float_ranks(base_ranks)
    if a.shape != b.shape or a.size == 0:
        raise SemrecError(f"paired_gain: rank arrays of shapes {a.shape} and {b.shape}")

    def gain(r: np.ndarray) -> np.ndarray:
        return np.where(r <= k, 1.0 / np.log2(np.minimum(r, 1e300) + 1.0), 0.0)

    d = gain(a) - gain(b)
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
    return float(d.mean()), se
