"""Training a CF teacher in the shared loop (`semrec.training.loop`): full-softmax cross-entropy (default)
or sampled BCE, AdamW, early stopping on validation NDCG@10 with the best weights restored, resumable
per-epoch checkpoints. `TeacherTask` is what the loop needs to know of a teacher.

What the teacher trains on is defined in `semrec.cf.sequences` (train split only; valid added only
with `include_valid`; the test split is never read). In short:
- protocol P: each user's seq[:-2] (every item but the valid and test targets), every position;
- protocol T: the 10,000 train rows, each history of 10 + target as one 11-item sequence, every
  position (10 targets per row); valid/test histories are not used.
With `include_valid=True` (a final test-time teacher), valid rows are added, no model selection is
done, and training runs exactly `epochs` epochs (take the best epoch of a selection run). With
`new_items=True` a next-item teacher skips the pairs whose target it has just read (repeats), so it learns
to rank the items a user has not seen: the distribution a student asks for with `cf_exclude_history`.

Only positions that carry a real target are scored: the trainer cuts sequences into windows,
groups windows of similar length (each batch holds about `batch_size` windows' worth of targets),
trims the padding columns of each batch, and computes the (M, N) logits for the M real targets only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from semrec import distributed
from semrec.artifacts import atomic_file, read_json, write_json
from semrec.cf.base import CONFIG_NAME, CFTeacher, build_teacher
from semrec.cf.evaluate import evaluate_teacher, target_in_history_rate
from semrec.cf import sequences
from semrec.config import config_to_dict
from semrec.data.dataset import SeqDataset
from semrec.errors import SemrecError
from semrec.metrics import DEFAULT_KS
from semrec.runtime import describe_machine, git_commit, resolve_device
from semrec.training.loop import EpochSummary, LoopConfig, StepLoss, TrainingLoop, TrainingTask


@dataclass
class TeacherTrainConfig:
    epochs: int = 50  # cap (early stopping usually ends sooner); exact count when include_valid
    batch_size: int = 128  # windows per batch on average (batches are balanced by target count)
    lr: float = 0.003
    weight_decay: float = 0.0
    loss: Literal["ce", "bce"] = "ce"  # full softmax CE, or BCE with sampled negatives
    num_negatives: int = 1  # per target, for loss = "bce"
    grad_clip: float = 1.0  # max grad norm; 0 = off
    patience: int = 5  # evaluations without improvement before stopping
    eval_every: int = 1  # epochs between validation runs
    metric: str = "ndcg@10"  # selection metric on the valid split
    ks: tuple[int, ...] = DEFAULT_KS
    eval_batch_size: int = 1024
    exclude_history: bool = False  # remove history items from the ranking at evaluation
    include_valid: bool = False  # also train on valid rows (no selection; fixed epochs)
    # train only on the next-item pairs whose target is not among the items read before it: a teacher of
    # new items (for repeat-heavy data whose students distill with `cf_exclude_history`); next-item teachers
    new_items: bool = False
    seed: int = 0

    stage_key_omits = {"new_items": False}

    def __post_init__(self) -> None:
        for k in ("epochs", "batch_size", "num_negatives", "patience", "eval_every", "eval_batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be at least 1")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        name, _, k = self.metric.partition("@")
        if name not in ("hr", "recall", "ndcg") or not k.isdigit() or int(k) not in self.ks:
            if self.metric != "mrr":
                raise ValueError(f"metric must be hr@K, recall@K, ndcg@K (K in ks) or mrr, got {self.metric!r}")


@dataclass
class TeacherTrainResult:
    best_epoch: int
    epochs_run: int
    best_valid: dict[str, float]
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    num_windows: int = 0
    num_targets: int = 0
    num_sequences: int = 0


def length_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """Index batches of windows with similar lengths, each holding about batch_size * mean(lengths)
    targets, in random order. `lengths` (W,) counts the targets of each window."""
    w = len(lengths)
    jitter = torch.rand(w, generator=generator).numpy()
    order = np.lexsort((jitter, lengths))
    budget = max(1.0, batch_size * float(lengths.mean()))
    cum = np.cumsum(lengths[order])
    cuts = np.searchsorted(cum, np.arange(budget, cum[-1], budget), side="right")
    batches = [b for b in np.split(order, np.unique(cuts)) if len(b)]
    perm = torch.randperm(len(batches), generator=generator).numpy()
    return [batches[i] for i in perm]


def loss_fn(model: CFTeacher, hidden: torch.Tensor, targets: torch.Tensor, cfg: TeacherTrainConfig,
            generator: torch.Generator) -> torch.Tensor:
    """Mean loss over the M scored positions. hidden (M, d), targets (M,) 0-based."""
    if cfg.loss == "ce":
        return F.cross_entropy(model.score_hidden(hidden), targets)
    items = model.item_embeddings()
    neg = torch.randint(0, model.num_items, (targets.shape[0], cfg.num_negatives), generator=generator)
    neg = neg.to(targets.device)
    pos_logit = (hidden * items[targets]).sum(-1)
    neg_logit = torch.einsum("md,mkd->mk", hidden, items[neg])
    valid_neg = (neg != targets[:, None]).float()  # a sampled negative equal to the target is ignored
    pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit), reduction="none")
    neg_loss = F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit), reduction="none")
    return (pos_loss + (neg_loss * valid_neg).sum(-1)).mean()


class _PairLoss(torch.nn.Module):
    """The teacher's training loss as one module call, so DistributedDataParallel can wrap it: returns
    (the mean loss over this rank's scored targets, their count). A rank with nothing to score (`windows`
    with no rows) returns a zero that still touches every parameter, as DDP needs."""

    def __init__(self, model: CFTeacher, cfg: TeacherTrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, windows: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        if windows.shape[0]:
            hidden, targets = self.model.training_pairs(windows, generator, new_items=self.cfg.new_items)
            if targets.numel():
                return loss_fn(self.model, hidden, targets, self.cfg, generator), targets.numel()
        return sum(p.sum() for p in self.model.parameters()) * 0.0, 0


class TeacherTask(TrainingTask):
    """Training a CF teacher on the windows of its training sequences (see the module docstring):
    length-grouped batches drawn from the task's generator (checkpointed), the teacher's training pairs
    (next-item or cloze) scored by `loss_fn`, validation by full ranking on the valid split. Under DDP
    each rank takes a slice of every global batch's windows and draws masks and negatives from a stream of
    its own."""

    mean_over_units = True

    def __init__(self, model: CFTeacher, dataset: SeqDataset, cfg: TeacherTrainConfig, *,
                 on_batch: Callable[[torch.Tensor], None] | None = None):
        self.name, self.model, self.dataset, self.cfg, self.on_batch = model.name, model, dataset, cfg, on_batch
        self.sequences, _ = sequences.training_sequences(dataset, include_valid=cfg.include_valid)
        self.windows = sequences.make_windows(self.sequences, model.max_len + model.window_extra, model.window_overlap)
        self.n_targets = sequences.window_lengths(self.windows) - model.window_overlap
        if len(self.windows) == 0:
            raise SemrecError(f"dataset {dataset.name}: no training sequence has two or more items")
        if cfg.new_items and not model.next_item_pairs:
            raise SemrecError(f"{model.name}: new_items needs a next-item teacher (sasrec, gru4rec)")
        self.monitor, self.validates = cfg.metric, not cfg.include_valid
        if self.validates and len(dataset.valid) == 0:
            raise SemrecError(f"dataset {dataset.name}: the valid split is empty; early stopping needs it "
                              "(or set include_valid with a fixed epoch count)")
        self.gen = torch.Generator().manual_seed(cfg.seed)  # batch order; in one process also masks/negatives
        self.pair_gen = self.gen
        self.generators = {"teacher": self.gen}

    def prepare(self, device: torch.device) -> torch.nn.Module:
        self.device = device
        self.model.to(device)
        return _PairLoss(self.model, self.cfg)

    def optimizers(self) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay), None

    def batches(self, epoch: int) -> list[np.ndarray]:
        """Window indices of each batch (`gen` draws the same batches on every rank)."""
        batches = length_batches(self.n_targets, self.cfg.batch_size, self.gen)
        if distributed.is_distributed():  # masks/negatives: a per-rank stream (the batch order stays on `gen`)
            distributed.seed_rank(self.cfg.seed, epoch + 1)
            self.pair_gen = torch.Generator().manual_seed(torch.initial_seed() % (2**63))
        return batches

    def loss(self, net: torch.nn.Module, idx: np.ndarray) -> StepLoss | None:
        """The loss of this rank's windows of the batch (units: scored targets)."""
        w = torch.from_numpy(self.windows[idx])
        w = w[:, -int((w >= 0).sum(1).max()):]  # drop all-padding columns (of the global batch)
        part = torch.tensor_split(w, distributed.world_size())[distributed.rank()]  # this rank's windows
        if self.on_batch is not None and len(part):
            self.on_batch(part)
        loss, n = net(part.to(self.device), self.pair_gen)
        if n == 0 and not distributed.is_distributed():
            return None
        return StepLoss(loss, n)

    def validate(self) -> dict[str, float]:
        cfg = self.cfg
        return evaluate_teacher(self.model, self.dataset.valid, ks=cfg.ks, exclude_history=cfg.exclude_history,
                                batch_size=cfg.eval_batch_size)

    def fingerprint(self) -> dict:
        ds = self.dataset
        return {"train": config_to_dict(self.cfg), "data": ds.name,
                "n": [len(ds.train), len(ds.valid), ds.num_items]}

    def check_resumable(self, stored: dict, ckpt: Path) -> None:
        """The training config, the data and the teacher's config must be those of the checkpointed run."""
        saved_model = read_json(ckpt / "model" / CONFIG_NAME)
        same = [json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
                for a, b in ((stored, self.fingerprint()), (saved_model, self.model.config_dict()))]
        if not all(same):
            raise SemrecError(f"{ckpt.parents[1]}: holds a partial run with another model/data/config; "
                              "delete it or pass --restart")

    def record(self, s: EpochSummary) -> dict:
        rec = {"kind": "epoch", "epoch": s.epoch + 1, "train_loss": s.train_loss, "train_targets": s.units,
               "epoch_time_s": round(s.train_time_s, 3)}
        if s.valid is not None:
            rec.update(valid=s.valid, eval_time_s=round(s.valid_time_s, 3))
        return rec


