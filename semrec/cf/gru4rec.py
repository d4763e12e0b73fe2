"""GRU4Rec (Hidasi et al., ICLR 2016), trained here like SASRec (next item at every position, full
softmax over the shared item table). Left padding is removed before the GRU runs (rows are packed),
so padding never changes a state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from semrec.cf.base import CFTeacher, register_teacher
from semrec.cf.sasrec import init_weights


@dataclass
class GRU4RecConfig:
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.3
    max_len: int = 50
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for k in ("hidden", "layers", "max_len"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


def left_to_right_padding(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) left-padded (0 = pad) -> (right-padded ids, lengths). Pure gather, no Python loop."""
    lengths = (ids != 0).sum(1)
    l = ids.shape[1]
    src = (torch.arange(l, device=ids.device)[None, :] + (l - lengths)[:, None]) % l
    return ids.gather(1, src), lengths


@register_teacher
class GRU4Rec(CFTeacher):
    name = "gru4rec"
    config_class = GRU4RecConfig
    window_extra = 1
    window_overlap = 1

    def __init__(self, num_items: int, config: GRU4RecConfig | None = None) -> None:
        super().__init__(num_items, config or GRU4RecConfig())
        c = self.config
        self.emb_drop = nn.Dropout(c.dropout)
        self.gru = nn.GRU(c.hidden, c.hidden, num_layers=c.layers, batch_first=True,
                          dropout=c.dropout if c.layers > 1 else 0.0)
        self.out = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.hidden, c.hidden))
        init_weights(self, c.init_std)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded 1-based ids -> (B, L, d) states, aligned with the input columns."""
        b, l = ids.shape
        right, lengths = left_to_right_padding(ids)
        x = self.emb_drop(self.item_emb(right))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=l)
        out = self.out(out)
        # back to left alignment: column j of the input holds right-padded column j - (l - length)
        src = (torch.arange(l, device=ids.device)[None, :] - (l - lengths)[:, None]) % l
        return out.gather(1, src[:, :, None].expand(b, l, out.shape[2]))
