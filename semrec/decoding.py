"""Batched trie-constrained beam search over item token sequences, for any GenerativeRecommender.

One Python loop over decoding steps; every step handles all B users x K beams at once: one cached
forward pass of the model (encoder run once for encoder-decoder models), allowed-token masks for all
beams from the prefix index's incremental (lo, hi) ranges, one top-k over beams x vocabulary.

Semantics are those of transformers' beam search with `length_penalty=0` (scores are sums of
log-probabilities): each step keeps the 2K best continuations; a continuation that completes an item
(fixed-length code filled, EOS emitted, or maximum length reached) joins the finished pool when it
ranks among the K best of the step; the K best unfinished ones continue. A user's search ends once
its pool holds K hypotheses and no running beam scores above the pool's worst (log-probabilities only
decrease, so nothing better can come). Returned: the finished hypotheses, best first, mapped to item ids.

`constrained=False` decodes without the trie (only lengths and EOS end a hypothesis); hypotheses that
are no catalogue item get item id -1 and count in `invalid_rate`.

Exact scoring (`score_catalogue`, `exact_search`) is what beam search approximates: the teacher-forced
log-probability of every catalogue item's whole token sequence, summed over its tokens with the same
per-token log-probabilities as the beam (`next_token_log_probs`). It walks the prefix index depth first
with the model's cached `step`, so each distinct prefix is fed once per user (B x number of trie prefixes
rows in all, not B x N whole sequences), `chunk_rows` rows per forward pass.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from semrec.errors import SemrecError
from semrec.runtime import bf16_autocast


@dataclass
class BeamSearchOutput:
    """items (B, K) item ids (-1: not a catalogue item or no hypothesis), scores (B, K) sums of
    log-probabilities (-inf: no hypothesis), sequences (B, K, L) tokens right-padded with pad_id."""

    items: torch.Tensor
    scores: torch.Tensor
    sequences: torch.Tensor

    @property
    def found(self) -> torch.Tensor:
        """(B, K) bool: a hypothesis exists in this slot."""
        return torch.isfinite(self.scores)

    def invalid_count(self) -> tuple[int, int]:
        """(hypotheses that are no catalogue item, hypotheses returned)."""
        found = self.found
        return int((found & (self.items < 0)).sum()), int(found.sum())

    @property
    def invalid_rate(self) -> float:
        bad, total = self.invalid_count()
        return bad / total if total else 0.0


def next_token_log_probs(logits: torch.Tensor, allowed: torch.Tensor | None, *, renormalize: bool = False,
                         temperature: float = 1.0) -> torch.Tensor:
    """(R, V) logits -> float32 log-probabilities with disallowed tokens at -inf.

    renormalize=False: log_softmax over the whole vocabulary, then masking (what generate() with
    prefix_allowed_tokens_fn scores). renormalize=True: softmax over the allowed tokens only (matches
    models trained with MSL)."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    if allowed is None:
        return torch.log_softmax(x, -1)
    if renormalize:
        x = x.masked_fill(~allowed, -math.inf)
    out = torch.log_softmax(x, -1)
    return out.masked_fill_(~allowed, -math.inf)  # in place on the fresh output; also clears NaN rows


def popularity_bias(index, popularity, strength: float) -> torch.Tensor:
    """(E,) edge scores that subtract `strength` x log P_pop(item) from every item's decoding score, P_pop
    being the add-one smoothed training popularity (N,) counts: logit adjustment (Menon et al., 2021) spread
    over the trie's edges, so that beam search applies it token by token. strength 0: no change."""
    counts = torch.as_tensor(popularity, dtype=torch.float64)
    if counts.shape != (index.num_items,) or bool((counts < 0).any()):
        raise SemrecError(f"popularity_bias: expected non-negative counts of shape ({index.num_items},), got "
                          + (f"shape {tuple(counts.shape)}" if counts.shape != (index.num_items,) else "a negative one"))
    return -float(strength) * index.edge_log_share(counts + 1.0)


def _check_bias(index, edge_bias: torch.Tensor | None) -> None:
    if edge_bias is not None and tuple(edge_bias.shape) != (index.num_edges,):
        raise SemrecError(f"edge_bias: expected one value per trie edge ({index.num_edges},), "
                          f"got shape {tuple(edge_bias.shape)}")


def _fixed_length(codes: torch.Tensor, pad_id: int) -> bool:
    return not bool((codes == pad_id).any())


