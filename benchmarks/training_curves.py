"""Has training converged, and how do a model's lists widen with it? Valid NDCG@10 and coverage@10 after every pass.

For each run of a committed recipe (a `semrec run --out` directory read through `RunDirectory`, with the
recipe's results file kept under benchmarks/results), every generative row's model stage holds the
validation the Trainer ran after each pass (`train.json`: the whole valid split wherever the recipe sets
`valid_max_rows: null`). This script decodes nothing: it gathers those figures, averages them over seeds
per row name and pass, and sets them beside the row's test figures, its training CPU and the MostPop row.

    python benchmarks/training_curves.py --run RUN_DIR toys_tiger_msl_passes_long_cpu

writes benchmarks/results/training_curves.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beam_vs_exact import RESULTS, add_run_argument, produced_by, write_report
from tca_gain import mean_std
from semrec.artifacts import read_json
from semrec.errors import SemrecError
from semrec.pipeline.results import RunDirectory
from semrec.report import save_png
from semrec.runtime import describe_machine, git_commit

CURVE = ("valid_ndcg@10", "valid_coverage@10")
TEST = ("ndcg@10", "coverage@10")


def passes_of(train_log: dict, where: str) -> list[dict]:
    """The per-pass validation records of one model stage's `train.json`, pass numbers from 1."""
    out = [{"pass": int(h["epoch"]) + 1, "step": h.get("step"), **{m: float(h[m]) for m in CURVE}}
           for h in train_log.get("history", []) if h.get("kind") == "epoch" and all(m in h for m in CURVE)]
    if not out:
        raise SemrecError(f"{where}: no pass with {' and '.join(CURVE)} in its history")
    return out


def run_curves(run_dir: str, results_name: str, names: list[str] | None):
    """(run facts, entry) for the MostPop row and for every generative row of one run (`names`: only these)."""
    results = RESULTS / f"{results_name}.json"
    run = RunDirectory(run_dir, results=results)
    picked = [r for r in run.generative_rows if names is None or r.name in names]
    if not picked:
        raise SemrecError(f"{results}: no generative row" + (f" named {names}" if names else ""))
    facts = {"recipe": run.result.get("recipe", results_name), "results": f"benchmarks/results/{results.name}",
             "run_dir": Path(run_dir).name, "dataset": run.result.get("dataset"),
             "protocol": run.result.get("protocol"), "data": run.result.get("data"),
             "recipe_commit": run.result.get("commit")}
    for ref in (r for r in run.rows if r.model == "mostpop" and r.seed == picked[0].seed):
        yield facts, {"model": "MostPop", "reference": True, "valid_ndcg@10": ref.valid_metric,
                      **{m: ref.metrics.get(m) for m in TEST}}
    for row in picked:
        stage = run.model_stage(row)
        log = read_json(stage / "train.json")
        yield facts, {"model": row.name, "seed": row.seed, "model_stage": stage.name,
                      "passes": passes_of(log, str(stage / "train.json")), "best_pass": int(log["best_epoch"]) + 1,
                      "stopped_early": bool(log.get("stopped_early")), "cpu_time_s": log.get("cpu_time_s"),
                      **{m: row.metrics.get(m) for m in TEST}}


