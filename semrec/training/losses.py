"""The trainer's loss: `TrainConfig.loss` names one entry of `LOSSES`, which holds semrec.tca's token
loss, the config field that weighs it and whether it needs CF teacher logits.

CF supervision comes from the Collaborative Tokenizer (sparse form, so title vocabularies work too);
MSL masks come from the prefix index along the target path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from semrec.tca import TOKEN_LOSSES, CollaborativeTokenizer, allowed_along
from semrec.training.config import TrainConfig


@dataclass(frozen=True)
class Loss:
    fn: Callable[..., torch.Tensor]  # (logits, labels, cf, weight, *, tau, allowed) -> mean loss
    weight: str | None  # the TrainConfig field holding its weight (None: unweighted)
    uses_teacher: bool  # needs CF teacher logits


LOSSES: dict[str, Loss] = {
    "ntp": Loss(TOKEN_LOSSES["ntp"], None, False),
    "tca": Loss(TOKEN_LOSSES["soft_ntp"], "alpha", True),
    "aux_kl": Loss(TOKEN_LOSSES["aux_kl"], "aux_lambda", True),
    "label_smoothing": Loss(TOKEN_LOSSES["label_smoothing"], "smoothing", False),
}


def uses_teacher(cfg: TrainConfig) -> bool:
    return LOSSES[cfg.loss].uses_teacher


def token_loss(cfg: TrainConfig, logits: torch.Tensor, labels: torch.Tensor, target_tokens: torch.Tensor, *,
               index=None, tokenizer: CollaborativeTokenizer | None = None,
               item_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss over trained positions.

    logits (B, L, V); labels (B, L) with -100 at untrained positions; target_tokens (B, L) the target
    items' token rows (pad-padded); item_logits (B, N) teacher scores (needed by "tca" and "aux_kl")."""
    loss = LOSSES[cfg.loss]
    cf = None
    if loss.uses_teacher:
        if tokenizer is None or item_logits is None:
            raise ValueError(f"loss '{cfg.loss}' needs CF teacher logits")
        cf = tokenizer(item_logits, target_tokens, sparse=True)
    allowed = None
    if cfg.msl:
        allowed = cf if cf is not None else allowed_along(index, target_tokens)
    weight = getattr(cfg, loss.weight) if loss.weight else 0.0
    return loss.fn(logits, labels, cf, weight, tau=cfg.tau, allowed=allowed)