@torch.no_grad()
def beam_search(model, batch, *, num_beams: int = 10, top_k: int | None = None, constrained: bool = True,
                renormalize: bool = False, temperature: float = 1.0, max_len: int | None = None,
                bf16: bool = False, edge_bias: torch.Tensor | None = None) -> BeamSearchOutput:
    """Top-`top_k` (default `num_beams`) items per user of `batch` (a Batch on the model's device).

    model: a GenerativeRecommender (prefill / expand_state / step hooks, prefix_index(), pad_id, eos_id).
    bf16: run the model under bf16 autocast where that pays (CUDA, or a CPU with native bf16; elsewhere
    float32: `semrec.runtime.bf16_autocast`); beam scores are summed in float32 either way.
    edge_bias: (E,) a score added to the log-probability of each trie edge (`popularity_bias`); scores and
    rankings are then of the biased sums. Needs `constrained`.
    """
    if num_beams < 1:
        raise SemrecError(f"num_beams must be >= 1, got {num_beams}")
    top_k = num_beams if top_k is None else top_k
    if not 1 <= top_k <= num_beams:
        raise SemrecError(f"top_k must be in 1..num_beams ({num_beams}), got {top_k}")
    if edge_bias is not None and not constrained:
        raise SemrecError("beam_search: edge_bias scores trie edges; it needs constrained=True")
    dev = model.device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16_autocast(dev, bf16)):
        return _search(model, batch, num_beams, top_k, constrained, renormalize, temperature, max_len, edge_bias)


def _search(model, batch, k: int, top_k: int, constrained: bool, renormalize: bool, temperature: float,
            max_len: int | None, edge_bias: torch.Tensor | None) -> BeamSearchOutput:
    """`beam_search` with `k` beams, its arguments checked."""
    index = model.prefix_index()
    _check_bias(index, edge_bias)
    pad, eos = model.pad_id, model.eos_id
    max_len = index.max_len if max_len is None else max_len
    fixed = _fixed_length(model.codes, pad)
    was_training = model.training
    model.eval()

    logits, state = model.prefill(batch)
    b, v = logits.shape
    dev = logits.device
    state = model.expand_state(state, k)
    rows = torch.arange(b, device=dev)[:, None] * k  # first global row of each user's beams
    n_cand = min(2 * k, k * v)
    pos = torch.arange(n_cand, device=dev)

    lo, hi = index.root(b * k)
    run_scores = torch.full((b, k), -math.inf, device=dev)
    run_scores[:, 0] = 0.0
    run_seqs = torch.empty((b, k, 0), dtype=torch.long, device=dev)
    fin_scores = torch.full((b, k), -math.inf, device=dev)
    fin_items = torch.full((b, k), -1, dtype=torch.long, device=dev)
    fin_seqs = torch.full((b, k, max_len), pad, dtype=torch.long, device=dev)

    for t in range(max_len):
        if t > 0:
            logits, state = model.step(state, last_tokens, parent)
            allowed = index.next_token_mask(lo, hi, t) if constrained else None
            logp = next_token_log_probs(logits, allowed, renormalize=renormalize, temperature=temperature)
            if edge_bias is not None:
                logp += index.next_token_values(lo, hi, t, edge_bias)
            cand = logp.view(b, k, v).add_(run_scores[:, :, None]).view(b, k * v)  # in place: no 2nd (B*K, V)
        else:  # all of a user's beams are the empty prefix: score its one row (beam 0, score 0)
            allowed = index.next_token_mask(lo[rows[:, 0]], hi[rows[:, 0]], 0) if constrained else None
            cand = next_token_log_probs(logits, allowed, renormalize=renormalize, temperature=temperature)
            if edge_bias is not None:
                cand += index.next_token_values(lo[rows[:, 0]], hi[rows[:, 0]], 0, edge_bias)
            if v < n_cand:  # columns past v stand for the dead beams 1.. and are never alive
                cand = torch.nn.functional.pad(cand, (0, n_cand - v), value=-math.inf)
        top_s, top_i = cand.topk(n_cand, dim=1)  # (B, 2K), best first
        beam, tok = top_i // v, top_i % v
        gbeam = (rows + beam).view(-1)
        ftok = tok.view(-1)
        clo, chi = index.step(lo[gbeam], hi[gbeam], ftok, t)
        bad = ftok == pad  # padding is never a generated token
        clo, chi = torch.where(bad, 0, clo), torch.where(bad, 0, chi)
        if t + 1 == max_len:
            complete = torch.ones_like(top_s, dtype=torch.bool)
        elif fixed and constrained:
            complete = torch.zeros_like(top_s, dtype=torch.bool)
        elif not constrained and eos is not None:
            complete = tok == eos
        else:
            complete = index.range_is_complete(clo, chi, t + 1).view(b, n_cand)
        alive = torch.isfinite(top_s)
        seqs = torch.cat([run_seqs.gather(1, beam[:, :, None].expand(-1, -1, t)), tok[:, :, None]], 2)

        # finished pool: merge the completed continuations ranked among the K best of this step
        new_fin = complete & alive & (pos < k)
        if bool(new_fin.any()):
            items = index.range_item(clo, chi, t + 1).view(b, n_cand)
            padded = torch.full((b, n_cand, max_len), pad, dtype=torch.long, device=dev)
            # candidates that do not join carry an empty slot's (-inf, -1, padding): a pool with fewer than K
            # hypotheses must not take one of them into its empty slots
            padded[:, :, : t + 1] = seqs.masked_fill(~new_fin[:, :, None], pad)
            m_scores = torch.cat([fin_scores, torch.where(new_fin, top_s, -math.inf)], 1)
            m_items = torch.cat([fin_items, torch.where(new_fin, items, -1)], 1)
            m_seqs = torch.cat([fin_seqs, padded], 1)
            fin_scores, j = m_scores.topk(k, dim=1)
            fin_items = m_items.gather(1, j)
            fin_seqs = m_seqs.gather(1, j[:, :, None].expand(-1, -1, max_len))
        if t + 1 == max_len:
            break

        # running beams: the K best unfinished continuations
        run_scores, j = torch.where(complete, -math.inf, top_s).topk(k, dim=1)
        run_seqs = seqs.gather(1, j[:, :, None].expand(-1, -1, t + 1))
        flat_j = (torch.arange(b, device=dev)[:, None] * n_cand + j).view(-1)
        lo, hi = clo[flat_j], chi[flat_j]
        parent = gbeam[flat_j]
        last_tokens = ftok[flat_j]
        done = ~torch.isfinite(run_scores[:, 0]) | (torch.isfinite(fin_scores[:, -1])
                                                     & (run_scores[:, 0] <= fin_scores[:, -1]))
        if bool(done.all()):
            break

    if was_training:
        model.train()
    return BeamSearchOutput(items=fin_items[:, :top_k], scores=fin_scores[:, :top_k], sequences=fin_seqs[:, :top_k])