def summary(entries: list[dict]) -> list[dict]:
    """Per (dataset, model row): each pass's mean ± std over the seeds that ran it, and the test figures."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        if not e.get("reference"):
            groups.setdefault((e["dataset"], e["model"]), []).append(e)
    out = []
    for (dataset, model), es in groups.items():
        by_pass: dict[int, list[dict]] = {}
        for e in es:
            for p in e["passes"]:
                by_pass.setdefault(p["pass"], []).append(p)
        curve = [{"pass": k, "seeds": len(ps), **{m: mean_std([p[m] for p in ps]) for m in CURVE}}
                 for k, ps in sorted(by_pass.items())]
        out.append({"dataset": dataset, "model": model, "seeds": sorted(e["seed"] for e in es), "curve": curve,
                    "best_is_last": sum(e["best_pass"] == e["passes"][-1]["pass"] for e in es),
                    "cpu_time_s": mean_std(cpu) if (cpu := [e["cpu_time_s"] for e in es if e.get("cpu_time_s")]) else None,
                    **{m: mean_std([e[m] for e in es]) for m in TEST}})
    return out


def fmt(ms: tuple[float, float], digits: int = 4) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def markdown(meta: dict) -> str:
    rows = summary(meta["entries"])
    refs = [e for e in meta["entries"] if e.get("reference")]
    lines = ["# training_curves: valid NDCG@10 and coverage@10 after every pass", "",
             f"Commit `{meta['commit']}`; {meta['machine']}. Figures read from each model stage's `train.json` "
             "(the Trainer's validation after every pass); nothing decoded here. Mean ± std over seeds.", "",
             "## After each pass (valid)", "", "| dataset | model | pass | seeds | valid ndcg@10 | valid coverage@10 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        for c in r["curve"]:
            lines.append(f"| {r['dataset']} | {r['model']} | {c['pass']} | {c['seeds']} | {fmt(c['valid_ndcg@10'])} "
                         f"| {fmt(c['valid_coverage@10'], 3)} |")
    lines += ["", "## The selected model (test)", "",
              "| dataset | model | seeds | best pass = last | train CPU s | test ndcg@10 | test coverage@10 | "
              "valid ndcg@10 (last pass) |", "|---|---|---|---|---|---|---|---|"]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        for e in (e for e in refs if e["dataset"] == d):
            valid = "-" if e.get("valid_ndcg@10") is None else f"{e['valid_ndcg@10']:.4f}"
            lines.append(f"| {d} | MostPop | - | - | - | {e['ndcg@10']:.4f} | {e['coverage@10']:.4f} | {valid} |")
        for r in (r for r in rows if r["dataset"] == d):
            cpu = "-" if r["cpu_time_s"] is None else f"{r['cpu_time_s'][0]:.0f}"
            lines.append(f"| {d} | {r['model']} | {len(r['seeds'])} | {r['best_is_last']} of {len(r['seeds'])} "
                         f"| {cpu} | {fmt(r['ndcg@10'])} | {fmt(r['coverage@10'])} "
                         f"| {fmt(r['curve'][-1]['valid_ndcg@10'])} |")
    lines += ["", f"![valid NDCG@10 and coverage@10 by pass]({meta['out_name']}.png)", "",
              produced_by("training_curves", meta["runs"], f"--out-name {meta['out_name']}")]
    return "\n".join(lines) + "\n"


def plot(meta: dict, path: Path) -> Path:
    """Two panels per dataset: valid NDCG@10 and valid coverage@10 against the pass, one line per model row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = summary(meta["entries"])
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(8.4, 3.2 * len(datasets)), squeeze=False)
    for (ax_n, ax_c), d in zip(axes, datasets):
        for r in (r for r in rows if r["dataset"] == d):
            xs = [c["pass"] for c in r["curve"]]
            for ax, m in ((ax_n, CURVE[0]), (ax_c, CURVE[1])):
                ax.errorbar(xs, [c[m][0] for c in r["curve"]], yerr=[c[m][1] for c in r["curve"]], marker="o",
                            capsize=3, label=r["model"])
        for e in (e for e in meta["entries"] if e.get("reference") and e["dataset"] == d):
            if e.get("valid_ndcg@10") is not None:
                ax_n.axhline(e["valid_ndcg@10"], color="grey", lw=0.8, ls=":", label="MostPop")
        ax_c.axhline(0.2, color="grey", lw=0.8, ls="--")
        ax_n.set_title(f"{d}: valid NDCG@10")
        ax_c.set_title(f"{d}: valid coverage@10")
        for ax in (ax_n, ax_c):
            ax.set_xlabel("pass")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_n.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--models", nargs="*", help="row names (default: every generative row)")
    ap.add_argument("--out-name", default="training_curves", help="results file stem")
    args = ap.parse_args(argv)
    meta = {"benchmark": "training_curves", "out_name": args.out_name, "commit": git_commit(),
            "machine": describe_machine("cpu"), "runs": [], "entries": []}
    try:
        for run_dir, name in args.run:
            for facts, e in run_curves(run_dir, name, args.models):
                if facts not in meta["runs"]:
                    meta["runs"].append(facts)
                meta["entries"].append({"dataset": facts["dataset"], **e})
    except SemrecError as e:
        print(f"training_curves: error: {e}", file=sys.stderr)
        return 2
    write_report(meta, RESULTS / args.out_name, markdown)
    plot(meta, RESULTS / f"{args.out_name}.png")
    for r in summary(meta["entries"]):
        last = r["curve"][-1]
        print(f"{r['dataset']} {r['model']}: pass {last['pass']} valid NDCG@10 {last['valid_ndcg@10'][0]:.4f}, "
              f"coverage@10 {last['valid_coverage@10'][0]:.3f}; test {r['ndcg@10'][0]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
