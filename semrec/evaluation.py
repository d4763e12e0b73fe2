"""Evaluate a generative recommender on a split with trie-constrained beam search.

Protocol T: HR/NDCG@{1,3,5,10}, beams 10 (TCA4Rec). Protocol P: Recall/NDCG@{5,10} (TIGER). Both also
report collaborative consistency against a CF teacher (share of rows whose generated top-1 is the
teacher's top-1; `semrec.metrics.collaborative_consistency`), catalogue coverage of the top-K lists and
the invalid rate (hypotheses that are no catalogue item; 0 by construction when constrained).

    metrics = evaluate(model, dataset.test, teacher=teacher, protocol="T")
    row = result_row(model, metrics, dataset="office-t", protocol="T", split="test")
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from semrec import distributed
from semrec.cf.base import check_logits, teacher_name
from semrec.data.dataset import Examples
from semrec.decoding import beam_search
from semrec.errors import SemrecError
from semrec.metrics import collaborative_consistency, rank_metrics
from semrec.data.examples import ExampleTable
from semrec.runtime import describe_machine

PROTOCOL_KS = {"T": (1, 3, 5, 10), "P": (5, 10)}


def ks_for(protocol: str) -> tuple[int, ...]:
    return PROTOCOL_KS.get(protocol, (1, 3, 5, 10))


def history_len_for(model, teacher=None) -> int:
    """History columns to keep: what the model reads and what the teacher reads, whichever is longer."""
    return max(model.max_history, int(getattr(teacher, "max_len", 0) or 0))


def target_ranks(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target in its row of generated items (E, K), 0 if absent."""
    hit = items == targets[:, None]
    pos = hit.float().argmax(1) + 1
    return torch.where(hit.any(1), pos, torch.zeros_like(pos))


@torch.no_grad()
def generate(model, table: ExampleTable, *, num_beams: int = 10, top_k: int | None = None,
             batch_size: int = 256, constrained: bool = True, renormalize: bool = False,
             temperature: float = 1.0, teacher=None, progress: bool = False) -> dict[str, Any]:
    """Beam-search every row of `table`. Returns CPU tensors `items` (E, K), `scores` (E, K), the invalid
    counts and, with a teacher, `teacher_matches`: rows whose generated top-1 is the teacher's top-1."""
    from tqdm.auto import tqdm

    dev = model.device
    canonical = model.canonical_items()
    items, scores, matches = [], [], []
    invalid = total = 0
    was_training = model.training
    model.eval()
    batches = list(table.batches(batch_size))
    for rows in tqdm(batches, desc="decode", disable=not progress, leave=False):
        batch = model.collate(table, rows, with_targets=False).to(dev)
        out = beam_search(model, batch, num_beams=num_beams, top_k=top_k, constrained=constrained,
                          renormalize=renormalize, temperature=temperature)
        bad, tot = out.invalid_count()
        invalid, total = invalid + bad, total + tot
        items.append(out.items.cpu())
        scores.append(out.scores.cpu())
        if teacher is not None:
            t_logits = check_logits(teacher.item_logits(batch.histories), teacher_name(teacher))
            t_top1 = canonical[t_logits.argmax(1).to(canonical.device)]
            matches.append(round(collaborative_consistency(out.items[:, 0], t_top1) * len(rows)))  # a count
    if was_training:
        model.train()
    res = {"items": torch.cat(items), "scores": torch.cat(scores), "invalid": invalid, "hypotheses": total}
    if teacher is not None:
        res["teacher_matches"] = float(sum(matches))
    return res


