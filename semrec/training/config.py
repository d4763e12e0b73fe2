"""The typed configuration of the generative trainer (load with semrec.config.load_config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    """Training of any GenerativeRecommender.

    optimizer: "adamw" (betas adam_beta1/2) or "adafactor" (torch's Adafactor: factored second moments,
    as T5 and TIGER were trained); both with `weight_decay` on matrices only and the warmup-cosine schedule.
    loss: "ntp" (cross-entropy), "tca" (Soft-NTP with the Collaborative Tokenizer: alpha, cf_temperature),
    "aux_kl" (NTP + aux_lambda * KL(CF || model) per step), "label_smoothing" (smoothing).
    cf_exclude_history: the teacher's logits of the row's history items are set to -inf before they
    become soft labels; use it with a small alpha (at .5 on Toys TIGER stopped learning the user, at .1 on
    Toys and Office it did not). tau: softmax temperature of the model's logits in the loss; msl: mask
    logits to the trie-allowed next tokens (MSL; the authors use tau 4.5 with it). Validation each
    `valid_every` epochs with beam search; early stopping on `monitor` (higher is better) after `patience`
    epochs without improvement. valid_rows: "all" validates on every valid row; "new_items" only on rows
    whose target is not in the history (repeat rows, where a model that recommends the user's own items
    scores high, can rank models in the opposite order to a test split with fewer of them), so that
    early stopping and a recipe's sweep choose on those rows.
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # 0 disables clipping
    loss: Literal["ntp", "tca", "aux_kl", "label_smoothing"] = "ntp"
    alpha: float = 0.1
    aux_lambda: float = 0.1
    smoothing: float = 0.1
    tau: float = 1.0
    msl: bool = False
    cf_temperature: float = 1.0
    cf_top_k: int | None = None
    cf_exclude_history: bool = False  # the teacher scores none of the row's history items (repeat-heavy teachers)
    train_eos: bool = True  # False: the target's EOS position is not trained (the authors' title models)
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None  # bf16 autocast: None = CUDA only; true = also on a CPU with native bf16
    valid_every: int = 1
    monitor: str = "ndcg@10"
    patience: int = 3  # 0: never stop early
    num_beams: int = 10
    eval_batch_size: int = 256
    valid_max_rows: int | None = None
    valid_rows: Literal["all", "new_items"] = "all"
    log_every: int = 50
    progress: bool = True

    # options added after stages were cached: left out of a model stage's key while at these defaults
    stage_key_omits = {"cf_exclude_history": False, "valid_rows": "all"}

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "valid_every", "num_beams", "eval_batch_size", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.tau <= 0 or self.cf_temperature <= 0:
            raise ValueError("lr, tau and cf_temperature must be > 0")
        if not 0.0 <= self.alpha <= 1.0 or not 0.0 <= self.smoothing <= 1.0:
            raise ValueError("alpha and smoothing must be in [0, 1]")
        if self.aux_lambda < 0 or self.warmup_steps < 0 or self.patience < 0 or self.max_grad_norm < 0:
            raise ValueError("aux_lambda, warmup_steps, patience and max_grad_norm must be >= 0")


# Fields that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "progress", "log_every", "device", "patience", "eval_batch_size")
