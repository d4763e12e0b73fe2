"""Trie-edge output vectors: one learned vector per edge of the catalogue's prefix index, so that every
prefix scores its next tokens with vectors of its own.

A model that ties its output layer to code embeddings scores code c the same way under every parent
prefix. With text semantic IDs the items of one first-level cluster differ only in their lower codes, whose
vectors are shared across all clusters, so the model can rank a cluster's items only by what all clusters
have in common (their popularity, in practice). An edge vector is specific to one (prefix, next token) pair:
at the last levels, one item. It is added to the shared logit, and starts at zero.
"""

from __future__ import annotations

import torch

# Rows of (rows, children, D) edge vectors gathered at a time: the gather stays small whatever the number of
# beams and the branching (2,560 beams x 256 children x 128 floats would be 335 MB at once)
CHUNK_ROWS = 256


def edge_logits(index, hidden: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, depth: int,
                weight: torch.Tensor) -> torch.Tensor:
    """(R, V) additive next-token logits of rows whose prefixes are the ranges (lo, hi) (R,) of length `depth`
    in `index` (a PrefixIndex with V = index.vocab_size): hidden (R, D) . weight[e] at the token of each edge e
    leaving the row's prefix, 0 at every other token (and for empty or complete prefixes). weight: (E, D), one
    row per edge of the index. Differentiable in hidden and weight."""
    if isinstance(depth, int) and depth == 0:  # every non-empty range is the root: one matmul, no gather
        edges, valid, _ = index.child_edges(*index.root(1), 0)
        vals = hidden @ weight[edges[0]].T
        return index.scatter_children(edges.expand_as(vals), valid & (hi > lo)[:, None], vals)
    parts = []
    for start in range(0, hidden.shape[0], CHUNK_ROWS):
        sl = slice(start, start + CHUNK_ROWS)
        edges, valid, _ = index.child_edges(lo[sl], hi[sl], depth)
        parts.append(index.scatter_children(edges, valid, torch.einsum("rd,rkd->rk", hidden[sl], weight[edges])))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def teacher_forced_edge_logits(index, hidden: torch.Tensor, target_tokens: torch.Tensor,
                               weight: torch.Tensor) -> torch.Tensor:
    """(B, L, V): `edge_logits` at every position of teacher-forced targets: hidden (B, L, D) is the state that
    predicts target_tokens[:, t] (B, L) (right-padded with index.pad_id) after the prefix target_tokens[:, :t]."""
    lo, hi = index.root(target_tokens.shape[0])
    out = []
    for t in range(target_tokens.shape[1]):
        out.append(edge_logits(index, hidden[:, t], lo, hi, t, weight))
        lo, hi = index.step(lo, hi, target_tokens[:, t], t)
    return torch.stack(out, 1)
