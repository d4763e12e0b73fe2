"""`semrec train-cf` and `semrec eval-cf`: train a CF teacher (SASRec, BERT4Rec, GRU4Rec) with early
stopping on validation NDCG@10, and evaluate one with full ranking over all items."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from semrec.errors import SemrecError

TEACHER_NAMES = ("sasrec", "bert4rec", "gru4rec")  # kept in sync with semrec.cf.TEACHERS (tested)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-cf", help="train a CF teacher (SASRec/BERT4Rec/GRU4Rec) on a dataset",
                       description="Train a CF teacher with full-softmax CE (or sampled BCE), early stopping on "
                                   "validation NDCG@10, then evaluate it on valid and test with full ranking. "
                                   "Writes DIR/{config.json,model.safetensors,metrics.json,train_log.jsonl}. "
                                   "An interrupted run resumes from DIR's sibling '.DIR.partial'.")
    p.add_argument("--data", required=True, help="built-in dataset name (e.g. toys-t, toys-p) or a dataset directory")
    p.add_argument("--model", help=f"teacher type: {', '.join(TEACHER_NAMES)} (default with --refit-from: "
                                   "that teacher's type)")
    p.add_argument("--config", help="YAML with optional 'model:' and 'train:' sections")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.lr=0.002 or model.hidden=128 "
                        "(a bare key is allowed when only one section has it)")
    p.add_argument("--out", required=True, help="output teacher directory")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--restart", action="store_true", help="ignore a partial run left by an interrupted call")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--refit-from", metavar="TEACHER_DIR",
                   help="final test-time teacher: reuse that early-stopped run's config, train on train + valid "
                        "rows for its best epoch count (no selection)")
    p.set_defaults(func=train_cf)

    e = sub.add_parser("eval-cf", help="evaluate a CF teacher with full ranking over all items",
                       description="Rank every example's target among all items; print HR/Recall/NDCG@K and MRR as JSON.")
    e.add_argument("--teacher", required=True, help="teacher directory written by train-cf")
    e.add_argument("--data", required=True, help="built-in dataset name or dataset directory")
    e.add_argument("--split", default="test", choices=["train", "valid", "test"])
    e.add_argument("--ks", default="1,3,5,10,20", help="comma-separated cut-offs (default 1,3,5,10,20)")
    e.add_argument("--exclude-history", action="store_true",
                   help="remove the user's history items from the ranking (default: keep; repeats occur)")
    e.add_argument("--batch-size", type=int, default=1024)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="also write the metrics to this JSON file")
    e.set_defaults(func=eval_cf)


def run_config_class(model_name: str):
    """A dataclass {model: <teacher config>, train: TeacherTrainConfig} for --config / --set."""
    from semrec.cf import get_teacher_class
    from semrec.training.teacher import TeacherTrainConfig

    mcls = get_teacher_class(model_name).config_class
    return dataclasses.make_dataclass("CFRunConfig", [
        ("model", mcls, dataclasses.field(default_factory=mcls)),
        ("train", TeacherTrainConfig, dataclasses.field(default_factory=TeacherTrainConfig)),
    ])


def qualify_overrides(cfg, overrides: list[str]) -> list[str]:
    """Prefix a bare `key=value` with the one section ('model' or 'train') that has `key`."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" in item and "." not in key:
            owners = [f.name for f in dataclasses.fields(cfg)
                      if key in {g.name for g in dataclasses.fields(getattr(cfg, f.name))}]
            if len(owners) == 1:
                item = f"{owners[0]}.{item.strip()}"
            elif not owners:
                raise SemrecError(f"--set: unknown key '{key}' (use model.KEY or train.KEY)")
        out.append(item)
    return out


def refit_config(teacher_dir: str | Path) -> tuple[str, dict]:
    """(model name, {model:, train:}) of a finished selection run, set to train on train + valid
    for exactly its best epoch count."""
    from semrec.artifacts import read_json

    meta = read_json(Path(teacher_dir) / "config.json")
    extra = meta.get("extra", {})
    if "train" not in extra or "best_epoch" not in extra:
        raise SemrecError(f"{teacher_dir}/config.json: no training record (not written by train-cf?)")
    if extra["train"].get("include_valid"):
        raise SemrecError(f"{teacher_dir}: already trained on valid rows; refit from the selection run")
    train = {**extra["train"], "include_valid": True, "epochs": int(extra["best_epoch"])}
    return str(meta.get("teacher_type")), {"model": meta.get("model", {}), "train": train}


