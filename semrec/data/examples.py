"""Example tables: a split's `Examples` turned once into dense tensors (histories left-padded with -1,
most recent item last: exactly what the CF teachers read), and the examples a generative model trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

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