def evaluate(model, examples: Examples | ExampleTable, *, teacher=None, protocol: str = "T",
             ks: tuple[int, ...] | None = None, num_beams: int = 10, batch_size: int = 256,
             constrained: bool = True, renormalize: bool | None = None, temperature: float | None = None,
             max_rows: int | None = None, progress: bool = False) -> dict[str, float]:
    """Metrics of `model` on `examples` (targets required): rank metrics at `ks` (default by protocol),
    `cc` (with a teacher), `coverage@K`, `invalid_rate`, `n_rows`, `num_beams`, `wall_time_s`.

    renormalize / temperature default to how the model was trained (`model.training_info`: MSL models
    decode with the softmax over allowed tokens, at the training temperature tau)."""
    info = getattr(model, "training_info", {}) or {}
    renormalize = bool(info.get("msl", False)) if renormalize is None else renormalize
    temperature = float(info.get("tau") or 1.0) if temperature is None else temperature
    ks = tuple(ks or ks_for(protocol))
    if max(ks) > num_beams:
        raise SemrecError(f"evaluation: cut-off {max(ks)} needs at least {max(ks)} beams, got {num_beams}")
    if isinstance(examples, Examples):
        if max_rows is not None and max_rows < len(examples):
            examples = examples.subset(np.arange(max_rows))
        table = ExampleTable.from_examples(examples, history_len_for(model, teacher))
    else:
        table = examples
        if max_rows is not None and max_rows < len(table):
            table = ExampleTable(table.histories[:max_rows], table.users[:max_rows], table.targets[:max_rows])
    if len(table) == 0:
        raise SemrecError("evaluation: no rows to evaluate")
    if teacher is not None:
        teacher.eval()
    t0 = time.perf_counter()
    if distributed.is_distributed():  # each rank decodes whole batches of its share; gathered in row order
        gen = _sharded_generate(model, table, num_beams=num_beams, batch_size=batch_size, constrained=constrained,
                                renormalize=renormalize, temperature=temperature, teacher=teacher,
                                progress=progress and distributed.is_main())
    else:
        gen = generate(model, table, num_beams=num_beams, batch_size=batch_size, constrained=constrained,
                       renormalize=renormalize, temperature=temperature, teacher=teacher, progress=progress)
    # items sharing one token sequence (identical titles) are one entry: compare canonical ids
    targets = model.canonical_items().cpu()[table.targets]
    ranks = target_ranks(gen["items"], targets)
    out = rank_metrics(ranks.numpy(), ks)
    n_items = model.codes.shape[0]
    k_max = gen["items"].shape[1]
    found = gen["items"][gen["items"] >= 0]
    out[f"coverage@{k_max}"] = float(torch.unique(found).numel() / n_items)
    out["invalid_rate"] = gen["invalid"] / gen["hypotheses"] if gen["hypotheses"] else 0.0
    if teacher is not None:
        out["cc"] = gen["teacher_matches"] / len(table)
    out["n_rows"] = len(table)
    out["num_beams"] = num_beams
    out["wall_time_s"] = time.perf_counter() - t0
    return out


def _sharded_generate(model, table: ExampleTable, *, batch_size: int, num_beams: int, teacher=None,
                      **kw: Any) -> dict[str, Any]:
    """`generate` over this rank's share of `table` (whole batches, so every batch is decoded exactly as
    in one process), gathered so that every rank holds the full result in row order."""
    lo, hi = distributed.shard_bounds(len(table), chunk=batch_size)
    if hi > lo:
        part = ExampleTable(table.histories[lo:hi], table.users[lo:hi], table.targets[lo:hi])
        gen = generate(model, part, num_beams=num_beams, batch_size=batch_size, teacher=teacher, **kw)
        items, scores = gen["items"], gen["scores"]
    else:  # more ranks than batches: an empty share of the right width
        gen = {"invalid": 0, "hypotheses": 0, "teacher_matches": 0.0}
        width = kw.get("top_k") or num_beams
        items, scores = torch.empty(0, width, dtype=torch.long), torch.empty(0, width)
    counts = distributed.all_reduce_sum(torch.tensor(
        [gen["invalid"], gen["hypotheses"], gen.get("teacher_matches", 0.0)], dtype=torch.float64))
    res = {"items": distributed.gather_cat(items), "scores": distributed.gather_cat(scores),
           "invalid": int(counts[0]), "hypotheses": int(counts[1])}
    if teacher is not None:
        res["teacher_matches"] = float(counts[2])
    return res


def result_row(model, metrics: dict, /, *, dataset: str, protocol: str, split: str, seed: int | None = None,
               **extra: Any) -> dict:
    """A JSON-able result row: {model, tokenizer, loss, alpha, tau, dataset, protocol, split, seed,
    metrics..., wall_time_s, device}; training facts come from `model.training_info` unless given."""
    info = getattr(model, "training_info", {}) or {}
    row = {
        "model": extra.pop("model", model.arch),
        "tokenizer": extra.pop("tokenizer", str(getattr(model.tokenization, "scheme", "unknown"))),
        "loss": extra.pop("loss", info.get("loss")),
        "alpha": extra.pop("alpha", info.get("alpha")),
        "tau": extra.pop("tau", info.get("tau")),
        "msl": extra.pop("msl", info.get("msl")),
        "dataset": dataset, "protocol": protocol, "split": split,
        "seed": seed if seed is not None else info.get("seed"),
    }
    row.update({k: v for k, v in metrics.items()})
    row.update(extra)
    row["device"] = describe_machine(model.device)
    return row
