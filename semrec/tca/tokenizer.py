"""Collaborative Tokenizer (CT): item-level CF scores -> next-token distributions along a target path.

Row [b, j] of the result is p_u(. | targets[b, :j]) (PAPER_NOTES section 1): the softmax of
item_logits[b] / temperature over the items whose first j tokens equal the target's and that have a
j-th token, summed by that j-th token. It is all zeros where no item continues the prefix or where
targets[b, j] is padding.

- :func:`collaborative_token_distribution`: plain-tensor functional form (loops over positions, works on
  (B, N) tensors at a time, never on (B, N, L)).
- :class:`CollaborativeTokenizer`: trie-backed form for training. It walks the targets through a
  :class:`~semrec.trie.PrefixIndex`; at position 0 the candidates are the whole catalogue (one dense
  softmax over (B, N)); deeper candidates are contiguous sorted ranges, gathered flat (in bounded chunks)
  and reduced with ``scatter_reduce_``/``index_add_``. It returns the dense (B, L, V) tensor or a
  :class:`SparseTokenDistribution` (for title vocabularies of 50k tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semrec.errors import SemrecError
from semrec.trie import PrefixIndex, check_token_rows

# Flat candidate elements processed at once for positions >= 1 (bounds the CT's working memory).
CHUNK_ELEMENTS = 1 << 23


@dataclass
class SparseTokenDistribution:
    """Padded sparse (B, L, V) distribution.

    For each (b, j) the first ``counts[b, j]`` entries of ``indices[b, j]`` are the trie-allowed next
    tokens after ``targets[b, :j]`` (ascending) and ``values[b, j]`` their probabilities; the remaining
    entries are padding (index 0, value 0). Positions where the target is padding have count 0.
    """

    indices: torch.Tensor  # (B, L, K) long
    values: torch.Tensor  # (B, L, K) float
    counts: torch.Tensor  # (B, L) long
    vocab_size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.indices.shape[:2], self.vocab_size)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str) -> "SparseTokenDistribution":
        return SparseTokenDistribution(self.indices.to(device), self.values.to(device), self.counts.to(device),
                                       self.vocab_size)

    def valid(self) -> torch.Tensor:
        """BoolTensor (B, L, K): which entries are real (k < counts)."""
        k = torch.arange(self.indices.shape[-1], device=self.indices.device)
        return k < self.counts.unsqueeze(-1)

    def to_dense(self) -> torch.Tensor:
        """The (B, L, V) dense tensor."""
        out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.device)
        return out.scatter_add_(2, self.indices, self.values)

    def allowed_mask(self) -> torch.Tensor:
        """BoolTensor (B, L, V): the trie-allowed next tokens (the MSL mask)."""
        b, l, k = self.indices.shape
        idx = torch.where(self.valid(), self.indices, torch.full_like(self.indices, self.vocab_size))
        mask = torch.zeros(b, l, self.vocab_size + 1, dtype=torch.bool, device=self.device)
        mask.scatter_(2, idx, True)
        return mask[..., : self.vocab_size]


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
    s = item_logits.detach().to(dtype) / temperature
    if top_k is not None and top_k < s.shape[1]:
        keep = torch.zeros_like(s, dtype=torch.bool).scatter_(1, s.topk(top_k, dim=1).indices, True)
        s = s.masked_fill(~keep, float("-inf"))
    return s


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
        """The CF next-token distributions in padded sparse form."""
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
        targets = targets.to(ix.device).long()
        length = targets.shape[1]
        a, c = self._children_along(targets)  # (B, L) edge slices of the children of each target prefix
        counts = c - a
        kmax = int(counts.max()) if counts.numel() else 0
        ar = torch.arange(kmax, device=ix.device)
        valid = ar < counts.unsqueeze(-1)
        eidx = (a.unsqueeze(-1) + ar).clamp_(max=ix.num_edges - 1)
        indices = torch.where(valid, ix._edge_tok[eidx], torch.zeros_like(eidx))
        values = torch.zeros(b, length, kmax, dtype=s.dtype, device=ix.device)
        if length and kmax:
            self._first_position(s, counts[:, 0] > 0, values)
            self._deeper_positions(s, a, c, values)
        return SparseTokenDistribution(indices, values, counts, ix.vocab_size)

    # ------------------------------------------------------------------ internals
    def _children_along(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Children slices (a, c) (B, L) of each prefix targets[:, :j] where targets[:, j] is a token."""
        ix = self.index
        b, length = targets.shape
        lo, hi = ix.root(b)
        a_cols, c_cols = [], []
        bad = torch.zeros(b, dtype=torch.long, device=ix.device) - 1
        for j in range(length):
            tok = targets[:, j]
            real = tok != ix.pad_id
            a, c = ix.children(lo, hi, j)
            a_cols.append(torch.where(real, a, torch.zeros_like(a)))
            c_cols.append(torch.where(real, c, torch.zeros_like(c)))
            lo, hi = ix.step(lo, hi, tok, j)
            bad = torch.where((bad < 0) & real & (hi <= lo), torch.full_like(bad, j), bad)
        if bool((bad >= 0).any()):
            r = int((bad >= 0).nonzero()[0, 0])
            j = int(bad[r])
            seq = targets[r, : j + 1].tolist()
            raise SemrecError(f"targets: row {r} is not a prefix path of any item: no item starts with "
                              f"{seq} (token {seq[-1]} at position {j})")
        return torch.stack(a_cols, 1), torch.stack(c_cols, 1)

    def _first_position(self, s: torch.Tensor, active: torch.Tensor, values: torch.Tensor) -> None:
        """Position 0: softmax over the whole catalogue, summed per first token (dense (B, N) work)."""
        ix = self.index
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        sr = s[rows]
        m = sr.max(dim=1, keepdim=True).values
        w = torch.exp(sr - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
        k0 = ix.branching(0)
        sums = torch.zeros(k0, rows.numel(), dtype=s.dtype, device=s.device)
        sums.index_add_(0, ix._first_slot, w.t())
        sums = sums.t()
        tot = sums.sum(dim=1, keepdim=True)
        values[rows, 0, :k0] = sums / torch.where(tot > 0, tot, torch.ones_like(tot))

    def _deeper_positions(self, s: torch.Tensor, a: torch.Tensor, c: torch.Tensor, values: torch.Tensor) -> None:
        """Positions >= 1: per (row, position) pair, a softmax over its contiguous candidate range."""
        ix = self.index
        n = ix.num_items
        counts = (c - a)[:, 1:]
        pb, pj = (counts > 0).nonzero(as_tuple=True)
        if pb.numel() == 0:
            return
        pj = pj + 1
        pa, pc = a[pb, pj], c[pb, pj]
        clo = ix._edge_lo[pa]
        size = ix._edge_hi[pc - 1] - clo  # candidates: the union of the children ranges
        ends = torch.cumsum(size, 0)
        # Chunk boundaries so that each chunk holds at most CHUNK_ELEMENTS candidates (or one pair).
        cuts = torch.searchsorted(ends, torch.arange(1, int(ends[-1]) // CHUNK_ELEMENTS + 1,
                                                     device=ends.device) * CHUNK_ELEMENTS, right=True)
        bounds = sorted({0, pb.numel(), *[int(x) for x in cuts.tolist()]})
        for p0, p1 in zip(bounds[:-1], bounds[1:]):
            if p1 <= p0:
                continue
            sz, lo0, a0, bb, jj = size[p0:p1], clo[p0:p1], pa[p0:p1], pb[p0:p1], pj[p0:p1]
            kp = int((pc[p0:p1] - a0).max())
            npairs = p1 - p0
            pair = torch.repeat_interleave(torch.arange(npairs, device=s.device), sz)
            start = torch.cumsum(sz, 0) - sz
            pos = lo0[pair] + torch.arange(pair.numel(), device=s.device) - start[pair]
            val = s[bb[pair], ix.sorted_items[pos]]
            edge = torch.searchsorted(ix._edge_poskey, jj[pair] * (n + 1) + pos, right=True) - 1
            slot = pair * kp + (edge - a0[pair])
            m = torch.full((npairs,), float("-inf"), dtype=s.dtype, device=s.device)
            m.scatter_reduce_(0, pair, val, reduce="amax", include_self=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            w = torch.exp(val - m[pair])
            sums = torch.zeros(npairs * kp, dtype=s.dtype, device=s.device).index_add_(0, slot, w).view(npairs, kp)
            tot = sums.sum(dim=1, keepdim=True)
            values[bb, jj, :kp] = sums / torch.where(tot > 0, tot, torch.ones_like(tot))
