"""Benchmark: CF teachers (SASRec, BERT4Rec) on the bundled data, full ranking over all items.

- Protocol P (Amazon 2014 Toys / Sports / Beauty, leave-one-out): test Recall/NDCG@{5,10} next to the
  published SASRec and BERT4Rec rows (TIGER, NeurIPS 2023, Table 1).
- Protocol T (Amazon 2018 Toys / Sports / Office, TCA4Rec release): HR/NDCG@{1,3,5,10} on test_5000.
  These are the teachers for TCA.

Each run trains with early stopping on validation NDCG@10 (the test split is only read for the final
evaluation), then writes its teacher directory under --teachers-dir (reused, not retrained, when it
already holds a finished run; interrupted runs resume from their partial checkpoint). Results go to
benchmarks/results/cf_teachers.{json,md}: one row per model/dataset/protocol/split/seed.

    python benchmarks/cf_teachers.py --teachers-dir runs/cf_teachers            # everything, seed 0
    python benchmarks/cf_teachers.py --runs toys-p:sasrec --seeds 0 1 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from published import PUBLISHED_P

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Settings chosen for a shared 2-core CPU: hidden 64, 2 layers, full-softmax CE, AdamW, early stopping
# on valid NDCG@10 (patience counted in evaluations). max_len 50 for P, 10 for T (the T rows hold
# exactly 10 history items). BERT4Rec learns more slowly than SASRec (only masked positions are
# targets), so it gets more epochs and more patience.
MODEL = {
    ("sasrec", "P"): {"hidden": 64, "layers": 2, "heads": 2, "ffn": 256, "dropout": 0.3, "attn_dropout": 0.2,
                      "max_len": 50},
    ("sasrec", "T"): {"hidden": 64, "layers": 2, "heads": 2, "ffn": 256, "dropout": 0.3, "attn_dropout": 0.2,
                      "max_len": 10},
    ("bert4rec", "P"): {"hidden": 64, "layers": 2, "heads": 2, "ffn": 256, "dropout": 0.2, "attn_dropout": 0.2,
                        "max_len": 50, "mask_prob": 0.3, "mask_last_prob": 0.1},
    ("bert4rec", "T"): {"hidden": 64, "layers": 2, "heads": 2, "ffn": 256, "dropout": 0.2, "attn_dropout": 0.2,
                        "max_len": 11, "mask_prob": 0.3, "mask_last_prob": 0.1},
}
TRAIN = {
    ("sasrec", "P"): {"epochs": 20, "batch_size": 128, "lr": 0.003, "patience": 3, "eval_every": 1},
    ("sasrec", "T"): {"epochs": 20, "batch_size": 128, "lr": 0.003, "patience": 3, "eval_every": 1},
    ("bert4rec", "P"): {"epochs": 60, "batch_size": 128, "lr": 0.003, "patience": 5, "eval_every": 2},
    ("bert4rec", "T"): {"epochs": 60, "batch_size": 128, "lr": 0.003, "patience": 5, "eval_every": 2},
}
# T SASRec first (the TCA teachers), then the P acceptance rows, then BERT4Rec.
DEFAULT_RUNS = [f"{d}:{m}" for m in ("sasrec", "bert4rec")
                for d in ("toys-t", "sports-t", "office-t", "toys-p", "beauty-p", "sports-p")]
P_KS, T_KS = (5, 10), (1, 3, 5, 10)


def run_one(dataset_name: str, model_name: str, seed: int, teachers_dir: Path, device: str, max_epochs: int | None,
            progress: bool) -> dict:
    from semrec.training.teacher import TeacherTrainConfig
    from semrec.cli.cf import run_config_class, train_and_save
    from semrec.config import load_config
    from semrec.data import load_builtin
    from semrec.artifacts import read_json

    out = teachers_dir / f"{dataset_name}_{model_name}_seed{seed}"
    if (out / "metrics.json").is_file():
        print(f"[reuse] {out}", flush=True)
        return read_json(out / "metrics.json")
    ds = load_builtin(dataset_name)
    key = (model_name, ds.protocol)
    train = dict(TRAIN[key], seed=seed, ks=(1, 3, 5, 10, 20))
    if max_epochs is not None:
        train["epochs"] = min(train["epochs"], max_epochs)
    cfg = load_config(run_config_class(model_name), {"model": MODEL[key], "train": train})
    assert isinstance(cfg.train, TeacherTrainConfig)
    t = time.time()
    print(f"[train] {dataset_name} {model_name} seed {seed} -> {out}", flush=True)
    metrics = train_and_save(model_name, cfg, ds, out, device=device, progress=progress, overwrite=True)
    print(f"[done] {dataset_name} {model_name}: test ndcg@10 {metrics['test']['ndcg@10']:.4f} "
          f"({time.time() - t:.0f}s)", flush=True)
    return metrics


def rows_of(metrics: dict, model_name: str, dataset_name: str, teacher_dir: Path) -> list[dict]:
    from semrec.artifacts import read_json

    cfg = read_json(teacher_dir / "config.json")
    rows = []
    for split in ("valid", "test"):
        rows.append({
            "model": model_name, "dataset": dataset_name, "protocol": metrics["protocol"], "split": split,
            "seed": metrics["seed"], **{k: round(v, 6) for k, v in metrics[split].items()},
            "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
            "wall_time_s": metrics["wall_time_s"], "train_time_s": metrics["train_time_s"],
            "exclude_history": metrics["exclude_history"],
            "target_in_history": round(metrics["target_in_history"][split], 6),
            "train_targets": metrics["train_data"]["targets"],
            "device": metrics["device"], "commit": metrics["commit"],
            "model_config": cfg["model"], "train_config": cfg.get("extra", {}).get("train", {}),
        })
    return rows


def fmt(v: float) -> str:
    return f"{v:.4f}"


def markdown(rows: list[dict]) -> str:
    lines = ["# CF teachers: full-ranking results", "",
             "Produced by `benchmarks/cf_teachers.py` (early stopping on valid NDCG@10; test read once at the end). "
             "Full ranking over all items, history items kept in the ranking, ties counted against the target.", ""]
    p_rows = sorted((r for r in rows if r["protocol"] == "P" and r["split"] == "test"),
                    key=lambda r: (r["dataset"], r["model"], r["seed"]))
    if p_rows:
        lines += ["## Protocol P (Amazon 2014, leave-one-out), test", "",
                  "| dataset | model | seed | R@5 | N@5 | R@10 | N@10 | published R@5 / N@5 / R@10 / N@10 | "
                  ">= published | best epoch | wall time (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in p_rows:
            pub = PUBLISHED_P.get((r["model"], r["dataset"]))
            keys = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
            ok = "n/a" if pub is None else ("yes" if all(r[k] >= pub[k] for k in keys) else
                                            "NO: " + ", ".join(k for k in keys if r[k] < pub[k]))
            pub_s = "-" if pub is None else " / ".join(f"{pub[k]:.4f}" for k in keys)
            lines.append(f"| {r['dataset']} | {r['model']} | {r['seed']} | "
                         + " | ".join(fmt(r[k]) for k in keys)
                         + f" | {pub_s} | {ok} | {r['best_epoch']} | {r['wall_time_s']:.0f} |")
        lines.append("")
    t_rows = sorted((r for r in rows if r["protocol"] == "T" and r["split"] == "test"),
                    key=lambda r: (r["dataset"], r["model"], r["seed"]))
    if t_rows:
        keys = [f"{m}@{k}" for k in T_KS for m in ("hr", "ndcg")]
        lines += ["## Protocol T (Amazon 2018, TCA4Rec rows), test_5000", "",
                  "| dataset | model | seed | " + " | ".join(k.upper().replace("NDCG", "N") for k in keys)
                  + " | best epoch | wall time (s) |",
                  "|---|---|---|" + "---|" * len(keys) + "---|---|"]
        for r in t_rows:
            lines.append(f"| {r['dataset']} | {r['model']} | {r['seed']} | " + " | ".join(fmt(r[k]) for k in keys)
                         + f" | {r['best_epoch']} | {r['wall_time_s']:.0f} |")
        lines.append("")
    tih = {}
    for r in rows:
        tih.setdefault((r["dataset"], r["split"]), r["target_in_history"])
    if tih:
        lines += ["## Share of rows whose target is already in the history (repeat interactions)", "",
                  "| dataset | valid | test |", "|---|---|---|"]
        for d in sorted({d for d, _ in tih}):
            lines.append(f"| {d} | {tih.get((d, 'valid'), float('nan')):.4f} | {tih.get((d, 'test'), float('nan')):.4f} |")
        lines.append("")
    devices = sorted({r["device"] for r in rows})
    commits = sorted({r["commit"] for r in rows})
    lines += [f"Machine: {'; '.join(devices)}. Commit: {', '.join(commits)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="DATASET:MODEL pairs")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--teachers-dir", default=str(REPO / "runs" / "cf_teachers"),
                    help="where teacher directories are written (outside the package)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-epochs", type=int, help="cap every run's epochs (smoke tests)")
    ap.add_argument("--results", default=str(RESULTS / "cf_teachers"), help="output path without extension")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from semrec.artifacts import atomic_file, read_json, write_json

    teachers_dir = Path(args.teachers_dir)
    json_path, md_path = Path(args.results + ".json"), Path(args.results + ".md")
    rows = read_json(json_path)["rows"] if json_path.is_file() else []
    for seed in args.seeds:
        for spec in args.runs:
            dataset_name, _, model_name = spec.partition(":")
            metrics = run_one(dataset_name, model_name, seed, teachers_dir, args.device, args.max_epochs,
                              not args.no_progress)
            new = rows_of(metrics, model_name, dataset_name, teachers_dir / f"{dataset_name}_{model_name}_seed{seed}")
            rows = [r for r in rows if (r["model"], r["dataset"], r["seed"]) != (model_name, dataset_name, seed)]
            rows += new
            write_json(json_path, {"benchmark": "cf_teachers", "published_protocol_p": {
                f"{m}/{d}": v for (m, d), v in PUBLISHED_P.items() if m != "tiger"}, "rows": rows})
            with atomic_file(md_path) as f:
                f.write(markdown(rows))
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
