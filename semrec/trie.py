"""Vectorized prefix index (trie) over item token sequences, on CPU or CUDA.

Items are sorted lexicographically by their token sequences (padding sorts before every real token,
ties keep increasing item id), so every prefix is a contiguous range [lo, hi) of sorted positions.
The trie's edges, depth by depth, are stored as flat sorted tables keyed by
``(depth, lo of the parent range, token)``: one ``searchsorted`` narrows a whole batch of ranges by
one token, and the children of a range (its allowed next tokens) are a contiguous slice of the table.

Two ways to query:
- batched prefixes ``(B, j)`` (right padding with ``pad_id`` allowed, i.e. rows of different length):
  :meth:`walk`, :meth:`item_range`, :meth:`allowed_tokens_mask`, :meth:`allowed_tokens`, :meth:`is_complete`,
  :meth:`items_of`, :meth:`all_items_of`, :meth:`prefix_items`;
- incremental state ``(lo, hi)`` for decoding (no re-walk of the prefix, no host sync):
  :meth:`root`, :meth:`step`, :meth:`next_tokens`, :meth:`next_token_mask`, :meth:`child_edges`,
  :meth:`scatter_children`, :meth:`range_is_complete`, :meth:`range_item`.
"""

from __future__ import annotations

import copy

import torch

from semrec.errors import SemrecError