def load_run_config(model_name: str, config_path: str | dict | None, overrides: list[str], seed: int | None):
    from semrec.config import apply_overrides, load_config

    cls = run_config_class(model_name)
    cfg = load_config(cls, config_path) if config_path else cls()
    cfg = apply_overrides(cfg, qualify_overrides(cfg, overrides))
    if seed is not None:
        cfg = apply_overrides(cfg, [f"train.seed={seed}"], name="--seed")
    return cfg


def train_cf(args: argparse.Namespace) -> int:
    from semrec.cf import TEACHERS, get_teacher_class

    source = args.config
    if args.refit_from:
        if args.config:
            raise SemrecError("--refit-from takes its config from the teacher; use --set to change values")
        name, source = refit_config(args.refit_from)
        if args.model and args.model != name:
            raise SemrecError(f"--model {args.model} but {args.refit_from} holds a '{name}' teacher")
        args.model = name
    if not args.model:
        raise SemrecError("--model is required (sasrec, bert4rec or gru4rec)")
    if args.model not in TEACHERS:
        get_teacher_class(args.model)  # raises the one-line error listing known names
    cfg = load_run_config(args.model, source, args.overrides, args.seed)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SemrecError(f"{out}: already exists (pass --overwrite to replace it)")
    from semrec.data import resolve_dataset

    dataset = resolve_dataset(args.data)
    from semrec import distributed

    result = train_and_save(args.model, cfg, dataset, out, device=args.device, restart=args.restart,
                            progress=not args.no_progress, overwrite=args.overwrite)
    m = result["test"]
    if not distributed.is_main():  # under torchrun rank 0 alone reports
        return 0
    print(f"{args.model} on {dataset.name}: {'epochs' if cfg.train.include_valid else 'best epoch'} "
          f"{result['best_epoch']}, "
          f"test ndcg@10 {m['ndcg@10']:.4f} recall@10 {m['recall@10']:.4f} "
          f"({result['wall_time_s']:.0f}s) -> {out}")
    return 0


def train_and_save(model_name: str, cfg, dataset, out: Path, *, device: str = "auto", restart: bool = False,
                   progress: bool = True, overwrite: bool = False) -> dict:
    """Train and evaluate (semrec.training.teacher.train_and_evaluate_teacher), then write the teacher
    directory atomically (`save_teacher_run`), resumable from `.<out>.partial` after a kill; returns metrics.json."""
    from semrec import distributed
    from semrec.artifacts import atomic_dir
    from semrec.runtime import resolve_device
    from semrec.training.teacher import save_teacher_run, train_and_evaluate_teacher

    distributed.init(resolve_device(device))  # under torchrun: rank 0 alone writes
    partial = out.parent / f".{out.name}.partial"
    if restart and partial.exists() and distributed.is_main():
        shutil.rmtree(partial)
    distributed.barrier()
    model, res, metrics = train_and_evaluate_teacher(model_name, cfg.model, cfg.train, dataset, device=device,
                                                     checkpoint_dir=partial, progress=progress)
    if distributed.is_main():
        with atomic_dir(out, overwrite=overwrite) as tmp:
            save_teacher_run(tmp, model, res, metrics, cfg.train)
        shutil.rmtree(partial, ignore_errors=True)
    distributed.barrier()
    return metrics


def eval_cf(args: argparse.Namespace) -> int:
    import json

    from semrec.cf import CFTeacher, evaluate_teacher
    from semrec.data import resolve_dataset
    from semrec.artifacts import write_json
    from semrec.runtime import resolve_device

    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
    except ValueError:
        raise SemrecError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    teacher = CFTeacher.from_pretrained(args.teacher, device=resolve_device(args.device))
    dataset = resolve_dataset(args.data)
    if dataset.num_items != teacher.num_items:
        raise SemrecError(f"{args.teacher}: teacher scores {teacher.num_items} items but dataset "
                          f"{dataset.name} has {dataset.num_items}")
    metrics = evaluate_teacher(teacher, dataset.splits[args.split], ks=ks,
                               exclude_history=args.exclude_history, batch_size=args.batch_size)
    report = {"teacher": str(args.teacher), "dataset": dataset.name, "split": args.split,
              "exclude_history": args.exclude_history, "metrics": metrics}
    if args.out:
        write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0
