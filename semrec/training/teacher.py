"""Training a CF teacher: full-softmax cross-entropy (default) or sampled BCE, AdamW, early stopping
on validation NDCG@10 with the best checkpoint restored, resumable per-epoch checkpoints.

What the teacher trains on is defined in `semrec.cf.sequences` (train split only; valid added only
with `include_valid`; the test split is never read). In short:
- protocol P: each user's seq[:-2] (every item but the valid and test targets), every position;
- protocol T: the 10,000 train rows, each history of 10 + target as one 11-item sequence, every
  position (10 targets per row); valid/test histories are not used.
With `include_valid=True` (a final test-time teacher), valid rows are added, no model selection is
done, and training runs exactly `epochs` epochs (take the best epoch of a selection run).

Only positions that carry a real target are scored: the trainer cuts sequences into windows,
groups windows of similar length (each batch holds about `batch_size` windows' worth of targets),
trims the padding columns of each batch, and computes the (M, N) logits for the M real targets only.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from semrec import distributed
from semrec.cf.base import CFTeacher, build_teacher
from semrec.cf.evaluate import evaluate_teacher, target_in_history_rate
from semrec.cf.sequences import make_windows, training_sequences, window_lengths
from semrec.config import config_to_dict
from semrec.data.dataset import SeqDataset
from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, atomic_file, read_json, write_json
from semrec.metrics import DEFAULT_KS
from semrec.runtime import describe_machine, git_commit, resolve_device, seed_everything
from semrec.training.checkpoint import load_state, rng_state, save_state, set_rng_state

CHECKPOINT_META = "meta.json"  # epoch, early-stopping state, history, fingerprint of model/data/config


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
    seed: int = 0

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
    (this rank's SUM of per-target losses, its target count). A rank with nothing to score (`windows` with
    no rows) returns a zero that still touches every parameter, as DDP needs."""

    def __init__(self, model: CFTeacher, cfg: TeacherTrainConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, windows: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        if windows.shape[0]:
            hidden, targets = self.model.training_pairs(windows, generator)
            if targets.numel():
                return loss_fn(self.model, hidden, targets, self.cfg, generator) * targets.numel(), targets.numel()
        return sum(p.sum() for p in self.model.parameters()) * 0.0, 0


def _fingerprint(model: CFTeacher, dataset: SeqDataset, cfg: TeacherTrainConfig) -> str:
    blob = json.dumps({"model": model.config_dict(), "train": config_to_dict(cfg), "data": dataset.name,
                       "n": [len(dataset.train), len(dataset.valid), dataset.num_items]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- checkpoints: semrec.training.checkpoint's pickle-free state files --------------------------
def _save_checkpoint(ckpt_dir: Path, model, opt, best_state, gen, meta: dict) -> None:
    state = {"model": model.state_dict(), "best": best_state, "optimizer": opt.state_dict(),
             "generator": gen.get_state(), "rng": rng_state()}
    with atomic_dir(ckpt_dir / "last", overwrite=True) as tmp:
        save_state(tmp, "state", state)
        write_json(tmp / CHECKPOINT_META, meta)


def _load_checkpoint(ckpt_dir: Path, model, opt, gen) -> tuple[dict, dict | None]:
    path = ckpt_dir / "last"
    meta = read_json(path / CHECKPOINT_META)
    state = load_state(path, "state")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    set_rng_state(state["rng"])
    return meta, state["best"]


@dataclass
class _Selection:
    """Early-stopping state of a teacher run (checkpointed in meta.json, best weights in the state file)."""

    best_metric: float = -math.inf
    best_epoch: int = 0
    bad: int = 0
    history: list[dict] = field(default_factory=list)
    best_valid: dict[str, float] = field(default_factory=dict)
    best_state: dict | None = None
    stopped: bool = False


def train_teacher(
    model: CFTeacher,
    dataset: SeqDataset,
    cfg: TeacherTrainConfig,
    *,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[torch.Tensor], None] | None = None,
) -> TeacherTrainResult:
    """Train `model` in place on `dataset` (see the module docstring); returns what happened.

    checkpoint_dir: if given, the state after every epoch is saved there and a later call with the
    same model/data/config resumes from it. log_path: a JSONL file, one line per epoch.
    on_batch: called with every (B, W) window tensor the model is trained on (for instrumentation).
    At the end the model holds the best validation checkpoint (or the last epoch if include_valid).
    """
    t0 = time.time()
    dev = resolve_device(device) if isinstance(device, str) else device
    distributed.init(dev)  # no-op unless launched by torchrun
    dev, world, main = distributed.local_device(dev), distributed.world_size(), distributed.is_main()
    distributed.check_batch_size(cfg.batch_size)
    gen = seed_everything(cfg.seed)
    model.to(dev)
    seqs, _ = training_sequences(dataset, include_valid=cfg.include_valid)
    windows = make_windows(seqs, model.max_len + model.window_extra, model.window_overlap)
    n_targets = window_lengths(windows) - model.window_overlap
    if len(windows) == 0:
        raise SemrecError(f"dataset {dataset.name}: no training sequence has two or more items")
    select = not cfg.include_valid
    if select and len(dataset.valid) == 0:
        raise SemrecError(f"dataset {dataset.name}: the valid split is empty; early stopping needs it "
                          "(or set include_valid with a fixed epoch count)")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fp = _fingerprint(model, dataset, cfg)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start_epoch, sel = _resume(ckpt, fp, model, opt, gen, cfg)
    log = Path(log_path) if log_path is not None and main else None  # rank 0 alone writes
    progress = progress and main
    distributed.barrier()  # every rank has read the checkpoint before rank 0 writes a new one
    net = distributed.wrap_ddp(_PairLoss(model, cfg), dev) if world > 1 else None
    for epoch in range(start_epoch, cfg.epochs + 1):
        te = time.time()
        model.train()
        total, count = _teacher_epoch(model, net, opt, windows, n_targets, cfg, gen, dev, epoch,
                                      progress=progress, on_batch=on_batch)
        entry = {"epoch": epoch, "train_loss": total / max(count, 1), "train_targets": count,
                 "epoch_time_s": round(time.time() - te, 3)}
        sel.stopped = False
        if select and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            _validate_teacher(model, dataset, cfg, sel, entry, epoch)
        sel.history.append(entry)
        _report_epoch(model, cfg, sel, entry, log, progress)
        if ckpt is not None and main:
            _save_checkpoint(ckpt, model, opt, sel.best_state, gen, {
                "fingerprint": fp, "epoch": epoch, "best_metric": sel.best_metric, "best_epoch": sel.best_epoch,
                "bad": sel.bad, "history": sel.history, "best_valid": sel.best_valid, "stopped": sel.stopped})
        if sel.stopped:
            break

    if select:
        if sel.best_state is None:
            raise SemrecError("no validation run happened (epochs < eval_every?)")
        model.load_state_dict(sel.best_state)
    else:
        sel.best_epoch = len(sel.history)
    model.eval()
    return TeacherTrainResult(best_epoch=sel.best_epoch, epochs_run=len(sel.history), best_valid=sel.best_valid,
                              history=sel.history, wall_time_s=time.time() - t0, num_windows=len(windows),
                              num_targets=int(n_targets.sum()), num_sequences=len(seqs))


def _resume(ckpt: Path | None, fp: str, model: CFTeacher, opt, gen: torch.Generator,
            cfg: TeacherTrainConfig) -> tuple[int, _Selection]:
    """The first epoch to run and the selection state: from the checkpoint in `ckpt` if any, else fresh."""
    sel = _Selection()
    if ckpt is None or not (ckpt / "last" / CHECKPOINT_META).is_file():
        return 1, sel
    meta = read_json(ckpt / "last" / CHECKPOINT_META)
    if meta.get("fingerprint") != fp:
        raise SemrecError(f"{ckpt}: holds a partial run with another model/data/config; "
                          "delete it or pass --restart")
    meta, sel.best_state = _load_checkpoint(ckpt, model, opt, gen)
    sel.best_metric, sel.best_epoch = meta["best_metric"], meta["best_epoch"]
    sel.bad, sel.history, sel.best_valid = meta["bad"], meta["history"], meta["best_valid"]
    return (cfg.epochs + 1 if meta.get("stopped") else meta["epoch"] + 1), sel


def _teacher_epoch(model: CFTeacher, net, opt, windows: np.ndarray, n_targets: np.ndarray, cfg: TeacherTrainConfig,
                   gen: torch.Generator, dev: torch.device, epoch: int, *, progress: bool,
                   on_batch: Callable[[torch.Tensor], None] | None) -> tuple[float, int]:
    """One pass over length-grouped batches of windows; returns (sum of target losses, targets)."""
    from tqdm.auto import tqdm

    batches = length_batches(n_targets, cfg.batch_size, gen)  # `gen` draws the same batches on every rank
    total, count = 0.0, 0
    bar = tqdm(batches, desc=f"{model.name} epoch {epoch}", disable=not progress, leave=False, mininterval=1.0)
    pair_gen = None
    if net is not None:  # masks/negatives: a per-rank stream (the batch order stays on `gen`)
        distributed.seed_rank(cfg.seed, epoch)
        pair_gen = torch.Generator().manual_seed(torch.initial_seed() % (2**63))
    for idx in bar:
        w = torch.from_numpy(windows[idx])
        w = w[:, -int((w >= 0).sum(1).max()):]  # drop all-padding columns (of the global batch)
        if net is not None:
            s_all, m_all = _ddp_step(model, net, opt, w, cfg, pair_gen, dev, epoch, on_batch)
            total += s_all
            count += m_all
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
            continue
        if on_batch is not None:
            on_batch(w)
        hidden, targets = model.training_pairs(w.to(dev), gen)
        if targets.numel() == 0:
            continue
        loss = loss_fn(model, hidden, targets, cfg, gen)
        if not torch.isfinite(loss):  # NaN/inf weights would make a teacher that poisons every later stage
            raise SemrecError(f"{model.name}: training diverged: loss is {loss.item()} in epoch {epoch} "
                              f"(lower train.lr or enable train.grad_clip)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        total += loss.item() * targets.numel()
        count += targets.numel()
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
    bar.close()
    return total, count


def _ddp_step(model: CFTeacher, net, opt, w: torch.Tensor, cfg: TeacherTrainConfig, pair_gen: torch.Generator,
              dev: torch.device, epoch: int, on_batch: Callable[[torch.Tensor], None] | None) -> tuple[float, int]:
    """One optimizer step on this rank's share of the global batch `w`; returns the global (loss sum, targets)."""
    world = distributed.world_size()
    part = torch.tensor_split(w, world)[distributed.rank()]  # this rank's windows
    if on_batch is not None and len(part):
        on_batch(part)
    loss_sum, m = net(part.to(dev), pair_gen)
    m_all, s_all = distributed.all_reduce_sum(
        torch.tensor([float(m), float(loss_sum.detach())], dtype=torch.float64, device=dev)).tolist()
    if not math.isfinite(s_all):  # the same on every rank, so all stop together
        raise SemrecError(f"{model.name}: training diverged: loss is {s_all} in epoch {epoch} "
                          f"(lower train.lr or enable train.grad_clip)")
    # DDP averages gradients over ranks: local_sum * world / global_count gives the mean
    # over the global batch's targets, as one process computes it
    loss = loss_sum * (world / m_all) if m_all else loss_sum
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if not m_all:
        return 0.0, 0
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return s_all, int(m_all)


def _validate_teacher(model: CFTeacher, dataset: SeqDataset, cfg: TeacherTrainConfig, sel: _Selection,
                      entry: dict, epoch: int) -> None:
    """Validate, keep the best weights and decide early stopping (sets sel.stopped)."""
    tv = time.time()
    valid = evaluate_teacher(model, dataset.valid, ks=cfg.ks, exclude_history=cfg.exclude_history,
                             batch_size=cfg.eval_batch_size)
    valid = distributed.broadcast_object(valid)  # early stopping decided identically on all ranks
    entry["valid"] = valid
    entry["eval_time_s"] = round(time.time() - tv, 3)
    if valid[cfg.metric] > sel.best_metric:
        sel.best_metric, sel.best_epoch, sel.bad, sel.best_valid = valid[cfg.metric], epoch, 0, valid
        sel.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        sel.bad += 1
        sel.stopped = sel.bad >= cfg.patience


def _report_epoch(model: CFTeacher, cfg: TeacherTrainConfig, sel: _Selection, entry: dict, log: Path | None,
                  progress: bool) -> None:
    """Rewrite the JSONL log (whole, so a resumed run never duplicates lines) and print the epoch line."""
    from tqdm.auto import tqdm

    if log is not None:
        with atomic_file(log) as f:
            f.writelines(json.dumps(h) + "\n" for h in sel.history)
    if progress:
        v = entry.get("valid", {})
        extra = f" valid {cfg.metric} {v[cfg.metric]:.4f} (best {sel.best_metric:.4f} @ {sel.best_epoch})" if v else ""
        tqdm.write(f"{model.name} epoch {entry['epoch']}: loss {entry['train_loss']:.4f}{extra} "
                   f"[{entry['epoch_time_s']:.0f}s]")


def train_and_evaluate_teacher(model_name: str, model_config: Any, cfg: TeacherTrainConfig, dataset: SeqDataset, *,
                               device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None,
                               log_path: str | Path | None = None, progress: bool = True
                               ) -> tuple[CFTeacher, TeacherTrainResult, dict]:
    """Build teacher `model_name` (a semrec.cf.TEACHERS name), train it (`train_teacher`) and evaluate it on
    valid and test with `cfg`'s ranking settings. Returns the model, the training result and the metrics
    record that `semrec train-cf` and the pipeline's teacher stage write as metrics.json."""
    t0 = time.time()
    dev = resolve_device(device) if isinstance(device, str) else device
    distributed.init(dev)  # under torchrun: train and evaluate on every rank
    dev = distributed.local_device(dev)
    model = build_teacher(model_name, dataset.num_items, model_config, seed=cfg.seed)
    res = train_teacher(model, dataset, cfg, device=dev, checkpoint_dir=checkpoint_dir, log_path=log_path,
                        progress=progress)
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
