"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the history; the state at the last
position, dotted with the shared item embedding table, scores every item.

Positions are learned and counted from the first item of the (truncated) history, so left padding
never changes a logit, and the state at position t of a training sequence equals what
`item_logits` computes on that sequence's first t + 1 items (when it fits in `max_len`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semrec.cf.base import CFTeacher, positions_from_start, register_teacher
from semrec.cf.layers import Encoder


@dataclass
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 256  # feed-forward width
    dropout: float = 0.3
    attn_dropout: float = 0.2
    max_len: int = 50  # history items read
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for k in ("hidden", "layers", "heads", "ffn", "max_len"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be positive")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not (0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1):
            raise ValueError("dropout must be in [0, 1)")


def init_weights(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()


@register_teacher
class SASRec(CFTeacher):
    name = "sasrec"
    config_class = SASRecConfig
    window_extra = 1  # windows hold max_len inputs + the item after the last one
    window_overlap = 1

    def __init__(self, num_items: int, config: SASRecConfig | None = None) -> None:
        super().__init__(num_items, config or SASRecConfig())
        c = self.config
        self.encoder = Encoder(c.hidden, c.layers, c.heads, c.ffn, c.dropout, c.attn_dropout,
                               max_positions=c.max_len, activation="gelu")
        init_weights(self, c.init_std)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) 1-based ids, 0 = padding -> (B, L, d) causal states."""
        valid = ids != 0
        return self.encoder(self.item_emb(ids), positions_from_start(ids), valid, causal=True)
