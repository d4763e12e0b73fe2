"""Collaborative Tokenizer (CT): item-level CF scores -> next-token distributions along a target path.

Row [b, j] of the result is p_u(. | targets[b, :j]) (PAPER_NOTES section 1): the softmax of
item_logits[b] / temperature over the items whose first j tokens equal the target's and that have a
j-th token, summed by that j-th token. It is all zeros where no item continues the prefix or where
targets[b, j] is padding.

Options: `temperature` divides the teacher logits; `top_k` keeps only each row's k highest-scoring items
(the rest get probability 0), so a position none of whose candidates is in the top k gets an all-zero
row (the losses then fall back to the one-hot). Items with -inf logits are excluded the same way.

- :func:`collaborative_token_distribution`: plain-tensor functional form (loops over positions, works on
  (B, N) tensors at a time, never on (B, N, L)).
- :class:`CollaborativeTokenizer`: trie-backed form for training. It walks the targets through a
  :class:`~semrec.trie.PrefixIndex`; at position 0 the candidates are the whole catalogue (a dense
  softmax over (B, N), a few rows at a time, so no (B, N) temporary is made for large catalogues); deeper
  candidates are contiguous sorted ranges, gathered flat (in bounded chunks) and reduced with
  ``scatter_reduce_``/``index_add_``. It returns the dense (B, L, V) tensor or a
  :class:`SparseTokenDistribution` (CSR: one entry per allowed next token; for 50k-token vocabularies).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semrec.errors import SemrecError
from semrec.trie import PrefixIndex, check_token_rows

# Flat candidate elements processed at once for positions >= 1 (bounds the CT's working memory).
CT_CANDIDATES_PER_CHUNK = 1 << 20
# Teacher scores (rows x items) soft-maxed at once at position 0, per device type: on the CPU a few MiB, so
# that the softmax is still in cache when it is summed per first token.
CT_FIRST_SCORES_PER_CHUNK = {"cpu": 1 << 20, "cuda": 1 << 23}


@dataclass
class SparseTokenDistribution:
    """A sparse (B, L, V) next-token distribution in CSR form over the B * L positions (row r = b * L + j).

    Entries ``ptr[r]:ptr[r + 1]`` of ``tokens`` are the trie-allowed next tokens after ``targets[b, :j]``
    (ascending) and ``values`` their probabilities; a position whose target is padding has no entries.
    Size: one entry per allowed token (at position 0 every row lists the root's children), so a
    50k-token vocabulary costs nothing extra.
    """

    ptr: torch.Tensor  # (B * L + 1,) long
    tokens: torch.Tensor  # (M,) long
    values: torch.Tensor  # (M,) float
    shape: tuple[int, int, int]  # (B, L, V)

    @property
    def vocab_size(self) -> int:
        return self.shape[2]

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def counts(self) -> torch.Tensor:
        """LongTensor (B, L): number of allowed next tokens per position."""
        return (self.ptr[1:] - self.ptr[:-1]).view(self.shape[0], self.shape[1])

    def rows(self) -> torch.Tensor:
        """LongTensor (M,): flat position b * L + j of every entry."""
        n_pos = self.shape[0] * self.shape[1]
        return torch.repeat_interleave(torch.arange(n_pos, device=self.device), self.ptr[1:] - self.ptr[:-1],
                                       output_size=self.tokens.numel())

    def to(self, device: torch.device | str) -> "SparseTokenDistribution":
        return SparseTokenDistribution(self.ptr.to(device), self.tokens.to(device), self.values.to(device),
                                       self.shape)

    def to_dense(self) -> torch.Tensor:
        """The dense (B, L, V) tensor."""
        out = torch.zeros(self.shape[0] * self.shape[1], self.shape[2], dtype=self.values.dtype, device=self.device)
        out[self.rows(), self.tokens] = self.values
        return out.view(self.shape)

    def allowed_mask(self) -> torch.Tensor:
        """BoolTensor (B, L, V): the trie-allowed next tokens (the MSL mask)."""
        mask = torch.zeros(self.shape[0] * self.shape[1], self.shape[2], dtype=torch.bool, device=self.device)
        mask[self.rows(), self.tokens] = True
        return mask.view(self.shape)

    def padded(self, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices (B, L, K), values (B, L, K), counts (B, L)): entries k < counts are real, the rest are
        index 0 / value 0. K defaults to the largest count (a position-0 row of a title trie is wide)."""
        b, length, _ = self.shape
        counts = self.counts
        k = int(counts.max()) if k is None and counts.numel() else (k or 0)
        rows = self.rows()
        slot = torch.arange(self.tokens.numel(), device=self.device) - self.ptr[rows]
        keep = slot < k
        idx = torch.zeros(b * length, k, dtype=torch.long, device=self.device)
        val = torch.zeros(b * length, k, dtype=self.values.dtype, device=self.device)
        idx[rows[keep], slot[keep]] = self.tokens[keep]
        val[rows[keep], slot[keep]] = self.values[keep]
        return idx.view(b, length, k), val.view(b, length, k), counts.clamp(max=k)


def _teacher_scores(item_logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """item_logits / temperature in float32 (float64 kept), everything outside each row's top-k at -inf."""
    if not isinstance(item_logits, torch.Tensor) or item_logits.dim() != 2 or not item_logits.is_floating_point():
        shape = tuple(item_logits.shape) if isinstance(item_logits, torch.Tensor) else type(item_logits).__name__
        raise SemrecError(f"item_logits: expected a float tensor (batch, num_items), got {shape}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise SemrecError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
        raise SemrecError(f"top_k must be a positive int or None, got {top_k!r}")
    if item_logits.numel() and not bool(item_logits.max() < float("inf")):  # max propagates NaN
        raise SemrecError("item_logits: contains NaN or +inf")
    dtype = torch.promote_types(item_logits.dtype, torch.float32)
    s = item_logits.detach().to(dtype)  # no copy for float32/float64 input; never modified in place
    if temperature != 1:
        s = s / temperature
    if top_k is not None and top_k < s.shape[1]:
        keep = torch.zeros_like(s, dtype=torch.bool).scatter_(1, s.topk(top_k, dim=1).indices, True)
        s = s.masked_fill(~keep, float("-inf"))
    return s


def exclude_history(item_logits: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """A copy of item_logits (B, N) with each row's history items (B, H) long, -1 = padding, set to -inf.

    A teacher trained on repeat-heavy sequences may spend most of its mass on the last item read (SASRec
    on Office: its top item is the row's last history item on 86% of train rows, while 3-10% of targets
    are repeats); without them the soft labels carry its ranking of the items the user has not seen.
    That ranking is much the same for every user: with a large TCA alpha the student follows it instead
    of the target (Toys at alpha .5); use it with a small alpha (.1 did no harm on Toys and Office).
    """
    if histories.dim() != 2 or histories.shape[0] != item_logits.shape[0]:
        raise SemrecError(f"histories: expected ({item_logits.shape[0]}, H) item ids, got {tuple(histories.shape)}")
    h = histories.to(item_logits.device).long()
    if h.numel() and int(h.max()) >= item_logits.shape[1]:
        raise SemrecError(f"histories: item id {int(h.max())} outside 0..{item_logits.shape[1] - 1}")
    b, n = item_logits.shape
    seen = torch.zeros(b, n + 1, dtype=torch.bool, device=item_logits.device)  # column n: padding
    seen.scatter_(1, torch.where(h >= 0, h, torch.full_like(h, n)), True)
    return item_logits.masked_fill(seen[:, :n], float("-inf"))


def collaborative_token_distribution(item_logits: torch.Tensor, item_tokens: torch.Tensor, targets: torch.Tensor,
                                     *, vocab_size: int, pad_id: int, temperature: float = 1.0,
                                     top_k: int | None = None) -> torch.Tensor:
    """Dense CF next-token distributions (B, L, V) along each target path (see module docstring).

    item_logits (B, N) float: teacher scores; item_tokens (N, Li) long right-padded with pad_id;
    targets (B, L) long right-padded with pad_id. Rows sum to 1 where some item continues the prefix.
    """
    s = _teacher_scores(item_logits, temperature, top_k)
    check_token_rows(item_tokens, pad_id, vocab_size, "item_tokens")
    check_token_rows(targets, pad_id, vocab_size, "targets")
    b, n = s.shape
    if item_tokens.shape[0] != n:
        raise SemrecError(f"item_tokens has {item_tokens.shape[0]} rows but item_logits has {n} items")
    if targets.shape[0] != b:
        raise SemrecError(f"targets has {targets.shape[0]} rows but item_logits has {b}")
    dev = s.device
    item_tokens, targets = item_tokens.to(dev).long(), targets.to(dev).long()
    length = targets.shape[1]
    out = torch.zeros(b, length, vocab_size, dtype=s.dtype, device=dev)
    match = torch.ones(b, n, dtype=torch.bool, device=dev)  # item's first j tokens == target's
    for j in range(length):
        col = item_tokens[:, j] if j < item_tokens.shape[1] else torch.full((n,), pad_id, device=dev)
        has = col != pad_id
        cand = match & has.unsqueeze(0) & (targets[:, j] != pad_id).unsqueeze(1)
        sj = s.masked_fill(~cand, float("-inf"))
        m = sj.max(dim=1, keepdim=True).values
        w = torch.exp(sj - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
        tot = w.sum(dim=1, keepdim=True)
        p = w / torch.where(tot > 0, tot, torch.ones_like(tot))
        out[:, j].index_add_(1, torch.where(has, col, torch.zeros_like(col)), p)
        match &= col.unsqueeze(0) == targets[:, j : j + 1]
    return out


def _children_along(ix: PrefixIndex, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Children slices (a, c) (B, L) of each prefix targets[:, :j] where targets[:, j] is a token
    (zeros elsewhere); SemrecError when a row is not a prefix path of the index."""
    b, length = targets.shape
    real = targets != ix.pad_id
    a_out = torch.zeros(b, length, dtype=torch.long, device=ix.device)
    c_out = torch.zeros_like(a_out)
    eff = int(real.sum(1).max()) if b and length else 0  # positions past every target are all zero
    lo, hi = ix.root(b)
    for j in range(eff):
        a, c = ix.children(lo, hi, j)
        a_out[:, j], c_out[:, j] = a, c
        lo, hi = ix.step(lo, hi, targets[:, j], j)
    invalid = real.any(1) & (hi <= lo)  # an unmatched token empties the range for good
    if bool(invalid.any()):
        r = int(invalid.nonzero()[0, 0])
        lo, hi = ix.root(1)
        for j, tok in enumerate(targets[r].tolist()):
            lo, hi = ix.step(lo, hi, torch.tensor([tok], device=ix.device), j)
            if int(hi[0]) <= int(lo[0]):
                seq = targets[r, : j + 1].tolist()
                raise SemrecError(f"targets: row {r} is not a prefix path of any item: no item starts with "
                                  f"{seq} (token {tok} at position {j})")
    return a_out * real, c_out * real


def _allowed_csr(ix: PrefixIndex, targets: torch.Tensor):
    """(a, c, ptr, tokens): children slices (B, L) and the CSR of the allowed next tokens along targets."""
    a, c = _children_along(ix, targets)
    b, length = targets.shape
    counts = (c - a).reshape(-1)
    ptr = torch.zeros(b * length + 1, dtype=torch.long, device=ix.device)
    ptr[1:] = torch.cumsum(counts, 0)
    m = int(ptr[-1])
    rows = torch.repeat_interleave(torch.arange(b * length, device=ix.device), counts, output_size=m)
    slot = torch.arange(m, device=ix.device) - ptr[rows]
    return a, c, ptr, ix.edge_tok[a.reshape(-1)[rows] + slot]


def allowed_along(index: PrefixIndex, targets: torch.Tensor) -> SparseTokenDistribution:
    """The trie-allowed next tokens at every position of each target path (the MSL mask) in sparse form,
    without a teacher: values are all zero, so use it as `allowed=`, not as `cf_probs`.

    targets (B, L) right-padded with pad_id; positions whose target is padding allow nothing."""
    check_token_rows(targets, index.pad_id, index.vocab_size, "targets")
    _, _, ptr, tokens = _allowed_csr(index, targets.to(index.device).long())
    return SparseTokenDistribution(ptr, tokens, torch.zeros(tokens.numel(), device=index.device),
                                   (targets.shape[0], targets.shape[1], index.vocab_size))


class CollaborativeTokenizer:
    """Trie-backed Collaborative Tokenizer: same numbers as :func:`collaborative_token_distribution`,
    without materialising (B, N, L).

    ``ct(item_logits (B, N), targets (B, L))`` -> dense (B, L, V);
    ``ct(item_logits, targets, sparse=True)`` -> :class:`SparseTokenDistribution`.
    Every target row must be a path of the index (a prefix of some item's sequence, right-padded).
    """

    def __init__(self, index: PrefixIndex, temperature: float = 1.0, top_k: int | None = None):
        if not isinstance(index, PrefixIndex):
            raise SemrecError(f"CollaborativeTokenizer needs a PrefixIndex, got {type(index).__name__}")
        _teacher_scores(torch.zeros(1, 1), temperature, top_k)  # validates the options
        self.index = index
        self.temperature = float(temperature)
        self.top_k = top_k

    def to(self, device: torch.device | str) -> "CollaborativeTokenizer":
        return CollaborativeTokenizer(self.index.to(device), self.temperature, self.top_k)

    def __call__(self, item_logits: torch.Tensor, targets: torch.Tensor, *, sparse: bool = False):
        dist = self.sparse(item_logits, targets)
        return dist if sparse else dist.to_dense()

    def sparse(self, item_logits: torch.Tensor, targets: torch.Tensor) -> SparseTokenDistribution:
        """The CF next-token distributions in sparse (CSR) form."""
        ix = self.index
        s = _teacher_scores(item_logits, self.temperature, self.top_k)
        check_token_rows(targets, ix.pad_id, ix.vocab_size, "targets")
        b, n = s.shape
        if n != ix.num_items:
            raise SemrecError(f"item_logits has {n} items but the prefix index has {ix.num_items}")
        if targets.shape[0] != b:
            raise SemrecError(f"targets has {targets.shape[0]} rows but item_logits has {b}")
        if s.device != ix.device:
            raise SemrecError(f"item_logits are on {s.device} but the prefix index is on {ix.device} "
                              "(use CollaborativeTokenizer.to(device))")
        a, c, ptr, tokens = _allowed_csr(ix, targets.to(ix.device).long())
        length, m = targets.shape[1], tokens.numel()
        values = torch.zeros(m, dtype=s.dtype, device=ix.device)
        if m:
            first = c[:, 0] > a[:, 0]
            if bool(first.any()):
                self._first_position(s, first, values, ptr[first.nonzero().squeeze(1) * length])
            self._deeper_positions(s, a, c, values, ptr)
        return SparseTokenDistribution(ptr, tokens, values, (b, length, ix.vocab_size))

    # ------------------------------------------------------------------ internals
    def _first_position(self, s: torch.Tensor, active: torch.Tensor, values: torch.Tensor,
                        starts: torch.Tensor) -> None:
        """Position 0: softmax over the whole catalogue, summed per first token (dense (B, N) work).
        `starts` (A,): offset in `values` of the position-0 entries of each active row."""
        ix = self.index
        rows = active.nonzero().squeeze(1)
        k0 = ix.branching(0)
        sums = torch.zeros(rows.numel(), k0, dtype=s.dtype, device=s.device)
        per_chunk = CT_FIRST_SCORES_PER_CHUNK.get(s.device.type, CT_FIRST_SCORES_PER_CHUNK["cuda"])
        step = max(1, per_chunk // max(1, s.shape[1]))  # rows at once: no (B, N) temporaries
        every = rows.numel() == s.shape[0]  # every row active: slices of s, no gathered copies
        for r0 in range(0, rows.numel(), step):
            sr = s[r0:r0 + step] if every else s[rows[r0:r0 + step]]
            p = torch.softmax(sr, dim=1)
            masked = ~torch.isfinite(sr.amax(dim=1))  # every item at -inf: softmax gives NaN, want zeros
            if bool(masked.any()):
                p[masked] = 0.0
            sums[r0:r0 + step].scatter_add_(1, ix.first_slot.expand(sr.shape[0], -1), p)
        values[(starts.unsqueeze(1) + torch.arange(k0, device=s.device)).reshape(-1)] = sums.reshape(-1)

    def _deeper_positions(self, s: torch.Tensor, a: torch.Tensor, c: torch.Tensor, values: torch.Tensor,
                          ptr: torch.Tensor) -> None:
        """Positions >= 1: per (row, position) pair, a softmax over its contiguous candidate range."""
        ix = self.index
        n, length = ix.num_items, a.shape[1]
        counts = (c - a)[:, 1:]
        pb, pj = (counts > 0).nonzero(as_tuple=True)
        if pb.numel() == 0:
            return
        pj = pj + 1
        pa, pc = a[pb, pj], c[pb, pj]
        clo = ix.edge_lo[pa]
        size = ix.edge_hi[pc - 1] - clo  # candidates: the union of the children ranges
        ends = torch.cumsum(size, 0)
        # Chunk boundaries so that each chunk holds at most CT_CANDIDATES_PER_CHUNK candidates (or one pair).
        cuts = torch.searchsorted(ends, torch.arange(1, int(ends[-1]) // CT_CANDIDATES_PER_CHUNK + 1,
                                                     device=ends.device) * CT_CANDIDATES_PER_CHUNK, right=True)
        bounds = sorted({0, pb.numel(), *[int(x) for x in cuts.tolist()]})
        for p0, p1 in zip(bounds[:-1], bounds[1:]):
            if p1 <= p0:
                continue
            sz, lo0, a0, bb, jj = size[p0:p1], clo[p0:p1], pa[p0:p1], pb[p0:p1], pj[p0:p1]
            cnt = pc[p0:p1] - a0
            kp = int(cnt.max())
            npairs = p1 - p0
            total = int(ends[p1 - 1]) - (int(ends[p0 - 1]) if p0 else 0)
            pair = torch.repeat_interleave(torch.arange(npairs, device=s.device), sz, output_size=total)
            start = torch.cumsum(sz, 0) - sz
            pos = lo0[pair] + torch.arange(total, device=s.device) - start[pair]
            val = s[bb[pair], ix.sorted_items[pos]]
            edge = torch.searchsorted(ix.edge_poskey, jj[pair] * (n + 1) + pos, right=True) - 1
            slot = pair * kp + (edge - a0[pair])
            m = torch.full((npairs,), float("-inf"), dtype=s.dtype, device=s.device)
            m.scatter_reduce_(0, pair, val, reduce="amax", include_self=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            w = torch.exp(val - m[pair])
            sums = torch.zeros(npairs * kp, dtype=s.dtype, device=s.device).index_add_(0, slot, w).view(npairs, kp)
            tot = sums.sum(dim=1, keepdim=True)
            probs = sums / torch.where(tot > 0, tot, torch.ones_like(tot))
            k = torch.arange(kp, device=s.device)
            valid = k < cnt.unsqueeze(1)
            dest = ptr[bb * length + jj].unsqueeze(1) + k
            values[dest[valid]] = probs[valid]
