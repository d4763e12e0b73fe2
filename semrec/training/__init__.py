"""Training: one loop (`semrec.training.loop`: accumulation, DDP, validation, early stopping, checkpoints
and exact resume, metrics log) for CF teachers (`train_teacher`, semrec.training.teacher) and every
generative model and loss (`Trainer`: NTP, TCA, aux-KL, label smoothing, MSL, warmup + cosine AdamW).

    from semrec.training import TrainConfig, Trainer
    result = Trainer(model, TrainConfig(loss="tca", alpha=0.1), train_examples, valid=dataset.valid,
                     teacher=teacher, out_dir="runs/x").fit()
"""

from semrec.training.config import TrainConfig
from semrec.training.losses import LOSSES, Loss, token_loss
from semrec.training.presets import LLM_MODES, LLM_TRAIN_DEFAULTS, llm_train_config
from semrec.training.teacher import (TeacherTrainConfig, TeacherTrainResult, train_and_evaluate_teacher,
                                     train_teacher)
from semrec.training.trainer import TeacherLogits, Trainer, TrainResult, precompute_teacher_logits

__all__ = ["LLM_MODES", "LLM_TRAIN_DEFAULTS", "LOSSES", "Loss", "TeacherLogits", "TrainConfig", "TrainResult", "Trainer",
           "llm_train_config", "precompute_teacher_logits", "token_loss", "TeacherTrainConfig", "TeacherTrainResult",
           "train_and_evaluate_teacher", "train_teacher"]
