"""Example tables -> model tensors: the `Batch` a model's `collate` builds from rows of a
semrec.data.ExampleTable using the item tokenization's codes, and item-code flattening helpers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Model inputs for B examples.

    input_ids / attention_mask (B, S): encoder input (enc-dec) or prompt (decoder-only, left-padded).
    labels (B, L): target token ids, -100 where not trained (padding, optionally EOS); None at inference.
    target_tokens (B, L): the target item's raw code row (right-padded with pad_id), for the prefix index.
    targets (B,): target item ids (-1 if unknown). histories (B, H): item ids left-padded with -1.
    users (B,), rows (B,): positions in the ExampleTable (aligns precomputed teacher logits).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    histories: torch.Tensor
    users: torch.Tensor
    rows: torch.Tensor
    labels: torch.Tensor | None = None
    target_tokens: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                        for f in dataclasses.fields(self)})


def compact(tokens: torch.Tensor, keep: torch.Tensor, *, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept tokens of each row together (order preserved), padding on `side`.

    tokens, keep: (B, T) -> (tokens (B, T'), mask (B, T')) with T' = max kept per row; dropped slots keep
    their original token value, so callers fill them with their pad id via the mask."""
    key = keep.to(torch.int8) if side == "left" else (~keep).to(torch.int8)
    order = torch.sort(key, dim=1, stable=True).indices
    tokens, keep = tokens.gather(1, order), keep.gather(1, order)
    width = int(keep.sum(1).max()) if keep.numel() else 0
    if side == "left":
        return tokens[:, tokens.shape[1] - width:], keep[:, keep.shape[1] - width:]
    return tokens[:, :width], keep[:, :width]


def history_tokens(codes: torch.Tensor, pad_id: int, histories: torch.Tensor, *,
                   side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the codes of each history's items, dropping padding.

    codes: (N, L) item token rows right-padded with pad_id; histories: (B, H) item ids, -1 = none.
    Returns tokens (B, T) padded with pad_id on `side` and the attention mask (B, T) as int64."""
    b, h = histories.shape
    n, length = codes.shape
    table = torch.cat([codes, codes.new_full((1, length), pad_id)])  # row n = the -1 history slot
    idx = torch.where(histories < 0, torch.full_like(histories, n), histories)
    flat = table[idx].reshape(b, h * length)
    tokens, keep = compact(flat, flat != pad_id, side=side)
    tokens = tokens.masked_fill(~keep, pad_id)
    return tokens, keep.long()


def hash_users(users: torch.Tensor, buckets: int) -> torch.Tensor:
    """Deterministic multiplicative hash of user ids into 0..buckets-1 (TIGER's hashed user token)."""
    return ((users.long() * 2654435761) % (2**32)) % buckets
