"""The trainer's loss: one call into semrec.tca's token losses, chosen by TrainConfig.loss.

CF supervision comes from the Collaborative Tokenizer (sparse form, so title vocabularies work too);
MSL masks come from the prefix index along the target path.
"""

from __future__ import annotations

import torch

from semrec.tca import TOKEN_LOSSES, CollaborativeTokenizer
from semrec.training.config import TrainConfig

_REGISTRY_NAME = {"ntp": "ntp", "tca": "soft_ntp", "aux_kl": "aux_kl", "label_smoothing": "label_smoothing"}


def uses_teacher(cfg: TrainConfig) -> bool:
    return cfg.loss in ("tca", "aux_kl")


def allowed_along(index, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Trie-allowed next tokens at every position of each target path, in index form.

    targets (B, L) right-padded with pad_id -> (indices (B, L, K) ascending, counts (B, L)); count 0 where
    the target is padding."""
    b, length = targets.shape
    lo, hi = index.root(b)
    k = index.max_branching
    toks, counts = [], []
    for j in range(length):
        tok = targets[:, j]
        t, c = index.next_tokens(lo, hi, j, k=k)
        counts.append(torch.where(tok == index.pad_id, torch.zeros_like(c), c))
        toks.append(t)
        lo, hi = index.step(lo, hi, tok, j)
    return torch.stack(toks, 1), torch.stack(counts, 1)


def token_loss(cfg: TrainConfig, logits: torch.Tensor, labels: torch.Tensor, target_tokens: torch.Tensor, *,
               index=None, tokenizer: CollaborativeTokenizer | None = None,
               item_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over trained positions.

    logits (B, L, V); labels (B, L) with -100 at untrained positions; target_tokens (B, L) the target
    items' token rows (pad-padded); item_logits (B, N) teacher scores (needed by "tca" and "aux_kl")."""
    cf = None
    if uses_teacher(cfg):
        if tokenizer is None or item_logits is None:
            raise ValueError(f"loss '{cfg.loss}' needs CF teacher logits")
        cf = tokenizer(item_logits, target_tokens, sparse=True)
    allowed = None
    if cfg.msl:
        allowed = cf if cf is not None else allowed_along(index, target_tokens)
    weight = {"tca": cfg.alpha, "aux_kl": cfg.aux_lambda, "label_smoothing": cfg.smoothing}.get(cfg.loss, 0.0)
    return TOKEN_LOSSES[_REGISTRY_NAME[cfg.loss]](logits, labels, cf, weight, tau=cfg.tau, allowed=allowed)
