"""Evaluate a generative recommender on a split with trie-constrained beam search.

Protocol T: HR/NDCG@{1,3,5,10}, beams 10 (TCA4Rec). Protocol P: Recall/NDCG@{5,10} (TIGER). `decode="exact"`
ranks the whole catalogue by each item's exact log-probability instead (`semrec.decoding.exact_search`: what
beam search approximates; much slower) and scores those top-K lists the same way. Both also
report collaborative consistency against a CF teacher (share of rows whose generated top-1 is the
teacher's top-1; `semrec.metrics.collaborative_consistency`), how personal the lists are (catalogue
coverage@K, distinct top-1 items, and with item popularity the share of slots taken by the 1% most
popular items: `semrec.metrics.list_diagnostics`) and the invalid rate (hypotheses that are no catalogue
item; 0 by construction when constrained).

The two reference recommenders, MostPop (the same most-popular list for every row) and Random (K
distinct items drawn uniformly per row), are scored by the same `score_lists` as the models.

    metrics = evaluate(model, dataset.test, teacher=teacher, protocol="T", popularity=pop)
    baseline = score_lists(most_popular_lists(pop, len(dataset.test), 10), dataset.test.targets, ...)
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
from semrec.decoding import beam_search, exact_search
from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable
from semrec.metrics import collaborative_consistency, list_diagnostics, rank_metrics
from semrec.runtime import describe_machine
from semrec.tca import exclude_history

PROTOCOL_KS = {"T": (1, 3, 5, 10), "P": (5, 10)}
DECODE_MODES = ("beam", "exact")


def ks_for(protocol: str) -> tuple[int, ...]:
    return PROTOCOL_KS.get(protocol, (1, 3, 5, 10))


def history_len_for(model, teacher=None, examples: Examples | None = None, *,
                    teacher_exclude_history: bool = False) -> int:
    """History columns to keep: what the model reads and what the teacher reads, whichever is longer; with a
    teacher ranking only unread items (`teacher_exclude_history`), every row's whole history in `examples`."""
    n = max(model.max_history, int(getattr(teacher, "max_len", 0) or 0))
    if teacher is not None and teacher_exclude_history and examples is not None:
        n = max(n, int(examples.lengths.max(initial=0)))
    return n


