"""One trainer for every GenerativeRecommender (TIGER, decoder-only, title-token LLMs).

    trainer = Trainer(model, TrainConfig(loss="tca", alpha=0.1), train_examples,
                      valid=dataset.valid, teacher=teacher, out_dir="runs/tiger_tca")
    result = trainer.fit()          # resumes from out_dir/checkpoints/last when it exists

`GenerativeTask` is what the shared loop (`semrec.training.loop`) needs to know of these models: each
epoch's shuffled batches (order drawn from a generator seeded by (seed, epoch)), AdamW (or Adafactor)
with linear warmup + cosine decay, the model's collate, bf16 autocast (CUDA; a CPU with native bf16 when
`bf16: true`) and the token loss (`semrec.training.losses`), validation by beam search (`semrec.evaluation.evaluate`). The loop does
gradient accumulation and clipping, DDP, early stopping on `monitor`, the best model in out_dir/best and
a resumable checkpoint in out_dir/checkpoints/last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semrec import distributed
from semrec.cf.base import check_logits, teacher_name
from semrec.cf.evaluate import target_in_history
from semrec.config import config_to_dict
from semrec.data.dataset import Examples
from semrec.errors import SemrecError
from semrec.artifacts import read_json
from semrec.data.examples import ExampleTable
from semrec.evaluation import evaluate, history_len_for
from semrec.tca import CollaborativeTokenizer, exclude_history
from semrec.training.config import RESUMABLE_CHANGES, TrainConfig
from semrec.training.loop import EpochSummary, LoopConfig, StepLoss, TrainingLoop, TrainingTask
from semrec.training.losses import token_loss, uses_teacher
from semrec.training.schedule import warmup_cosine
from semrec.runtime import bf16_autocast, resolve_device


@dataclass
class TrainResult:
    """What `Trainer.fit` returns. `best_dir`: saved best model (None without out_dir)."""

    epochs_run: int
    steps: int
    best_epoch: int | None
    best_metric: float | None
    monitor: str
    stopped_early: bool
    wall_time_s: float
    best_dir: Path | None = None
    history: list[dict] = field(default_factory=list)


class TeacherLogits:
    """CF item logits (B, N) for batches of training rows: computed by a frozen teacher on the batch's
    histories, or read from a precomputed (E, N) array whose rows align with the training examples."""

    def __init__(self, teacher=None, precomputed: Any = None):
        if (teacher is None) == (precomputed is None):
            raise SemrecError("give either a CF teacher or precomputed teacher logits, not both or neither")
        self.teacher = teacher
        self.table = precomputed
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    @property
    def num_items(self) -> int:
        return int(self.teacher.num_items if self.teacher is not None else self.table.shape[1])

    def to(self, device: torch.device) -> "TeacherLogits":
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    @torch.no_grad()
    def __call__(self, batch) -> torch.Tensor:
        dev = batch.input_ids.device
        if self.teacher is not None:
            return check_logits(self.teacher.item_logits(batch.histories).float(), teacher_name(self.teacher))
        rows = batch.rows.cpu().numpy()
        return check_logits(torch.as_tensor(np.asarray(self.table[rows]), dtype=torch.float32).to(dev),
                            "precomputed teacher logits")


@torch.no_grad()
def precompute_teacher_logits(teacher, examples: Examples | ExampleTable, *, history: int | None = None,
                              batch_size: int = 1024, device: str | torch.device = "cpu") -> np.ndarray:
    """(E, N) float32 teacher logits for every row of `examples` (rows aligned with them), e.g. to save
    once as .npy and reuse across an alpha sweep (`Trainer(..., teacher_logits=np.load(f, mmap_mode="r"))`)."""
    table = examples if isinstance(examples, ExampleTable) else ExampleTable.from_examples(
        examples, history or int(getattr(teacher, "max_len", 50)))
    teacher.eval().to(device)
    out = np.empty((len(table), teacher.num_items), dtype=np.float32)
    for rows in table.batches(batch_size):
        logits = check_logits(teacher.item_logits(table.histories[rows].to(device)).float(), teacher_name(teacher))
        out[rows.numpy()] = logits.cpu().numpy()
    return out


def new_item_rows(valid: Examples | ExampleTable) -> Examples | ExampleTable:
    """The rows of `valid` whose target is not in the history (an ExampleTable: not in its history columns)."""
    if isinstance(valid, Examples):
        new = ~target_in_history(valid)
    else:
        new = ~(valid.histories == valid.targets[:, None]).any(1)
    if not new.any():
        raise SemrecError("valid_rows 'new_items': every valid row's target is in its history")
    if isinstance(valid, Examples):
        return valid.subset(np.flatnonzero(new))
    return ExampleTable(valid.histories[new], valid.users[new], valid.targets[new])


class GenerativeTask(TrainingTask):
    """Training a GenerativeRecommender on rows of an ExampleTable (see the module docstring)."""

    def __init__(self, model, cfg: TrainConfig, train: ExampleTable, valid: ExampleTable | None, *,
                 teacher=None, teacher_logits: TeacherLogits | None = None, protocol: str = "T",
                 teacher_exclude_history: bool = False):
        self.name, self.model, self.cfg, self.train, self.valid = model.arch, model, cfg, train, valid
        self.teacher, self.teacher_logits, self.protocol = teacher, teacher_logits, protocol
        self.teacher_exclude_history = teacher_exclude_history
        self.monitor, self.validates, self.generators = cfg.monitor, valid is not None, {}

    def prepare(self, device: torch.device) -> torch.nn.Module:
        self.device = device
        self.model.to(device)
        if self.teacher_logits is not None:
            self.teacher_logits.to(device)
        self.index = self.model.prefix_index()
        self.tokenizer = None
        if uses_teacher(self.cfg):
            self.tokenizer = CollaborativeTokenizer(self.index, temperature=self.cfg.cf_temperature,
                                                    top_k=self.cfg.cf_top_k)
        self.use_amp = bf16_autocast(device, self.cfg.bf16)
        return self.model

    def optimizers(self) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW or Adafactor, weight decay on matrices only; warmup + cosine over every epoch's steps."""
        cfg = self.cfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "adafactor":
            opt = torch.optim.Adafactor(groups, lr=cfg.lr)
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        steps_per_epoch = math.ceil(math.ceil(len(self.train) / cfg.batch_size) / cfg.grad_accum)
        return opt, warmup_cosine(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.epochs * steps_per_epoch,
                                  min_lr_ratio=cfg.min_lr_ratio)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        distributed.seed_rank(self.cfg.seed, epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)  # the same global batches on every rank
        return list(self.train.batches(self.cfg.batch_size, shuffle=True, generator=gen))

    def loss(self, net: torch.nn.Module, rows: torch.Tensor) -> StepLoss:
        """The token loss of this rank's slice of the batch's rows (units: trained token positions)."""
        cfg = self.cfg
        rows, empty = distributed.local_rows(rows)  # this rank's slice of the global batch
        batch = self.model.collate(self.train, rows, train_eos=cfg.train_eos).to(self.device)
        item_logits = self.teacher_logits(batch) if self.teacher_logits is not None else None
        if item_logits is not None and cfg.cf_exclude_history:
            item_logits = exclude_history(item_logits, batch.histories)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            out = net(batch)
        # a model may add a loss of its own from the same pass (decoder-only `item_loss: every`)
        logits, extra = out if isinstance(out, tuple) else (out, None)
        loss = token_loss(cfg, logits, batch.labels, batch.target_tokens, index=self.index,
                          tokenizer=self.tokenizer, item_logits=item_logits)
        if extra is not None:
            loss = loss + extra
        return StepLoss(loss, 0 if empty else int((batch.labels != -100).sum()))

    def validate(self) -> dict[str, float]:
        cfg = self.cfg
        return evaluate(self.model, self.valid, teacher=self.teacher, protocol=self.protocol,
                        num_beams=cfg.num_beams, batch_size=cfg.eval_batch_size, max_rows=cfg.valid_max_rows,
                        renormalize=cfg.msl, temperature=cfg.tau, progress=cfg.progress,
                        teacher_exclude_history=self.teacher_exclude_history)

    def fingerprint(self) -> dict:
        return config_to_dict(self.cfg)

    def check_resumable(self, stored: dict, ckpt: Path) -> None:
        """The training config may differ only in RESUMABLE_CHANGES; the model and its item tokenization not."""
        now = config_to_dict(self.cfg)
        # a checkpoint written before an option existed ran with that option's default
        stored = {**TrainConfig.stage_key_omits, **stored}
        diff = [k for k in now if k not in RESUMABLE_CHANGES and stored.get(k) != now[k]]
        if diff:
            raise SemrecError(f"{ckpt.parents[1]}: cannot resume, the training config changed in "
                              f"{', '.join(diff)} (use another output directory)")
        saved = read_json(ckpt / "model" / "config.json")
        mine = self.model.config_json()
        checks = (("arch", "model architecture"), ("config", "model config"), ("tokenization", "item tokenization"))
        for key, what in checks:
            if saved.get(key) != mine[key]:
                raise SemrecError(f"{ckpt}: cannot resume, the checkpoint has another {what} "
                                  "(use another output directory)")

    def record(self, s: EpochSummary) -> dict:
        rec = {"kind": "epoch", "epoch": s.epoch, "step": s.step, "train_loss": s.train_loss, "lr": s.lr}
        rec.update({f"valid_{k}": v for k, v in (s.valid or {}).items()})
        rec["wall_time_s"] = s.wall_time_s
        return rec

    def annotate(self, state: dict) -> None:
        """The training set-up and outcome, saved in the model's config.json."""
        c = self.cfg
        info = {"loss": c.loss, "alpha": c.alpha if c.loss == "tca" else None, "tau": c.tau, "msl": c.msl,
                "aux_lambda": c.aux_lambda if c.loss == "aux_kl" else None,
                "smoothing": c.smoothing if c.loss == "label_smoothing" else None,
                "cf_temperature": c.cf_temperature if uses_teacher(c) else None, "seed": c.seed,
                "epochs_run": state["epoch"] + 1, "steps": state["step"], "monitor": c.monitor,
                "best_epoch": state.get("best_epoch"), "best_metric": state.get("best_metric")}
        if self.teacher is not None:
            info["teacher"] = getattr(self.teacher, "name", type(self.teacher).__name__)
        self.model.training_info = info


