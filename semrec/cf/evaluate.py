"""Full-ranking evaluation of a CF teacher: every example's target is ranked among ALL items
(never sampled negatives), then HR/Recall/NDCG@K and MRR are averaged over examples.

Items already in the history stay in the ranking by default (`exclude_history=False`): the Amazon
data used here has repeat interactions (the target also appears in the history of some rows), and
removing history items would make those targets unreachable. With `exclude_history=True` every
history item is removed from the ranking; a target that is in the history then counts as a miss.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from semrec import distributed
from semrec.cf.base import CFTeacher, check_logits, teacher_name
from semrec.data.dataset import Examples
from semrec.errors import SemrecError
from semrec.metrics import DEFAULT_KS, rank_metrics, rank_of_targets
from semrec.tca import exclude_history as mask_history

# Scores (rows x items) held at once: bounds the (B, N) logits and their temporaries for large catalogues.
SCORE_ELEMENTS = 1 << 25


@torch.no_grad()
def teacher_ranks(model: CFTeacher, examples: Examples, *, exclude_history: bool = False,
                  batch_size: int = 1024, ties: str = "pessimistic") -> np.ndarray:
    """(E,) 1-based rank of each example's target among all items (0 = excluded)."""
    if len(examples) == 0:
        raise SemrecError("evaluation split is empty")
    if len(examples.targets) and int(examples.targets.max()) >= model.num_items:
        raise SemrecError(f"target item id {int(examples.targets.max())} outside the teacher's "
                          f"0..{model.num_items - 1} (teacher trained on another dataset?)")
    was_training = model.training
    model.eval()
    device = model.item_emb.weight.device
    lengths = examples.lengths
    order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding per batch
    hist_len = model.history_len()
    ranks = np.zeros(len(examples), dtype=np.int64)
    # under torchrun each rank scores whole batches of its share; the gather below restores the order
    lo, hi = distributed.shard_bounds(len(order), chunk=batch_size)
    step = max(1, min(batch_size, SCORE_ELEMENTS // model.num_items))
    for start in range(lo, hi, step):
        idx = order[start:min(start + step, hi)]
        sub = examples.subset(idx)
        hist = torch.from_numpy(sub.padded_histories(hist_len)).to(device)
        scores = check_logits(model.item_logits(hist), teacher_name(model))
        exclude = None
        if exclude_history:
            exclude = torch.from_numpy(sub.padded_histories(max(1, int(sub.lengths.max())))).to(device)
        targets = torch.from_numpy(sub.targets).to(device)
        ranks[idx] = rank_of_targets(scores, targets, exclude, ties=ties).cpu().numpy()
    model.train(was_training)
    if distributed.is_distributed():
        ranks[order] = distributed.gather_cat(torch.from_numpy(ranks[order[lo:hi]])).numpy()
    return ranks


def evaluate_teacher(model: CFTeacher, examples: Examples, *, ks: Sequence[int] = DEFAULT_KS,
                     exclude_history: bool = False, batch_size: int = 1024) -> dict[str, float]:
    """HR@K, Recall@K, NDCG@K for each K, and MRR over `examples` (full ranking)."""
    return rank_metrics(teacher_ranks(model, examples, exclude_history=exclude_history,
                                      batch_size=batch_size), ks)


@torch.no_grad()
def teacher_top_lists(model: CFTeacher, examples: Examples, k: int, *, exclude_history: bool = False,
                      batch_size: int = 1024) -> torch.Tensor:
    """(E, k) CPU LongTensor: each example's k highest-scoring items (full ranking, history included unless
    `exclude_history`: then every history item is left out, as `teacher_ranks` ranks)."""
    if len(examples) == 0:
        raise SemrecError("evaluation split is empty")
    was_training = model.training
    model.eval()
    device = model.item_emb.weight.device
    hist = torch.from_numpy(examples.padded_histories(model.history_len()))
    full = torch.from_numpy(examples.padded_histories(max(1, int(examples.lengths.max())))) if exclude_history else None
    out = []
    for lo in range(0, len(examples), batch_size):
        scores = check_logits(model.item_logits(hist[lo:lo + batch_size].to(device)), teacher_name(model))
        if full is not None:
            scores = mask_history(scores, full[lo:lo + batch_size])
        out.append(scores.topk(k, dim=1).indices.cpu())
    model.train(was_training)
    return torch.cat(out)


def target_in_history(examples: Examples) -> np.ndarray:
    """(E,) bool: each example's target item already occurs in its history (a repeat interaction)."""
    lengths = examples.lengths
    hit = examples.hist_items == np.repeat(np.asarray(examples.targets), lengths)  # per history entry
    out = np.zeros(len(examples), dtype=bool)
    out[np.repeat(np.arange(len(examples)), lengths)[hit]] = True
    return out


def target_in_history_rate(examples: Examples) -> float:
    """Share of examples whose target item already occurs in their history (repeat interactions)."""
    return float(target_in_history(examples).mean()) if len(examples) else 0.0
