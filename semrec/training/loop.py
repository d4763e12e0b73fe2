"""The one training loop, for CF teachers and generative models alike.

    result = TrainingLoop(task, LoopConfig(epochs=20, seed=0, batch_size=256), device=device,
                          run_dir="runs/x").run()   # resumes from run_dir/checkpoints/last when it exists

What is trained, how a batch is drawn and scored and how validation is measured belongs to the task
(a `TrainingTask`: `semrec.training.trainer.GenerativeTask`, `semrec.training.teacher.TeacherTask`). The
loop does the rest the same way for both: epochs of micro-batches with gradient accumulation and
clipping; DDP (each rank computes its share of every global batch, gradients of the global batch's mean);
validation every `validate_every` epochs with early stopping on the task's monitor and the best weights
kept (run_dir/best, or in memory) and restored at the end; a resumable checkpoint after every epoch; the
metrics log; progress. A run interrupted at any point and resumed ends with the same weights as an
uninterrupted one (same seed, CPU).

run_dir holds train_config.json (the task's fingerprint, checked before resuming), checkpoints/last/
(`semrec.training.checkpoint`), best/, and metrics.jsonl + metrics.csv (`MetricsLog`).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from semrec import distributed
from semrec.artifacts import read_json, write_json
from semrec.errors import SemrecError
from semrec.runtime import seed_everything
from semrec.training.checkpoint import load_checkpoint, save_checkpoint
from semrec.training.metrics_log import MetricsLog


@dataclass
class LoopConfig:
    """The loop's settings, filled from a TrainConfig or a TeacherTrainConfig."""

    epochs: int
    seed: int
    batch_size: int  # global batch; a multiple of the world size
    grad_accum: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping
    validate_every: int = 1  # epochs; the last epoch is always validated
    patience: int = 0  # validations without improvement before stopping; 0: never stop early
    log_every: int = 0  # optimizer steps between "train" records of the log; 0: none
    progress: bool = True


@dataclass
class StepLoss:
    """A micro-batch's loss on this rank: the mean over its `units` trained targets (tokens, items)."""

    loss: torch.Tensor
    units: int


@dataclass
class EpochSummary:
    """What the loop measured in one epoch; `TrainingTask.record` turns it into a log record."""

    epoch: int  # 0-based
    step: int  # optimizer steps so far
    train_loss: float
    units: int  # trained units of the epoch, all ranks
    lr: float
    train_time_s: float
    valid: dict[str, float] | None = None
    valid_time_s: float = 0.0
    wall_time_s: float = 0.0  # since the start of `TrainingLoop.run`


@dataclass
class LoopResult:
    """What `TrainingLoop.run` returns."""

    state: dict  # epoch (the last finished, 0-based), step, best_*, bad_epochs, stopped_early
    history: list[dict]  # the epochs' records
    wall_time_s: float
    best_dir: Path | None  # the saved best model (None without run_dir or validation)


class TrainingTask(ABC):
    """What differs between training a CF teacher and a generative model.

    Attributes: `name` (how progress and errors name the run), `model` (the trained module, with
    `save_pretrained(dir, overwrite=)` and `load_weights(dir)`: checkpointed, kept as the best, restored),
    `monitor` (the validation metric, higher is better), `validates` (whether there is validation data)
    and `generators` (the task's own random generators, checkpointed).
    """

    name: str
    model: Any
    monitor: str
    validates: bool
    generators: dict[str, torch.Generator]
    mean_over_units: ClassVar[bool] = False  # the epoch's loss: mean over trained units, else over micro-batches

    @abstractmethod
    def prepare(self, device: torch.device) -> torch.nn.Module:
        """Move what the task computes with to `device`; return the module whose forward `loss` calls
        (the one DDP wraps)."""

    @abstractmethod
    def optimizers(self) -> tuple[torch.optim.Optimizer, Any]:
        """The optimizer and its learning-rate scheduler (None: a constant rate)."""

    @abstractmethod
    def batches(self, epoch: int) -> list:
        """Epoch `epoch`'s global batches, in order, the same on every rank."""

    @abstractmethod
    def loss(self, net: torch.nn.Module, batch: Any) -> StepLoss | None:
        """Forward this rank's share of a global batch through `net`. None: nothing to train on (one
        process only; under DDP every rank returns a loss, with 0 units when its share is empty)."""

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Validation metrics of the model as it is now."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """What a resumed run must share with the checkpointed one (JSON; kept in run_dir/train_config.json)."""

    @abstractmethod
    def check_resumable(self, stored: dict, ckpt: Path) -> None:
        """Raise a one-line SemrecError unless checkpoint `ckpt`, made by a run with fingerprint `stored`,
        may be continued by this run."""

    @abstractmethod
    def record(self, summary: EpochSummary) -> dict:
        """The epoch's log record and history entry (with "kind": "epoch")."""

    def annotate(self, state: dict) -> None:
        """Note the run's state on the model before it is saved (default: nothing to note)."""


