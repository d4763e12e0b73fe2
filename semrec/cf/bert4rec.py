"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer trained with the cloze task.

Training: random items of each window are replaced by [mask] (probability `mask_prob`, at least one
per window) and predicted from both sides; with probability `mask_last_prob` a window instead has
only its last item masked, which is exactly the inference situation. Inference: [mask] is appended
after the last `max_len - 1` history items and its state scores every item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semrec.cf.base import CFTeacher, positions_from_start, register_teacher
from semrec.cf.layers import Encoder
from semrec.cf.sasrec import init_weights
from semrec.errors import SemrecError


@dataclass
class BERT4RecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    max_len: int = 50  # window length including the appended [mask]
    mask_prob: float = 0.3
    mask_last_prob: float = 0.1
    output_head: bool = True  # dense + GELU + LayerNorm on the states before the tied item table
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for k in ("hidden", "layers", "heads", "ffn"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be positive")
        if self.max_len < 2:
            raise ValueError("max_len must be at least 2 (one history item + [mask])")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not (0 < self.mask_prob <= 1 and 0 <= self.mask_last_prob <= 1):
            raise ValueError("mask_prob must be in (0, 1] and mask_last_prob in [0, 1]")


@register_teacher
class BERT4Rec(CFTeacher):
    name = "bert4rec"
    config_class = BERT4RecConfig
    window_extra = 0  # windows of max_len items, masked in place
    window_overlap = 0
    next_item_pairs = False  # cloze pairs: `new_items` does not apply

    def __init__(self, num_items: int, config: BERT4RecConfig | None = None) -> None:
        super().__init__(num_items, config or BERT4RecConfig())
        c = self.config
        self.mask_id = self.num_items + 1
        self.encoder = Encoder(c.hidden, c.layers, c.heads, c.ffn, c.dropout, c.attn_dropout,
                               max_positions=c.max_len, activation="gelu")
        self.head = (nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.GELU(), nn.LayerNorm(c.hidden))
                     if c.output_head else nn.Identity())
        init_weights(self, c.init_std)

    @classmethod
    def num_special_tokens(cls) -> int:
        return 1  # [mask]

    def history_len(self) -> int:
        return self.max_len - 1

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) 1-based ids (0 = padding, N + 1 = [mask]) -> (B, L, d) bidirectional states."""
        valid = ids != 0
        return self.head(self.encoder(self.item_emb(ids), positions_from_start(ids), valid, causal=False))

    def encode_last(self, ids: torch.Tensor) -> torch.Tensor:
        masked = torch.cat([ids, torch.full_like(ids[:, :1], self.mask_id)], dim=1)
        return self.encode(masked)[:, -1]

    def training_pairs(self, windows: torch.Tensor, generator: torch.Generator | None = None, *,
                       new_items: bool = False):
        """Cloze pairs: the states at masked positions and the items that were masked."""
        if new_items:
            raise SemrecError(f"{self.name}: new_items needs next-item training pairs (sasrec, gru4rec)")
        device = self.item_emb.weight.device
        windows = windows.to(device)
        real = windows >= 0
        b, l = windows.shape
        u = torch.rand((b, l), generator=generator, device="cpu").to(device)
        masked = real & (u < self.config.mask_prob)
        last_only = torch.rand((b,), generator=generator, device="cpu").to(device) < self.config.mask_last_prob
        last = torch.zeros_like(masked)
        last[:, -1] = real[:, -1]
        masked = torch.where(last_only[:, None], last, masked)
        # windows with nothing masked get their last item masked
        none = ~masked.any(1)
        masked = masked | (none[:, None] & last)
        ids = torch.where(real, windows + 1, torch.zeros_like(windows))
        ids = torch.where(masked, torch.full_like(ids, self.mask_id), ids)
        hidden = self.encode(ids)
        return hidden[masked], windows[masked]
