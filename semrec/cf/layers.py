"""A small pre-LayerNorm Transformer encoder shared by SASRec (causal) and BERT4Rec (bidirectional)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """x + Drop(MHA(LN(x))), then x + Drop(FFN(LN(x))). Attention via scaled_dot_product_attention."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float, attn_dropout: float,
                 activation: str = "gelu") -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, ffn)
        self.ff2 = nn.Linear(ffn, hidden)
        self.drop = nn.Dropout(dropout)
        self.act = F.gelu if activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d); attn_mask (B, 1, L, L) bool, True = query may attend to key."""
        b, l, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, l, d)))
        return x + self.drop(self.ff2(self.drop(self.act(self.ff1(self.ln2(x))))))


class Encoder(nn.Module):
    """Item + position embeddings -> N blocks -> final LayerNorm. Ids are 1-based, 0 = padding."""

    def __init__(self, hidden: int, layers: int, heads: int, ffn: int, dropout: float, attn_dropout: float,
                 max_positions: int, activation: str) -> None:
        super().__init__()
        self.pos_emb = nn.Embedding(max_positions, hidden)
        self.emb_ln = nn.LayerNorm(hidden)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden, heads, ffn, dropout, attn_dropout, activation) for _ in range(layers))
        self.final_ln = nn.LayerNorm(hidden)

    def forward(self, tok: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, causal: bool) -> torch.Tensor:
        """tok (B, L, d) item embeddings; pos (B, L) positions; valid (B, L) bool (False = padding)."""
        l = tok.shape[1]
        x = self.emb_drop(self.emb_ln(tok + self.pos_emb(pos)))
        mask = valid[:, None, None, :]  # keys that are real items
        if causal:
            mask = mask & torch.ones(l, l, dtype=torch.bool, device=tok.device).tril()
        # every query may see itself, so padded rows are never all-masked (their output is unused,
        # and real queries never attend to padding keys, so padding cannot leak into real positions)
        mask = mask | torch.eye(l, dtype=torch.bool, device=tok.device)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_ln(x)