def check_token_rows(tokens: torch.Tensor, pad_id: int, vocab_size: int, name: str) -> None:
    """Raise SemrecError unless `tokens` (R, L) holds ids in [0, vocab_size) right-padded with pad_id."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise SemrecError(f"{name}: expected a 2-D LongTensor (rows, length), got {shape}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
        raise SemrecError(f"{name}: expected integer token ids, got dtype {tokens.dtype}")
    if tokens.numel() == 0:
        return
    real = tokens != pad_id
    bad_vocab = real & ((tokens < 0) | (tokens >= vocab_size))
    bad_gap = ~real[:, :-1] & real[:, 1:]
    if bool(bad_vocab.any()):
        r, c = (int(x) for x in bad_vocab.nonzero()[0])
        raise SemrecError(f"{name}: row {r}, position {c}: token {int(tokens[r, c])} outside the "
                          f"vocabulary [0, {vocab_size}) and not the pad id {pad_id}")
    if bool(bad_gap.any()):
        r, c = (int(x) for x in bad_gap.nonzero()[0])
        raise SemrecError(f"{name}: row {r}: padding at position {c} is followed by a token "
                          f"(sequences must be right-padded with pad id {pad_id})")


class PrefixIndex:
    """Prefix index over `item_tokens` (N, L): one row per item, right-padded with `pad_id`.

    Fixed-length semantic IDs and variable-length title sequences (ending in EOS) both work;
    duplicate sequences are allowed (:meth:`items_of` gives the smallest item id, :meth:`all_items_of`
    all of them). Every item needs at least one token. :meth:`to` gives a copy on another device.

    The edge table (read by the Collaborative Tokenizer; E edges, depth-major, sorted by key):
    ``edge_key`` (E,) ``(depth * (N + 1) + parent lo) * vocab_size + token``; ``edge_poskey`` (E,)
    ``depth * (N + 1) + lo``; ``edge_lo``/``edge_hi`` (E,) the child's range [lo, hi) of sorted
    positions; ``edge_tok`` (E,) the edge's token; ``first_slot`` (N,) each item's depth-0 edge.
    """

    def __init__(self, item_tokens: torch.Tensor, pad_id: int, vocab_size: int):
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise SemrecError(f"PrefixIndex: vocab_size must be a positive int, got {vocab_size!r}")
        if not isinstance(pad_id, int):
            raise SemrecError(f"PrefixIndex: pad_id must be an int, got {pad_id!r}")
        check_token_rows(item_tokens, pad_id, vocab_size, "item_tokens")
        n, max_len = item_tokens.shape
        if n == 0 or max_len == 0:
            raise SemrecError(f"item_tokens: empty catalogue (shape {tuple(item_tokens.shape)})")
        tokens = item_tokens.long()
        empty = tokens[:, 0] == pad_id
        if bool(empty.any()):
            raise SemrecError(f"item_tokens: row {int(empty.nonzero()[0, 0])} has no tokens (all padding)")
        if max_len * (n + 1) * vocab_size >= 2**62:
            raise SemrecError(f"item_tokens: catalogue too large for the index keys (N={n}, L={max_len}, "
                              f"V={vocab_size})")
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        self.num_items = n
        self.max_len = max_len
        dev = tokens.device

        # Lexicographic order: stable sorts from the last column to the first; pad maps to -1.
        key = torch.where(tokens == pad_id, torch.full_like(tokens, -1), tokens)
        order = torch.arange(n, device=dev)
        for c in range(max_len - 1, -1, -1):
            order = order[torch.sort(key[order, c], stable=True).indices]
        skey = key[order]
        self.sorted_items = order
        self.sorted_tokens = tokens[order]

        # Edges depth by depth. `starts` marks the first sorted position of each length-j prefix group.
        pos = torch.arange(n, device=dev)
        starts = torch.zeros(n, dtype=torch.bool, device=dev)
        starts[0] = True
        ekey, elo, ehi, etok, eposkey, offsets, branching = [], [], [], [], [], [0], []
        for j in range(max_len):
            parent_lo = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
            col = skey[:, j]
            child_starts = starts.clone()
            child_starts[1:] |= col[1:] != col[:-1]
            group_pos = child_starts.nonzero().squeeze(1)
            e_pos = (child_starts & (col >= 0)).nonzero().squeeze(1)
            nxt = torch.searchsorted(group_pos, e_pos, right=True)
            e_hi = torch.where(nxt < group_pos.numel(), group_pos[nxt.clamp(max=group_pos.numel() - 1)],
                               torch.full_like(nxt, n))
            e_par = parent_lo[e_pos]
            e_tok = col[e_pos]
            ekey.append((j * (n + 1) + e_par) * vocab_size + e_tok)
            eposkey.append(j * (n + 1) + e_pos)
            elo.append(e_pos)
            ehi.append(e_hi)
            etok.append(e_tok)
            offsets.append(offsets[-1] + e_pos.numel())
            branching.append(int(torch.unique_consecutive(e_par, return_counts=True)[1].max())
                             if e_pos.numel() else 0)
            starts = child_starts
        self.edge_key = torch.cat(ekey)
        self.edge_poskey = torch.cat(eposkey)
        self.edge_lo = torch.cat(elo)
        self.edge_hi = torch.cat(ehi)
        self.edge_tok = torch.cat(etok)
        self._depth_offsets = offsets
        self._branching = branching
        # Depth-0 child slot of every item (used by the Collaborative Tokenizer's dense first step).
        slot_sorted = torch.searchsorted(self.edge_lo[: offsets[1]], pos, right=True) - 1
        self.first_slot = torch.empty_like(slot_sorted)
        self.first_slot[order] = slot_sorted
        if not bool((self.edge_key[1:] > self.edge_key[:-1]).all()):  # internal invariant
            raise RuntimeError("PrefixIndex: edge table not strictly sorted (key overflow?)")

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return self.sorted_items.device

    @property
    def num_edges(self) -> int:
        """Number of trie edges (distinct non-empty prefixes)."""
        return int(self.edge_key.numel())

    @property
    def max_branching(self) -> int:
        """Largest number of distinct next tokens after any prefix."""
        return max(self._branching)

    def branching(self, depth: int) -> int:
        """Largest number of distinct next tokens after any prefix of length `depth`."""
        return self._branching[depth] if 0 <= depth < self.max_len else 0

    def __len__(self) -> int:
        return self.num_items

    def __repr__(self) -> str:
        return (f"PrefixIndex(num_items={self.num_items}, max_len={self.max_len}, vocab_size={self.vocab_size}, "
                f"pad_id={self.pad_id}, edges={self.num_edges}, device={self.device})")

    def to(self, device: torch.device | str) -> "PrefixIndex":
        """A copy of the index with every tensor on `device` (like Tensor.to; self is unchanged)."""
        out = copy.copy(self)
        for k, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(out, k, v.to(device))
        return out

    # ------------------------------------------------------------------ incremental API
    def root(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ranges (lo, hi) of the empty prefix for `batch_size` rows: ([0]*B, [N]*B)."""
        lo = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        return lo, torch.full_like(lo, self.num_items)

    def step(self, lo: torch.Tensor, hi: torch.Tensor, tokens: torch.Tensor,
             depth: "int | torch.Tensor") -> tuple[torch.Tensor, torch.Tensor]:
        """Narrow ranges of length-`depth` prefixes (B,) by one token each (B,).

        A token that does not continue the prefix (or is outside the vocabulary) gives the empty range
        (0, 0); an empty range stays empty; a `pad_id` token leaves the range unchanged (the sequence
        has ended). `depth` is an int or a LongTensor (B,). No host synchronisation.
        """
        tokens = tokens.long()
        n, v = self.num_items, self.vocab_size
        ok = (tokens >= 0) & (tokens < v) & (hi > lo)
        key = (depth * (n + 1) + lo) * v + tokens.clamp(0, v - 1)
        e = torch.searchsorted(self.edge_key, key).clamp_(max=self.edge_key.numel() - 1)
        match = ok & (self.edge_key[e] == key)
        zero = torch.zeros_like(lo)
        nlo = torch.where(match, self.edge_lo[e], zero)
        nhi = torch.where(match, self.edge_hi[e], zero)
        ended = tokens == self.pad_id
        return torch.where(ended, lo, nlo), torch.where(ended, hi, nhi)

    def children(self, lo: torch.Tensor, hi: torch.Tensor,
                 depth: "int | torch.Tensor") -> tuple[torch.Tensor, torch.Tensor]:
        """Edge-table slice [a, b) of the children of each range (B,); b - a = number of next tokens."""
        n, v = self.num_items, self.vocab_size
        base = (depth * (n + 1) + lo) * v
        a = torch.searchsorted(self.edge_key, base)
        b = torch.searchsorted(self.edge_key, base + v)
        nonempty = hi > lo
        return torch.where(nonempty, a, torch.zeros_like(a)), torch.where(nonempty, b, torch.zeros_like(b))

    def child_edges(self, lo: torch.Tensor, hi: torch.Tensor, depth: "int | torch.Tensor",
                    k: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(edges (B, K), valid (B, K), counts (B,)): the edge-table rows of each range's children, ascending by
        token, edge 0 where `valid` is False (past the range's count). K as in `next_tokens`."""
        a, b = self.children(lo, hi, depth)
        counts = b - a
        if k is None:
            k = self.branching(depth) if isinstance(depth, int) else int(counts.max()) if counts.numel() else 0
        ar = torch.arange(k, device=self.device)
        valid = ar < counts.unsqueeze(1)
        return torch.where(valid, a.unsqueeze(1) + ar, 0), valid, counts

    def next_tokens(self, lo: torch.Tensor, hi: torch.Tensor, depth: "int | torch.Tensor",
                    k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Allowed next tokens of each range in index form.

        Returns (tokens (B, K) ascending, right-padded with pad_id; counts (B,)). K is `k` if given,
        else the largest branching at `depth` (int depth: no host sync) or in the batch (tensor depth).
        """
        edges, valid, counts = self.child_edges(lo, hi, depth, k)
        return torch.where(valid, self.edge_tok[edges], self.pad_id), counts

    def next_token_mask(self, lo: torch.Tensor, hi: torch.Tensor, depth: "int | torch.Tensor") -> torch.Tensor:
        """BoolTensor (B, V): tokens that continue each range (all False for complete/empty ranges)."""
        return self.next_token_values(lo, hi, depth, torch.ones(1, dtype=torch.bool, device=self.device)
                                      .expand(self.num_edges))

    def next_token_values(self, lo: torch.Tensor, hi: torch.Tensor, depth: "int | torch.Tensor",
                          edge_values: torch.Tensor) -> torch.Tensor:
        """(B, V) of `edge_values`' dtype: `edge_values` (E,) of the edge each token takes from each range, 0 (False)
        for tokens that do not continue it."""
        edges, valid, _ = self.child_edges(lo, hi, depth)
        return self.scatter_children(edges, valid, edge_values[edges])

    def scatter_children(self, edges: torch.Tensor, valid: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(B, V) of `values`' dtype: values (B, K) of each row's children (`edges`, `valid` as `child_edges`
        gives them) at the children's tokens, 0 (False) at every other token and for entries not `valid`.
        Out of place: differentiable in `values`."""
        toks = torch.where(valid, self.edge_tok[edges], self.vocab_size)  # not valid: a dropped extra column
        out = values.new_zeros(values.shape[0], self.vocab_size + 1)
        return out.scatter(1, toks, values)[:, : self.vocab_size]

    def edge_log_share(self, weights) -> torch.Tensor:
        """(E,) float32: log of each edge's share of its parent's item weight, log(w(child) / sum of w over
        the parent's children), from positive item `weights` (N,). Summed along an item's edges it is
        log(w(item) / total weight) when no sequence is a proper prefix of another (fixed-length codes,
        EOS-terminated titles)."""
        w = torch.as_tensor(weights, dtype=torch.float64, device=self.device)
        if w.shape != (self.num_items,) or not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise SemrecError(f"edge_log_share: expected finite positive weights of shape ({self.num_items},), "
                              f"got shape {tuple(w.shape)}" + ("" if w.shape != (self.num_items,) else
                                                               " with a value <= 0 or not finite"))
        cum = torch.cat([w.new_zeros(1), torch.cumsum(w[self.sorted_items], 0)])
        child = cum[self.edge_hi] - cum[self.edge_lo]
        _, group = torch.unique_consecutive(self.edge_key // self.vocab_size, return_inverse=True)
        parent = torch.zeros(int(group.max()) + 1, dtype=torch.float64, device=self.device).index_add_(0, group, child)
        return (child.log() - parent[group].log()).float()

    def range_is_complete(self, lo: torch.Tensor, hi: torch.Tensor, depth: "int | torch.Tensor") -> torch.Tensor:
        """BoolTensor (B,): the length-`depth` prefix is the whole sequence of at least one item."""
        d = torch.as_tensor(depth, device=self.device).expand_as(lo)
        at = self.sorted_tokens[lo.clamp(max=self.num_items - 1), d.clamp(max=self.max_len - 1)]
        return (hi > lo) & ((d >= self.max_len) | (at == self.pad_id))

    def range_item(self, lo: torch.Tensor, hi: torch.Tensor, depth: "int | torch.Tensor") -> torch.Tensor:
        """LongTensor (B,): smallest item id whose whole sequence is the prefix, or -1."""
        item = self.sorted_items[lo.clamp(max=self.num_items - 1)]
        return torch.where(self.range_is_complete(lo, hi, depth), item, torch.full_like(item, -1))

    # ------------------------------------------------------------------ batched prefix API
    def walk(self, prefixes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lo, hi, depth) of prefixes (B, j) right-padded with pad_id; depth = non-pad length (B,)."""
        check_token_rows(prefixes, self.pad_id, self.vocab_size, "prefixes")
        prefixes = prefixes.to(self.device).long()
        lo, hi = self.root(prefixes.shape[0])
        for c in range(prefixes.shape[1]):
            lo, hi = self.step(lo, hi, prefixes[:, c], c)
        return lo, hi, (prefixes != self.pad_id).sum(1)

    def item_range(self, prefixes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) LongTensors (B,): sorted positions of the items starting with each prefix (lo == hi: none)."""
        lo, hi, _ = self.walk(prefixes)
        return lo, hi

    def allowed_tokens_mask(self, prefixes: torch.Tensor) -> torch.Tensor:
        """BoolTensor (B, V): tokens that continue each prefix (all False after a complete item)."""
        lo, hi, depth = self.walk(prefixes)
        return self.next_token_mask(lo, hi, self._static_depth(prefixes, depth))

    def allowed_tokens(self, prefixes: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, K) right-padded with pad_id, counts (B,)): allowed next tokens of each prefix."""
        lo, hi, depth = self.walk(prefixes)
        return self.next_tokens(lo, hi, self._static_depth(prefixes, depth), k)

    def is_complete(self, prefixes: torch.Tensor) -> torch.Tensor:
        """BoolTensor (B,): the prefix is exactly some item's whole sequence."""
        lo, hi, depth = self.walk(prefixes)
        return self.range_is_complete(lo, hi, depth)

    def items_of(self, sequences: torch.Tensor) -> torch.Tensor:
        """LongTensor (B,): item id of each complete sequence (smallest id among duplicates), else -1."""
        lo, hi, depth = self.walk(sequences)
        return self.range_item(lo, hi, depth)

    def all_items_of(self, seq) -> list[int]:
        """All item ids (ascending) whose whole sequence is `seq` (1-D tokens, trailing pad allowed)."""
        lo, hi, depth = self.walk(self._one_row(seq))
        if not bool(self.range_is_complete(lo, hi, depth)[0]):
            return []
        a, b = self.children(lo, hi, depth)
        end = int(self.edge_lo[a[0]]) if int(b[0]) > int(a[0]) else int(hi[0])
        return sorted(self.sorted_items[int(lo[0]): end].tolist())

    def prefix_items(self, prefix) -> list[int]:
        """All item ids (ascending) whose sequence starts with `prefix` (1-D tokens)."""
        lo, hi, _ = self.walk(self._one_row(prefix))
        return sorted(self.sorted_items[int(lo[0]): int(hi[0])].tolist())

    # ------------------------------------------------------------------ helpers
    def _one_row(self, seq) -> torch.Tensor:
        t = torch.as_tensor(seq, dtype=torch.long, device=self.device)
        if t.dim() != 1:
            raise SemrecError(f"expected a 1-D token sequence, got shape {tuple(t.shape)}")
        return t.unsqueeze(0)

    def _static_depth(self, prefixes: torch.Tensor, depth: torch.Tensor) -> "int | torch.Tensor":
        """The int depth when every row has the full length (no padding), else the per-row tensor."""
        j = prefixes.shape[1]
        if prefixes.numel() == 0 or not bool((prefixes[:, -1] == self.pad_id).any()):
            return j
        return depth
