"""One trainer for every GenerativeRecommender (TIGER, decoder-only, title-token LLMs).

    trainer = Trainer(model, TrainConfig(loss="tca", alpha=0.1), train_examples,
                      valid=dataset.valid, teacher=teacher, out_dir="runs/tiger_tca")
    result = trainer.fit()          # resumes from out_dir/checkpoints/last when it exists

Each epoch: shuffled batches (order drawn from a generator seeded by (seed, epoch)), AdamW with linear
warmup + cosine decay, gradient accumulation, gradient clipping, bf16 autocast (CUDA; a CPU with native
bf16 when `bf16: true`); then validation by beam search (`semrec.evaluation.evaluate`), early stopping on
`monitor`, the best model saved to out_dir/best, and a resumable checkpoint in out_dir/checkpoints/last.
A run interrupted at any point and resumed ends with the same weights as an uninterrupted run (same seed, CPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semrec import distributed
from semrec.cf.base import check_logits, teacher_name
from semrec.config import config_to_dict
from semrec.data.dataset import Examples
from semrec.errors import SemrecError
from semrec.artifacts import read_json, write_json
from semrec.data.examples import ExampleTable
from semrec.tca import CollaborativeTokenizer
from semrec.training.checkpoint import load_checkpoint, save_checkpoint
from semrec.training.config import RESUMABLE_CHANGES, TrainConfig
from semrec.training.metrics_log import MetricsLog
from semrec.training.losses import token_loss, uses_teacher
from semrec.training.schedule import warmup_cosine
from semrec.runtime import bf16_autocast, resolve_device, seed_everything


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


class Trainer:
    def __init__(self, model, config: TrainConfig, train: Examples | ExampleTable, *,
                 valid: Examples | ExampleTable | None = None, teacher=None, teacher_logits: Any = None,
                 out_dir: str | Path | None = None, protocol: str = "T"):
        self.model = model
        self.cfg = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.protocol = protocol
        self.device = resolve_device(config.device)
        self.teacher = teacher
        hist_len = max(model.max_history, int(getattr(teacher, "max_len", 0) or 0))
        self.train = train if isinstance(train, ExampleTable) else ExampleTable.from_examples(train, hist_len)
        self.valid = (valid if valid is None or isinstance(valid, ExampleTable)
                      else ExampleTable.from_examples(valid, hist_len))
        if len(self.train) == 0:
            raise SemrecError("training: no training examples")
        n_items = model.codes.shape[0]
        self.teacher_logits = None
        if uses_teacher(config):
            if teacher is None and teacher_logits is None:
                raise SemrecError(f"loss '{config.loss}' needs a CF teacher or precomputed teacher logits")
            self.teacher_logits = TeacherLogits(teacher if teacher_logits is None else None, teacher_logits)
            if self.teacher_logits.num_items != n_items:
                raise SemrecError(f"CF teacher scores {self.teacher_logits.num_items} items, "
                                  f"the item tokenization has {n_items}")
            if teacher_logits is not None and teacher_logits.shape[0] != len(self.train):
                raise SemrecError(f"precomputed teacher logits have {teacher_logits.shape[0]} rows, "
                                  f"training examples {len(self.train)}")

    # ------------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if self.cfg.optimizer == "adafactor":
            return torch.optim.Adafactor(groups, lr=self.cfg.lr)
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.adam_beta1, self.cfg.adam_beta2))

    def _batches_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    def _check_resumable(self, ckpt: Path) -> None:
        stored = read_json(self.out_dir / "train_config.json")
        now = config_to_dict(self.cfg)
        diff = [k for k in now if k not in RESUMABLE_CHANGES and stored.get(k) != now[k]]
        if diff:
            raise SemrecError(f"{self.out_dir}: cannot resume, the training config changed in "
                              f"{', '.join(diff)} (use another output directory)")
        saved = read_json(ckpt / "model" / "config.json")
        mine = self.model.config_json()
        checks = (("arch", "model architecture"), ("config", "model config"), ("tokenization", "item tokenization"))
        for key, what in checks:
            if saved.get(key) != mine[key]:
                raise SemrecError(f"{ckpt}: cannot resume, the checkpoint has another {what} "
                                  "(use another output directory)")

    def _validate(self, epoch: int) -> dict[str, float]:
        from semrec.evaluation import evaluate

        cfg = self.cfg
        metrics = evaluate(self.model, self.valid, teacher=self.teacher, protocol=self.protocol,
                           num_beams=cfg.num_beams, batch_size=cfg.eval_batch_size, max_rows=cfg.valid_max_rows,
                           renormalize=cfg.msl, temperature=cfg.tau, progress=cfg.progress)
        if cfg.monitor not in metrics:
            raise SemrecError(f"monitor '{cfg.monitor}' is not a validation metric; "
                              f"known: {', '.join(k for k in metrics if '@' in k or k in ('mrr', 'cc'))}")
        return metrics

    def _training_info(self, state: dict) -> dict:
        c = self.cfg
        info = {"loss": c.loss, "alpha": c.alpha if c.loss == "tca" else None, "tau": c.tau, "msl": c.msl,
                "aux_lambda": c.aux_lambda if c.loss == "aux_kl" else None,
                "smoothing": c.smoothing if c.loss == "label_smoothing" else None,
                "cf_temperature": c.cf_temperature if uses_teacher(c) else None, "seed": c.seed,
                "epochs_run": state["epoch"] + 1, "steps": state["step"], "monitor": c.monitor,
                "best_epoch": state.get("best_epoch"), "best_metric": state.get("best_metric")}
        if self.teacher is not None:
            info["teacher"] = getattr(self.teacher, "name", type(self.teacher).__name__)
        return info

    # ------------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = True) -> TrainResult:
        """Train (resuming from out_dir/checkpoints/last if present and `resume`) and return a TrainResult.
        The model ends with the weights of the best validation epoch (the last epoch without validation)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        run = self._start(resume)
        for epoch in range(run.state["epoch"] + 1, cfg.epochs):
            if run.state["stopped_early"]:
                break
            record = self._train_epoch(run, epoch)
            run.state["epoch"] = epoch
            if self.valid is not None and ((epoch + 1) % cfg.valid_every == 0 or epoch + 1 == cfg.epochs):
                self._validate_and_select(run, epoch, record)
            record["wall_time_s"] = time.perf_counter() - t0
            run.log.log(record)
            if run.ckpt is not None and run.main:
                self.model.training_info = self._training_info(run.state)
                save_checkpoint(run.ckpt, model=self.model, optimizer=run.opt, scheduler=run.sched,
                                trainer_state=run.state)
        run.log.close()
        distributed.barrier()  # rank 0's best model is on disk before every rank loads it
        return self._finish(run, time.perf_counter() - t0)

    def _start(self, resume: bool) -> "_Run":
        """Device, DDP, optimizer, schedule, prefix index, CF tokenizer, and the state to start from
        (a checkpoint's when resuming, else a fresh one with the seed applied)."""
        cfg = self.cfg
        distributed.init(self.device)  # no-op unless launched by torchrun
        self.device = distributed.local_device(self.device)
        distributed.check_batch_size(cfg.batch_size)
        model = self.model.to(self.device)
        if self.teacher_logits is not None:
            self.teacher_logits.to(self.device)
        opt = self._optimizer()
        steps_per_epoch = math.ceil(self._batches_per_epoch() / cfg.grad_accum)
        sched = warmup_cosine(opt, warmup_steps=cfg.warmup_steps, total_steps=cfg.epochs * steps_per_epoch,
                              min_lr_ratio=cfg.min_lr_ratio)
        index = model.prefix_index()
        tokenizer = None
        if uses_teacher(cfg):
            tokenizer = CollaborativeTokenizer(index, temperature=cfg.cf_temperature, top_k=cfg.cf_top_k)
        main = distributed.is_main()
        state = {"epoch": -1, "step": 0, "best_metric": None, "best_epoch": None, "bad_epochs": 0,
                 "stopped_early": False}
        ckpt = self.out_dir / "checkpoints" / "last" if self.out_dir is not None else None
        if ckpt is not None and resume and (ckpt / "trainer_state.json").is_file():
            self._check_resumable(ckpt)
            state = load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched)
        else:
            seed_everything(cfg.seed)  # dropout draws from the global generators: a fresh run starts from the seed
            if self.out_dir is not None and main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                write_json(self.out_dir / "train_config.json", config_to_dict(cfg))
        distributed.barrier()  # every rank has read the checkpoint before rank 0 writes a new one
        log = MetricsLog(self.out_dir if main else None, keep_before_epoch=state["epoch"] + 1)
        net = distributed.wrap_ddp(model, self.device)  # DDP averages gradients over ranks (world > 1)
        return _Run(net=net, opt=opt, sched=sched, index=index, tokenizer=tokenizer, state=state, log=log,
                    ckpt=ckpt, world=distributed.world_size(), main=main,
                    use_amp=bf16_autocast(self.device, cfg.bf16))

    def _train_epoch(self, run: "_Run", epoch: int) -> dict:
        """One pass over the shuffled training batches; returns the epoch's log record."""
        from tqdm.auto import tqdm

        cfg, model, state = self.cfg, self.model, run.state
        model.train()
        distributed.seed_rank(cfg.seed, epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)  # the same global batches on every rank
        batches = list(self.train.batches(cfg.batch_size, shuffle=True, generator=gen))
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and run.main),
                   leave=False)
        run_loss, run_n, ep_loss, ep_n = 0.0, 0, 0.0, 0
        run.opt.zero_grad(set_to_none=True)
        for i, rows in enumerate(bar):
            group_start = (i // cfg.grad_accum) * cfg.grad_accum
            group = min(cfg.grad_accum, len(batches) - group_start)
            lv = self._micro_step(run, rows, epoch, last_of_group=i + 1 == group_start + group, group=group)
            run_loss, run_n, ep_loss, ep_n = run_loss + lv, run_n + 1, ep_loss + lv, ep_n + 1
            if i + 1 == group_start + group:
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                run.opt.step()
                run.sched.step()
                run.opt.zero_grad(set_to_none=True)
                state["step"] += 1
                if state["step"] % cfg.log_every == 0:
                    run.log.log({"kind": "train", "epoch": epoch, "step": state["step"],
                                 "loss": run_loss / run_n, "lr": run.sched.get_last_lr()[0]})
                    bar.set_postfix(loss=f"{run_loss / run_n:.4f}")
                    run_loss, run_n = 0.0, 0
        bar.close()
        return {"kind": "epoch", "epoch": epoch, "step": state["step"], "train_loss": ep_loss / max(ep_n, 1),
                "lr": run.sched.get_last_lr()[0]}

    def _micro_step(self, run: "_Run", rows: torch.Tensor, epoch: int, *, last_of_group: bool, group: int) -> float:
        """Forward and backward of one micro-batch (this rank's slice of it); returns its (global) mean loss."""
        cfg = self.cfg
        rows, empty = distributed.local_rows(rows)  # this rank's slice of the global batch
        batch = self.model.collate(self.train, rows, train_eos=cfg.train_eos).to(self.device)
        item_logits = self.teacher_logits(batch) if self.teacher_logits is not None else None
        # gradients are all-reduced only on a group's last micro-batch
        with distributed.no_sync(run.net, not last_of_group):
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=run.use_amp):
                out = run.net(batch)
            # a model may add a loss of its own from the same pass (decoder-only `item_loss: every`)
            logits, extra = out if isinstance(out, tuple) else (out, None)
            loss = token_loss(cfg, logits, batch.labels, batch.target_tokens, index=run.index,
                              tokenizer=run.tokenizer, item_logits=item_logits)
            if extra is not None:
                loss = loss + extra
            lv = float(loss.detach())
            if run.world > 1:
                loss, lv = _global_mean(loss, batch.labels, empty, run.world)
            if not math.isfinite(lv):
                raise SemrecError(f"training diverged: loss is {lv} at epoch {epoch + 1}, "
                                  f"step {run.state['step']} (lower the learning rate)")
            (loss / group).backward()
        return lv

    def _validate_and_select(self, run: "_Run", epoch: int, record: dict) -> None:
        """Validate, keep the best model (out_dir/best, or in memory) and decide early stopping."""
        cfg, state = self.cfg, run.state
        metrics = distributed.broadcast_object(self._validate(epoch))  # one decision for all ranks
        record.update({f"valid_{k}": v for k, v in metrics.items()})
        value = metrics[cfg.monitor]
        if state["best_metric"] is None or value > state["best_metric"]:
            state.update(best_metric=value, best_epoch=epoch, bad_epochs=0)
            self.model.training_info = self._training_info(state)
            if self.out_dir is not None:
                if run.main:
                    self.model.save_pretrained(self.out_dir / "best", overwrite=True)
            else:
                run.best_mem = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            state["bad_epochs"] += 1
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                state["stopped_early"] = True

    def _finish(self, run: "_Run", wall_time_s: float) -> TrainResult:
        """Restore the best weights and describe the run."""
        model, state = self.model, run.state
        best_dir = None
        if state["best_epoch"] is not None:
            if self.out_dir is not None:
                best_dir = self.out_dir / "best"
                model.load_weights(best_dir)
                model.to(self.device)
            elif run.best_mem is not None:
                model.load_state_dict(run.best_mem)
        model.training_info = self._training_info(state)
        model.eval()
        return TrainResult(epochs_run=state["epoch"] + 1, steps=state["step"], best_epoch=state["best_epoch"],
                           best_metric=state["best_metric"], monitor=self.cfg.monitor,
                           stopped_early=state["stopped_early"], wall_time_s=wall_time_s,
                           best_dir=best_dir, history=list(run.log.epochs))