def train_teacher(
    model: CFTeacher,
    dataset: SeqDataset,
    cfg: TeacherTrainConfig,
    *,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[torch.Tensor], None] | None = None,
) -> TeacherTrainResult:
    """Train `model` in place on `dataset` (see the module docstring); returns what happened.

    checkpoint_dir: the run directory (laid out as `Trainer`'s out_dir: checkpoints/last after every
    epoch, best/, metrics.jsonl); a later call with the same model/data/config resumes from it.
    on_batch: called with every (B, W) window tensor the model is trained on (for instrumentation).
    At the end the model holds the best validation checkpoint (or the last epoch if include_valid).
    """
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "last" / "meta.json").is_file():
        raise SemrecError(f"{checkpoint_dir}: holds a checkpoint of an earlier semrec version (last/meta.json) "
                          "that this one cannot resume; delete it or pass --restart")
    dev = resolve_device(device) if isinstance(device, str) else device
    task = TeacherTask(model, dataset, cfg, on_batch=on_batch)
    loop = LoopConfig(epochs=cfg.epochs, seed=cfg.seed, batch_size=cfg.batch_size, max_grad_norm=cfg.grad_clip,
                      validate_every=cfg.eval_every, patience=cfg.patience, progress=progress)
    run = TrainingLoop(task, loop, device=dev, run_dir=checkpoint_dir).run()
    state = run.state
    best_epoch = state["best_epoch"] + 1 if task.validates else state["epoch"] + 1
    num_targets = int(task.n_targets.sum())
    if cfg.new_items:  # the repeats are left out when the pairs are made: count what an epoch trained on
        num_targets = next((h["train_targets"] for h in run.history if "train_targets" in h), num_targets)
    return TeacherTrainResult(best_epoch=best_epoch, epochs_run=state["epoch"] + 1,
                              best_valid=state["best_valid"] or {}, history=run.history, wall_time_s=run.wall_time_s,
                              num_windows=len(task.windows), num_targets=num_targets,
                              num_sequences=len(task.sequences))