def target_ranks(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target in its row of generated items (E, K), 0 if absent."""
    hit = items == targets[:, None]
    pos = hit.float().argmax(1) + 1
    return torch.where(hit.any(1), pos, torch.zeros_like(pos))


def _length_order(model, table: ExampleTable) -> torch.Tensor:
    """(E,) the rows of `table` by the number of history items `model` reads (stable): batches of these
    consecutive rows are padded to about their own length, not to the longest history of the split."""
    return torch.argsort((table.histories[:, -model.max_history:] >= 0).sum(1), stable=True)


@torch.no_grad()
def generate(model, table: ExampleTable, *, num_beams: int = 10, top_k: int | None = None,
             batch_size: int = 256, constrained: bool = True, renormalize: bool = False,
             temperature: float = 1.0, teacher=None, progress: bool = False, decode: str = "beam",
             bf16: bool = False, edge_bias: torch.Tensor | None = None,
             teacher_exclude_history: bool = False) -> dict[str, Any]:
    """Beam-search every row of `table` (batches of rows of similar history length: `_length_order`;
    `decode="exact"`: the exact top-`top_k` lists, `num_beams` and `constrained` unused). Returns CPU tensors
    `items` (E, K), `scores` (E, K) in row order, the invalid counts and, with a teacher, `teacher_matches`:
    rows whose generated top-1 is the teacher's top-1 (among the items not in the row's history when
    `teacher_exclude_history`: a teacher ranked without the history, as it was scored). bf16: see
    `beam_search` (beam search only). edge_bias: (E,) scores added along the trie's edges in either decoding
    (`semrec.decoding.popularity_bias`)."""
    from tqdm.auto import tqdm

    dev = model.device
    canonical = model.canonical_items()
    items, scores, matches = [], [], []
    invalid = total = 0
    was_training = model.training
    model.eval()
    order = _length_order(model, table)
    batches = [order[lo:lo + batch_size] for lo in range(0, len(table), batch_size)]
    for rows in tqdm(batches, desc="decode", disable=not progress, leave=False):
        batch = model.collate(table, rows, with_targets=False).to(dev)
        if decode == "exact":
            out = exact_search(model, batch, top_k=top_k or num_beams, renormalize=renormalize,
                               temperature=temperature, edge_bias=edge_bias)
        else:
            out = beam_search(model, batch, num_beams=num_beams, top_k=top_k, constrained=constrained,
                              renormalize=renormalize, temperature=temperature, bf16=bf16, edge_bias=edge_bias)
        bad, tot = out.invalid_count()
        invalid, total = invalid + bad, total + tot
        items.append(out.items.cpu())
        scores.append(out.scores.cpu())
        if teacher is not None:
            t_logits = check_logits(teacher.item_logits(batch.histories), teacher_name(teacher))
            if teacher_exclude_history:
                t_logits = exclude_history(t_logits, table.histories[rows])
            t_top1 = canonical[t_logits.argmax(1).to(canonical.device)]
            matches.append(round(collaborative_consistency(out.items[:, 0], t_top1) * len(rows)))  # a count
    if was_training:
        model.train()
    back = torch.argsort(order)  # decoding order -> row order
    res = {"items": torch.cat(items)[back], "scores": torch.cat(scores)[back], "invalid": invalid, "hypotheses": total}
    if teacher is not None:
        res["teacher_matches"] = float(sum(matches))
    return res


def score_lists(items: torch.Tensor, targets, ks: tuple[int, ...], *, num_items: int,
                popularity=None) -> tuple[dict[str, float], np.ndarray]:
    """Rank metrics at `ks` and list diagnostics of recommended lists `items` (E, K) against `targets` (E,).

    Returns the metrics and the (E,) 1-based target ranks (0 = not in the list)."""
    targets = torch.as_tensor(np.asarray(targets)).long()
    ranks = target_ranks(torch.as_tensor(items).long(), targets).numpy()
    out = rank_metrics(ranks, ks)
    out.update(list_diagnostics(items, num_items, popularity))
    return out, ranks


def most_popular_lists(popularity, n_rows: int, k: int) -> torch.Tensor:
    """(n_rows, k): the k items of highest `popularity` (N,) counts (ties: lower id first), every row."""
    top = torch.argsort(-torch.as_tensor(np.asarray(popularity), dtype=torch.float64), stable=True)[:k]
    return top[None, :].expand(n_rows, -1).clone()


def random_lists(num_items: int, n_rows: int, k: int, *, seed: int = 0) -> torch.Tensor:
    """(n_rows, k): k distinct items per row, uniformly at random (seeded)."""
    if k > num_items:
        raise SemrecError(f"random lists: {k} items per row from a catalogue of {num_items}")
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n_rows, num_items, generator=gen).topk(k, dim=1).indices


def decoding_defaults(model, renormalize: bool | None = None, temperature: float | None = None) -> tuple[bool, float]:
    """(renormalize, temperature) to decode `model` with; those not given follow how it was trained
    (`model.training_info`: MSL models decode with the softmax over allowed tokens, at the training
    temperature tau)."""
    info = getattr(model, "training_info", {}) or {}
    renormalize = bool(info.get("msl", False)) if renormalize is None else renormalize
    temperature = float(info.get("tau") or 1.0) if temperature is None else temperature
    return renormalize, temperature


def evaluate(model, examples: Examples | ExampleTable, *, teacher=None, protocol: str = "T",
             ks: tuple[int, ...] | None = None, num_beams: int = 10, batch_size: int = 256,
             constrained: bool = True, renormalize: bool | None = None, temperature: float | None = None,
             max_rows: int | None = None, popularity=None, progress: bool = False, return_ranks: bool = False,
             decode: str = "beam", bf16: bool = False, edge_bias: torch.Tensor | None = None,
             teacher_exclude_history: bool = False) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """Metrics of `model` on `examples` (targets required): rank metrics at `ks` (default by protocol),
    `cc` (with a teacher; against its top-1 among the items not in the history when `teacher_exclude_history`,
    for a teacher scored that way), the list diagnostics (`coverage@K`, `distinct_top1`, `pop1%@K` when item
    `popularity` (N,) is given), `invalid_rate`, `n_rows`, `num_beams` (beam) or `decode` ("exact"),
    `wall_time_s`. With `return_ranks`, also the (E,) 1-based target ranks in the lists (0 = absent).

    decode "beam": `num_beams`-beam search. "exact": the top-max(ks) items of the exact scores
    (`semrec.decoding.exact_search`; `num_beams` unused). Both lists are counted alike: history items stay
    in the ranking (no decoding removes them), items sharing one token sequence are one entry (the smallest
    id, targets compared by it), and in exact lists equal scores rank the smaller item id first.

    renormalize / temperature default to how the model was trained (`decoding_defaults`). bf16: beam search
    under bf16 autocast on CUDA or a CPU with native bf16 (`semrec.decoding.beam_search`). edge_bias: (E,)
    scores added along the trie's edges in either decoding (`semrec.decoding.popularity_bias`)."""
    renormalize, temperature = decoding_defaults(model, renormalize, temperature)
    ks = tuple(ks or ks_for(protocol))
    if decode not in DECODE_MODES:
        raise SemrecError(f"evaluation: decode {decode!r}: expected one of {', '.join(DECODE_MODES)}")
    exact = decode == "exact"
    if exact and not constrained:
        raise SemrecError("evaluation: decode 'exact' ranks catalogue items only; constrained=False is for beams")
    if not exact and max(ks) > num_beams:
        raise SemrecError(f"evaluation: cut-off {max(ks)} needs at least {max(ks)} beams, got {num_beams}")
    if isinstance(examples, Examples):
        if max_rows is not None and max_rows < len(examples):
            examples = examples.subset(np.arange(max_rows))
        hist_len = history_len_for(model, teacher, examples, teacher_exclude_history=teacher_exclude_history)
        table = ExampleTable.from_examples(examples, hist_len)
    else:
        table = examples
        if max_rows is not None and max_rows < len(table):
            table = ExampleTable(table.histories[:max_rows], table.users[:max_rows], table.targets[:max_rows])
    if len(table) == 0:
        raise SemrecError("evaluation: no rows to evaluate")
    if teacher is not None:
        teacher.eval()
    t0 = time.perf_counter()
    kw = dict(num_beams=num_beams, top_k=max(ks) if exact else None, batch_size=batch_size, constrained=constrained,
              renormalize=renormalize, temperature=temperature, teacher=teacher, decode=decode, bf16=bf16,
              edge_bias=edge_bias, teacher_exclude_history=teacher_exclude_history)
    if distributed.is_distributed():  # each rank decodes whole batches of its share; gathered in row order
        gen = _sharded_generate(model, table, progress=progress and distributed.is_main(), **kw)
    else:
        gen = generate(model, table, progress=progress, **kw)
    # items sharing one token sequence (identical titles) are one entry: compare canonical ids
    targets = model.canonical_items().cpu()[table.targets]
    out, ranks = score_lists(gen["items"], targets, ks, num_items=model.codes.shape[0], popularity=popularity)
    out["invalid_rate"] = gen["invalid"] / gen["hypotheses"] if gen["hypotheses"] else 0.0
    if teacher is not None:
        out["cc"] = gen["teacher_matches"] / len(table)
    out["n_rows"] = len(table)
    if exact:
        out["decode"] = decode
    else:
        out["num_beams"] = num_beams
    out["wall_time_s"] = time.perf_counter() - t0
    return (out, ranks) if return_ranks else out


def _sharded_generate(model, table: ExampleTable, *, batch_size: int, num_beams: int, teacher=None,
                      **kw: Any) -> dict[str, Any]:
    """`generate` over this rank's share of `table` in length order (whole batches, so every batch is decoded
    exactly as in one process), gathered so that every rank holds the full result in row order."""
    order = _length_order(model, table)
    table = ExampleTable(table.histories[order], table.users[order], table.targets[order])
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
    back = torch.argsort(order)
    res = {"items": distributed.gather_cat(items)[back], "scores": distributed.gather_cat(scores)[back],
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
