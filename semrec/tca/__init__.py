"""Token-level Collaborative Alignment (TCA4Rec): the Collaborative Tokenizer and the token-level losses.

Plug-and-play on plain tensors: any generative recommender that emits items as token sequences can turn
a CF teacher's item scores into next-token targets with :class:`CollaborativeTokenizer` (or the functional
:func:`collaborative_token_distribution`) and train with :func:`soft_ntp_loss`.
"""

from semrec.tca.losses import (
    TOKEN_LOSSES,
    aux_kl_loss,
    label_smoothing_loss,
    msl_mask_logits,
    ntp_loss,
    soft_ntp_loss,
)
from semrec.tca.tokenizer import (
    CollaborativeTokenizer,
    SparseTokenDistribution,
    allowed_along,
    collaborative_token_distribution,
    exclude_history,
)

__all__ = [
    "CollaborativeTokenizer",
    "SparseTokenDistribution",
    "TOKEN_LOSSES",
    "allowed_along",
    "aux_kl_loss",
    "collaborative_token_distribution",
    "exclude_history",
    "label_smoothing_loss",
    "msl_mask_logits",
    "ntp_loss",
    "soft_ntp_loss",
]