@dataclass
class _Run:
    """What one `Trainer.fit` call works with, passed between its steps."""

    net: Any  # the model, wrapped in DDP when world > 1
    opt: torch.optim.Optimizer
    sched: Any
    index: Any  # the model's prefix index
    tokenizer: Any  # CollaborativeTokenizer when the loss uses a teacher
    state: dict  # epoch, step, best_metric, best_epoch, bad_epochs, stopped_early (checkpointed)
    log: MetricsLog
    ckpt: Path | None
    world: int
    main: bool
    use_amp: bool
    best_mem: dict | None = None

def _global_mean(loss: torch.Tensor, labels: torch.Tensor, empty: bool, world: int) -> tuple[torch.Tensor, float]:
    """Rescale this rank's mean token loss so that DDP's gradient average equals the gradient of the
    mean over the GLOBAL batch's trained tokens (ranks may hold different token counts: variable-length
    titles, ignored EOS): local_sum / global_count * world. Returns it and the global mean (a float,
    the same on every rank). `empty`: this rank's slice is a stand-in row with weight 0."""
    n_local = 0 if empty else int((labels != -100).sum())
    local_sum = loss.detach().double() * n_local if n_local else torch.zeros((), dtype=torch.float64,
                                                                             device=loss.device)
    n, total = distributed.all_reduce_sum(torch.stack([local_sum.new_tensor(float(n_local)), local_sum])).tolist()
    if n == 0:
        return loss * 0.0, 0.0
    return loss * (n_local * world / n), total / n