def train_and_evaluate_teacher(model_name: str, model_config: Any, cfg: TeacherTrainConfig, dataset: SeqDataset, *,
                               device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None,
                               progress: bool = True) -> tuple[CFTeacher, TeacherTrainResult, dict]:
    """Build teacher `model_name` (a semrec.cf.TEACHERS name), train it (`train_teacher`) and evaluate it on
    valid and test with `cfg`'s ranking settings. Returns the model, the training result and the metrics
    record that `save_teacher_run` writes as metrics.json."""
    t0 = time.time()
    dev = resolve_device(device) if isinstance(device, str) else device
    distributed.init(dev)  # under torchrun: train and evaluate on every rank
    dev = distributed.local_device(dev)
    model = build_teacher(model_name, dataset.num_items, model_config, seed=cfg.seed)
    res = train_teacher(model, dataset, cfg, device=dev, checkpoint_dir=checkpoint_dir, progress=progress)
    kw = dict(ks=cfg.ks, exclude_history=cfg.exclude_history, batch_size=cfg.eval_batch_size)
    valid = evaluate_teacher(model, dataset.valid, **kw) if len(dataset.valid) else {}
    test = evaluate_teacher(model, dataset.test, **kw) if len(dataset.test) else {}
    metrics = {
        "model": model_name, "dataset": dataset.name, "protocol": dataset.protocol, "seed": cfg.seed,
        "valid": valid, "test": test,
        "valid_seen_in_training": cfg.include_valid,
        "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
        "selection": None if cfg.include_valid else f"valid {cfg.metric}, patience {cfg.patience}",
        "exclude_history": cfg.exclude_history,
        "target_in_history": {"valid": target_in_history_rate(dataset.valid),
                              "test": target_in_history_rate(dataset.test)},
        "train_data": {"sequences": res.num_sequences, "windows": res.num_windows, "targets": res.num_targets,
                       "splits_used": ["train", "valid"] if cfg.include_valid else ["train"]},
        "wall_time_s": round(time.time() - t0, 2), "train_time_s": round(res.wall_time_s, 2),
        "device": describe_machine(dev), "commit": git_commit(),
    }
    return model, res, metrics


def save_teacher_run(directory: str | Path, model: CFTeacher, result: TeacherTrainResult, metrics: dict,
                     cfg: TeacherTrainConfig, *, model_dir: str | Path | None = None) -> None:
    """Write a teacher trained by `train_and_evaluate_teacher`, the one way `semrec train-cf` and the
    pipeline's teacher stage do: the teacher (config.json with its training set-up as `extra`, and
    model.safetensors) in `model_dir` (default: `directory`), metrics.json (the metrics record) and
    train_log.jsonl (one line per epoch) in `directory`."""
    directory = Path(directory)
    model_dir = Path(model_dir) if model_dir is not None else directory
    model_dir.mkdir(parents=True, exist_ok=True)
    extra = {"dataset": metrics["dataset"], "protocol": metrics["protocol"], "train": config_to_dict(cfg),
             "best_epoch": result.best_epoch, "train_rows": " ".join((sequences.__doc__ or "").split())}
    model.save_to(model_dir, extra=extra)
    write_json(directory / "metrics.json", metrics)
    with atomic_file(directory / "train_log.jsonl") as f:
        f.writelines(json.dumps(h) + "\n" for h in result.history)