@torch.no_grad()
def score_catalogue(model, batch, *, renormalize: bool = False, temperature: float = 1.0,
                    chunk_rows: int = 4096, edge_bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) float32: log P(item's whole token sequence | user) of every catalogue item for every user of
    `batch` (a Batch on the model's device); items sharing a token sequence get the same score.

    The per-token log-probabilities are those beam search sums (`renormalize`, `temperature`: see
    `next_token_log_probs`). `chunk_rows` bounds the rows (users x prefixes) of one forward pass: each
    user's prefixes are fed `max(1, chunk_rows // B)` at a time. Its (rows, V) logits set the memory:
    lower it for large vocabularies (title tokens). The default was the fastest for a small TIGER on one
    CPU thread (2,048 to 8,192 within 10%). edge_bias: as in `beam_search`, added along each item's edges."""
    if chunk_rows < 1:
        raise SemrecError(f"chunk_rows must be >= 1, got {chunk_rows}")
    index = model.prefix_index()
    _check_bias(index, edge_bias)
    was_training = model.training
    model.eval()
    logits, state = model.prefill(batch)
    b = logits.shape[0]
    width = max(1, chunk_rows // b)
    walk = _TrieWalk(model, index, b, width, renormalize, temperature, edge_bias)
    lo, hi = index.root(1)
    root = walk.children(walk.log_probs(logits[:, None], lo, hi, 0), lo, hi,
                         logits.new_zeros((b, 1), dtype=torch.float32), 0)
    del logits
    walk.visit(state, 1, *root, 1)
    if was_training:
        model.train()
    return walk.scores[:, model.canonical_items()]


@torch.no_grad()
def exact_search(model, batch, *, top_k: int = 10, renormalize: bool = False, temperature: float = 1.0,
                 chunk_rows: int = 4096, edge_bias: torch.Tensor | None = None) -> BeamSearchOutput:
    """The `top_k` catalogue entries of highest `score_catalogue` score per user, best first, as a
    BeamSearchOutput (what `beam_search` returns when its beams cover the catalogue).

    As in beam search, items sharing one token sequence are one entry (the smallest item id) and nothing is
    excluded (history items stay in the ranking). Equal scores rank the smaller item id first. Slots past
    the catalogue's distinct entries hold item -1 and score -inf."""
    if top_k < 1:
        raise SemrecError(f"top_k must be >= 1, got {top_k}")
    scores = score_catalogue(model, batch, renormalize=renormalize, temperature=temperature, chunk_rows=chunk_rows,
                             edge_bias=edge_bias)
    canonical = model.canonical_items()
    scores[:, canonical != torch.arange(len(canonical), device=canonical.device)] = -math.inf
    top, items = scores.sort(dim=1, descending=True, stable=True)
    top, items = top[:, :top_k], items[:, :top_k]
    if top.shape[1] < top_k:  # a catalogue smaller than top_k
        top = torch.nn.functional.pad(top, (0, top_k - top.shape[1]), value=-math.inf)
        items = torch.nn.functional.pad(items, (0, top_k - items.shape[1]), value=-1)
    items = torch.where(torch.isfinite(top), items, -1)
    seqs = model.codes[items.clamp(min=0)].masked_fill((items < 0)[:, :, None], model.pad_id)
    return BeamSearchOutput(items=items, scores=top, sequences=seqs)


class _TrieWalk:
    """The depth-first walk of `score_catalogue`: B users, at most `width` prefixes per user in a forward."""

    def __init__(self, model, index, b: int, width: int, renormalize: bool, temperature: float,
                 edge_bias: torch.Tensor | None):
        self.model, self.index, self.b, self.width = model, index, b, width
        self.renormalize, self.temperature, self.edge_bias = renormalize, temperature, edge_bias
        self.scores = torch.full((b, index.num_items), -math.inf, device=index.device)
        self.users = torch.arange(b, device=index.device)[:, None]

    def log_probs(self, logits: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, depth: int) -> torch.Tensor:
        """(B, c, V) next-token log-probabilities at the c prefixes (lo, hi) of length `depth`."""
        allowed = self.index.next_token_mask(lo, hi, depth) if self.renormalize else None  # (c, V), broadcast
        return next_token_log_probs(logits, allowed, renormalize=self.renormalize, temperature=self.temperature)

    def children(self, logp: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, score: torch.Tensor,
                 depth: int) -> tuple[torch.Tensor, ...]:
        """The C children of c prefixes of length `depth` with index ranges lo, hi (c,), log-probabilities
        score (B, c) and next-token log-probabilities logp (B, c, V): (parent (C,) in 0..c-1, token (C,),
        lo (C,), hi (C,), score (B, C))."""
        index = self.index
        a, e = index.children(lo, hi, depth)
        counts = e - a
        parent = torch.repeat_interleave(torch.arange(len(lo), device=lo.device), counts)
        first = torch.cumsum(counts, 0) - counts
        edges = a[parent] + torch.arange(len(parent), device=lo.device) - first[parent]
        tok = index.edge_tok[edges]
        score = score[:, parent] + logp[:, parent, tok]
        if self.edge_bias is not None:
            score += self.edge_bias[edges]
        return parent, tok, index.edge_lo[edges], index.edge_hi[edges], score

    def visit(self, state, rows: int, parent: torch.Tensor, tok: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
              score: torch.Tensor, depth: int) -> None:
        """Prefixes of length `depth` as `children` returns them, their parents in `state` (`rows` per user,
        row u * rows + j: parent j of user u). Complete ones write their score at their smallest item id;
        the ones that continue are fed `width` at a time and walked into."""
        index = self.index
        item = index.range_item(lo, hi, depth)
        done = item >= 0
        self.scores[:, item[done]] = score[:, done]
        if depth >= index.max_len:
            return
        a, e = index.children(lo, hi, depth)
        inner = (e > a).nonzero().squeeze(1)
        for start in range(0, len(inner), self.width):
            sel = inner[start:start + self.width]
            last = start + self.width >= len(inner)
            st = state if last or self.model.state_is_reusable else copy.deepcopy(state)
            logits, nstate = self.model.step(st, tok[sel].repeat(self.b), (self.users * rows + parent[sel]).view(-1))
            logp = self.log_probs(logits.reshape(self.b, len(sel), -1), lo[sel], hi[sel], depth)
            del logits  # the walk holds no (B, width, V) tensor of a level while it walks the levels below
            kids = self.children(logp, lo[sel], hi[sel], score[:, sel], depth)
            del logp
            self.visit(nstate, len(sel), *kids, depth + 1)