@dataclass
class _Mean:
    """A running weighted mean of losses."""

    total: float = 0.0
    weight: int = 0

    def add(self, value: float, weight: int) -> None:
        self.total += value * weight
        self.weight += weight

    @property
    def mean(self) -> float:
        return self.total / max(self.weight, 1)


class TrainingLoop:
    """Runs a TrainingTask (see the module docstring); `device` becomes this rank's device under DDP."""

    def __init__(self, task: TrainingTask, config: LoopConfig, *, device: torch.device,
                 run_dir: str | Path | None = None):
        self.task = task
        self.cfg = config
        self.device = device
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def run(self, *, resume: bool = True) -> LoopResult:
        """Train (resuming from run_dir/checkpoints/last if present and `resume`). The model ends with the
        weights of the best validation epoch (the last epoch's without validation)."""
        cfg, task = self.cfg, self.task
        t0 = time.perf_counter()
        self._start(resume)
        state = self.state
        for epoch in range(state["epoch"] + 1, cfg.epochs):
            if state["stopped_early"]:
                break
            summary = self._train_epoch(epoch)
            state["epoch"] = epoch
            if task.validates and ((epoch + 1) % cfg.validate_every == 0 or epoch + 1 == cfg.epochs):
                self._validate_and_select(summary)
            summary.wall_time_s = time.perf_counter() - t0
            self._report(summary)
            if self.ckpt is not None and self.main:
                task.annotate(state)
                save_checkpoint(self.ckpt, model=task.model, optimizer=self.opt, scheduler=self.sched,
                                trainer_state=state, generators=task.generators)
        self.log.close()
        distributed.barrier()  # rank 0's best model is on disk before every rank loads it
        return self._finish(time.perf_counter() - t0)

    def _start(self, resume: bool) -> None:
        """Device, DDP, optimizer, schedule, and the state to start from (a checkpoint's when resuming,
        else a fresh one with the seed applied)."""
        cfg, task = self.cfg, self.task
        distributed.init(self.device)  # no-op unless launched by torchrun
        self.device = distributed.local_device(self.device)
        distributed.check_batch_size(cfg.batch_size)
        module = task.prepare(self.device)
        self.opt, self.sched = task.optimizers()
        self.main, self.world = distributed.is_main(), distributed.world_size()
        self.state = {"epoch": -1, "step": 0, "best_metric": None, "best_epoch": None, "best_valid": None,
                      "bad_epochs": 0, "stopped_early": False}
        self.ckpt = self.run_dir / "checkpoints" / "last" if self.run_dir is not None else None
        self.best_dir = self.run_dir / "best" if self.run_dir is not None else None
        self.best_mem: dict | None = None
        if self.ckpt is not None and resume and (self.ckpt / "trainer_state.json").is_file():
            task.check_resumable(read_json(self.run_dir / "train_config.json"), self.ckpt)
            self.state = load_checkpoint(self.ckpt, model=task.model, optimizer=self.opt, scheduler=self.sched,
                                         generators=task.generators)
        else:
            seed_everything(cfg.seed)  # dropout draws from the global generators: a fresh run starts from the seed
            if self.run_dir is not None and self.main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                write_json(self.run_dir / "train_config.json", task.fingerprint())
        distributed.barrier()  # every rank has read the checkpoint before rank 0 writes a new one
        self.log = MetricsLog(self.run_dir, keep_epochs=self.state["epoch"] + 1, write=self.main)
        self.net = distributed.wrap_ddp(module, self.device)  # DDP averages gradients over ranks (world > 1)

    def _train_epoch(self, epoch: int) -> EpochSummary:
        """One pass over the epoch's batches: a micro-step per batch, an optimizer step per group of
        `grad_accum` batches (skipped when the group had nothing to train on)."""
        cfg, task = self.cfg, self.task
        t0 = time.perf_counter()
        task.model.train()
        batches = task.batches(epoch)
        bar = tqdm(batches, desc=f"{task.name} epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=1.0,
                   disable=not (cfg.progress and self.main))
        epoch_loss, window_loss = _Mean(), _Mean()  # the epoch's, and since the last "train" record
        units, group_units = 0, 0
        self.opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            group_start = (i // cfg.grad_accum) * cfg.grad_accum
            group = min(cfg.grad_accum, len(batches) - group_start)
            last_of_group = i + 1 == group_start + group
            value, n = self._micro_step(batch, epoch, last_of_group=last_of_group, group=group)
            if n:
                weight = n if task.mean_over_units else 1
                epoch_loss.add(value, weight)
                window_loss.add(value, weight)
                units, group_units = units + n, group_units + n
            if last_of_group and group_units:
                self._optimizer_step(epoch, window_loss)
                bar.set_postfix(loss=f"{epoch_loss.mean:.4f}", refresh=False)
                group_units = 0
        bar.close()
        return EpochSummary(epoch=epoch, step=self.state["step"], train_loss=epoch_loss.mean, units=units,
                            lr=self.opt.param_groups[0]["lr"], train_time_s=time.perf_counter() - t0)

    def _micro_step(self, batch: Any, epoch: int, *, last_of_group: bool, group: int) -> tuple[float, int]:
        """Forward and backward of one micro-batch (this rank's share of it); returns its global mean loss
        and trained units (0: nothing to train on)."""
        # gradients are all-reduced only on a group's last micro-batch
        with distributed.no_sync(self.net, not last_of_group):
            out = self.task.loss(self.net, batch)
            if out is None:
                return 0.0, 0
            loss, value, units = out.loss, float(out.loss.detach()), out.units
            if self.world > 1:
                loss, value, units = _global_mean(out.loss, out.units, self.world)
            if not math.isfinite(value):  # the same on every rank, so all stop together
                raise SemrecError(f"{self.task.name}: training diverged: loss is {value} in epoch {epoch + 1}, "
                                  f"step {self.state['step']} (lower the learning rate)")
            (loss / group).backward()
        return value, units

    def _optimizer_step(self, epoch: int, window_loss: _Mean) -> None:
        """Clip, step the optimizer and the schedule, and log a "train" record every `log_every` steps."""
        cfg, state = self.cfg, self.state
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.task.model.parameters(), cfg.max_grad_norm)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        state["step"] += 1
        if cfg.log_every and state["step"] % cfg.log_every == 0:
            self.log.log({"kind": "train", "epoch": epoch, "step": state["step"], "loss": window_loss.mean,
                          "lr": self.opt.param_groups[0]["lr"]})
            window_loss.total, window_loss.weight = 0.0, 0

    def _validate_and_select(self, summary: EpochSummary) -> None:
        """Validate, keep the best model (run_dir/best, or in memory) and decide early stopping."""
        cfg, task, state = self.cfg, self.task, self.state
        t0 = time.perf_counter()
        metrics = distributed.broadcast_object(task.validate())  # one decision for all ranks
        if task.monitor not in metrics:
            raise SemrecError(f"monitor '{task.monitor}' is not a validation metric; "
                              f"known: {', '.join(k for k in metrics if '@' in k or k in ('mrr', 'cc'))}")
        summary.valid, summary.valid_time_s = metrics, time.perf_counter() - t0
        value = metrics[task.monitor]
        if state["best_metric"] is None or value > state["best_metric"]:
            state.update(best_metric=value, best_epoch=summary.epoch, best_valid=metrics, bad_epochs=0)
            task.annotate(state)
            if self.best_dir is not None:
                if self.main:
                    task.model.save_pretrained(self.best_dir, overwrite=True)
            else:
                self.best_mem = {k: v.detach().cpu().clone() for k, v in task.model.state_dict().items()}
        else:
            state["bad_epochs"] += 1
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                state["stopped_early"] = True

    def _report(self, summary: EpochSummary) -> None:
        """Log the epoch's record and, with progress on, print its line."""
        task, state = self.task, self.state
        self.log.log(task.record(summary))
        if self.cfg.progress and self.main:
            v = summary.valid
            extra = (f" valid {task.monitor} {v[task.monitor]:.4f} (best {state['best_metric']:.4f} "
                     f"@ {state['best_epoch'] + 1})" if v else "")
            tqdm.write(f"{task.name} epoch {summary.epoch + 1}: loss {summary.train_loss:.4f}{extra} "
                       f"[{summary.train_time_s:.0f}s]")

    def _finish(self, wall_time_s: float) -> LoopResult:
        """Restore the best weights and describe the run."""
        model, state = self.task.model, self.state
        best_dir = None
        if state["best_epoch"] is not None:
            if self.best_dir is not None:
                best_dir = self.best_dir
                model.load_weights(best_dir)
                model.to(self.device)
            elif self.best_mem is not None:
                model.load_state_dict(self.best_mem)
        self.task.annotate(state)
        model.eval()
        return LoopResult(state=state, history=list(self.log.epochs), wall_time_s=wall_time_s, best_dir=best_dir)


def _global_mean(loss: torch.Tensor, units: int, world: int) -> tuple[torch.Tensor, float, int]:
    """Rescale this rank's mean loss so that DDP's gradient average equals the gradient of the mean over
    the GLOBAL batch's trained units (ranks may hold different counts: variable-length titles, ignored EOS,
    windows of other lengths): local_sum / global_count * world. Returns it, the global mean (a float, the
    same on every rank) and the global count."""
    local_sum = loss.detach().double() * units if units else torch.zeros((), dtype=torch.float64,
                                                                         device=loss.device)
    n, total = distributed.all_reduce_sum(torch.stack([local_sum.new_tensor(float(units)), local_sum])).tolist()
    if n == 0:
        return loss * 0.0, 0.0, 0
    return loss * (units * world / n), total / n, int(n)
