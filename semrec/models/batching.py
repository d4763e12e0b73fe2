"""Examples -> model tensors: dense history tables, batch iteration, and item-code flattening.

A split's `Examples` are turned once into an `ExampleTable` (histories left-padded with -1, most
recent item last: exactly what the CF teachers read). Each model's `collate` then turns rows of the
table into a `Batch` of token tensors using the item tokenization's codes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError


@dataclass
class ExampleTable:
    """A split as dense tensors: `histories` (E, H) item ids left-padded with -1, `users` (E,), `targets` (E,)."""

    histories: torch.Tensor
    users: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def from_examples(cls, examples: Examples, max_history: int) -> "ExampleTable":
        """Keep the last `max_history` items of each history (the cap TIGER applies)."""
        hist = examples.padded_histories(max_history, pad=-1, side="left")
        return cls(torch.from_numpy(hist), torch.from_numpy(examples.users.copy()),
                   torch.from_numpy(examples.targets.copy()))

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def max_history(self) -> int:
        return self.histories.shape[1]

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Yield LongTensors of row indices; a shuffled order is drawn from `generator` only."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for lo in range(0, n, batch_size):
            yield order[lo:lo + batch_size]


TRAIN_EXAMPLES = ("auto", "rows", "prefixes")


def training_examples(dataset: SeqDataset, max_history: int | None = None, how: str = "auto", *,
                      every_item: bool = False) -> Examples:
    """The examples a generative model trains on.

    "prefixes": every (seq[:k], seq[k]) of each training row's history + target, history capped at
    `max_history` (TIGER's samples); "rows": the train rows as given; "auto": every next item of the
    training sequences once per epoch, whatever the dataset's shape: the prefixes, or the rows for a
    model that learns every item of a sequence in one pass (`every_item`, e.g. the decoder-only model
    with `item_loss: every`)."""
    if how not in TRAIN_EXAMPLES:
        raise SemrecError(f"training examples '{how}': expected one of {', '.join(TRAIN_EXAMPLES)}")
    if how == "prefixes" or (how == "auto" and not every_item):
        return dataset.train.expand_prefixes(min_history=1, max_history=max_history)
    return dataset.train


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