class Trainer:
    """Trains a GenerativeRecommender in the shared loop (see the module docstring)."""

    def __init__(self, model, config: TrainConfig, train: Examples | ExampleTable, *,
                 valid: Examples | ExampleTable | None = None, teacher=None, teacher_logits: Any = None,
                 out_dir: str | Path | None = None, protocol: str = "T", teacher_exclude_history: bool = False):
        """`teacher_exclude_history`: the teacher ranks only the items a row has not read (it was scored that
        way, `exclude_history`), so the validation CC is against its best unread item, as in the evaluation."""
        self.model = model
        self.cfg = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(config.device)
        hist_len = history_len_for(model, teacher)
        train = train if isinstance(train, ExampleTable) else ExampleTable.from_examples(train, hist_len)
        if valid is not None and config.valid_rows == "new_items":
            valid = new_item_rows(valid)
        if valid is not None and not isinstance(valid, ExampleTable):
            valid = ExampleTable.from_examples(
                valid, history_len_for(model, teacher, valid, teacher_exclude_history=teacher_exclude_history))
        if len(train) == 0:
            raise SemrecError("training: no training examples")
        n_items = model.codes.shape[0]
        source = None
        if uses_teacher(config):
            if teacher is None and teacher_logits is None:
                raise SemrecError(f"loss '{config.loss}' needs a CF teacher or precomputed teacher logits")
            source = TeacherLogits(teacher if teacher_logits is None else None, teacher_logits)
            if source.num_items != n_items:
                raise SemrecError(f"CF teacher scores {source.num_items} items, the item tokenization has {n_items}")
            if teacher_logits is not None and teacher_logits.shape[0] != len(train):
                raise SemrecError(f"precomputed teacher logits have {teacher_logits.shape[0]} rows, "
                                  f"training examples {len(train)}")
        self.task = GenerativeTask(model, config, train, valid, teacher=teacher, teacher_logits=source,
                                   protocol=protocol, teacher_exclude_history=teacher_exclude_history)

    def fit(self, *, resume: bool = True) -> TrainResult:
        """Train (resuming from out_dir/checkpoints/last if present and `resume`) and return a TrainResult.
        The model ends with the weights of the best validation epoch (the last epoch without validation)."""
        c = self.cfg
        loop = TrainingLoop(self.task, LoopConfig(
            epochs=c.epochs, seed=c.seed, batch_size=c.batch_size, grad_accum=c.grad_accum,
            max_grad_norm=c.max_grad_norm, validate_every=c.valid_every, patience=c.patience,
            log_every=c.log_every, progress=c.progress), device=self.device, run_dir=self.out_dir)
        run = loop.run(resume=resume)
        self.device, state = loop.device, run.state
        return TrainResult(epochs_run=state["epoch"] + 1, steps=state["step"], best_epoch=state["best_epoch"],
                           best_metric=state["best_metric"], monitor=c.monitor, stopped_early=state["stopped_early"],
                           wall_time_s=run.wall_time_s, best_dir=run.best_dir, history=run.history)
