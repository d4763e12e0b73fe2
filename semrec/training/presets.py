"""Training presets: TrainConfigs of published set-ups, by name."""

from __future__ import annotations

from typing import Any

from semrec.config import load_config
from semrec.errors import SemrecError
from semrec.training.config import TrainConfig

# The authors' training set-up (TCA4Rec main.py): LoRA r 8 / alpha 16 / dropout 0.05 on q,k,v,o; lr 1e-4;
# effective batch 16 (micro-batch 4 x 4); 10 epochs, validation every 2, early stopping after 3 validations
# without gain on validation HR@3; 20 warm-up steps; tau 4.5 with MSL (1 without); EOS position untrained.
LLM_TRAIN_DEFAULTS: dict[str, Any] = dict(
    epochs=10, batch_size=4, grad_accum=4, lr=1e-4, weight_decay=0.01, warmup_steps=20, valid_every=2,
    monitor="hr@3", patience=3, num_beams=10, eval_batch_size=8, train_eos=False, max_grad_norm=1.0)
LLM_MODES = {
    "ntp": dict(loss="ntp", msl=False, tau=1.0),
    "tca": dict(loss="tca", msl=False, tau=1.0),
    "aux_kl": dict(loss="aux_kl", msl=False, tau=1.0),
    "msl": dict(loss="ntp", msl=True, tau=4.5),
    "msl_tca": dict(loss="tca", msl=True, tau=4.5),
}


def llm_train_config(mode: str = "ntp", **overrides: Any):
    """A semrec.training.TrainConfig with the authors' LLM settings for `mode` (a LLM_MODES key), then `overrides`."""
    if mode not in LLM_MODES:
        raise SemrecError(f"unknown LLM training mode '{mode}'; known: {', '.join(LLM_MODES)}")
    return load_config(TrainConfig, {**LLM_TRAIN_DEFAULTS, **LLM_MODES[mode], **overrides}, name="llm train config")
