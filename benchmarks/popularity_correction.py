"""Is TIGER's narrowness a popularity prior that decoding can take out?

Logit adjustment at decoding time: every item's beam score becomes log P(item | user) - s x log P_pop(item),
P_pop the add-one smoothed training popularity, spread over the trie's edges so that beam search applies it
token by token (`semrec.decoding.popularity_bias`). s = 0 is the recipes' decoding; s = 1 divides the
model's item probabilities by the popularity prior.

For each run of a committed recipe (a `semrec run --out` directory read through `RunDirectory`, with the
recipe's results file kept under benchmarks/results), every generative row of each seed decodes the whole
valid split at each strength; the strength of highest valid NDCG@10 is chosen (ties: the smaller), and the
test split is decoded at s = 0 and at the chosen s, as many test rows as the recipe evaluated. Lists are
scored by `semrec.evaluation.score_lists` (NDCG@10, HR@10, coverage@10, pop1%@10).

    python benchmarks/popularity_correction.py --run RUN_DIR toys_tiger_tca_msl_long_cpu --seeds 0 1 2

writes benchmarks/results/popularity_correction.{json,md,png} after every model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from beam_vs_exact import RESULTS, add_run_argument, load_row_model, open_run, produced_by, record
from tca_gain import mean_std
from semrec.data.examples import ExampleTable
from semrec.decoding import popularity_bias
from semrec.errors import SemrecError
from semrec.evaluation import decoding_defaults, generate, most_popular_lists, score_lists
from semrec.metrics import paired_gain
from semrec.pipeline.run import train_popularity
from semrec.report import save_png
from semrec.runtime import describe_machine, git_commit

K = 10
LIST_METRICS = ("ndcg@10", "hr@10", "coverage@10", "pop1%@10")


def decode(model, table: ExampleTable, popularity: np.ndarray, strength: float, *, beams: int = 10,
           batch_size: int = 256) -> tuple[dict, np.ndarray]:
    """(list metrics with CPU seconds, (E,) target ranks) of `model`'s beam lists on `table` at `strength`."""
    renormalize, temperature = decoding_defaults(model)
    bias = popularity_bias(model.prefix_index(), popularity, strength) if strength else None
    c0 = time.process_time()
    gen = generate(model, table, num_beams=beams, batch_size=batch_size, renormalize=renormalize,
                   temperature=temperature, edge_bias=bias)
    cpu = time.process_time() - c0
    targets = model.canonical_items().cpu()[table.targets]
    metrics, ranks = score_lists(gen["items"], targets, (K,), num_items=model.codes.shape[0], popularity=popularity)
    return {**{m: metrics[m] for m in LIST_METRICS}, "cpu_s": cpu}, ranks


def choose(valid: list[dict]) -> dict:
    """The entry of highest valid NDCG@10; ties: the smaller strength."""
    return max(sorted(valid, key=lambda v: v["strength"]), key=lambda v: v["ndcg@10"])


def run_models(run_dir: str, results_name: str, *, seeds: list[int], strengths: list[float],
               names: list[str] | None):
    """(run facts, entry) per generative row and seed of one run (`names`: only these rows)."""
    run, dataset, picked, facts = open_run(run_dir, results_name, seeds=seeds, names=names)
    popularity = train_popularity(dataset)
    test_rows = max(int(r.metrics.get("n_rows") or len(dataset.test)) for r in picked)
    test = dataset.test.subset(np.arange(min(test_rows, len(dataset.test))))
    metrics, _ = score_lists(most_popular_lists(popularity, len(test), K), test.targets, (K,),
                             num_items=dataset.num_items, popularity=popularity)
    yield facts, {"model": "MostPop", "reference": True, "test_rows": len(test),
                  **{m: metrics[m] for m in LIST_METRICS}}
    for row in picked:
        stage, model = load_row_model(run, row, dataset)
        valid_t = ExampleTable.from_examples(dataset.valid, model.max_history)
        test_t = ExampleTable.from_examples(test, model.max_history)
        valid = [{"strength": s, **decode(model, valid_t, popularity, s)[0]} for s in strengths]
        best = choose(valid)
        base, base_ranks = decode(model, test_t, popularity, 0.0)
        chosen, ranks = (base, base_ranks) if best["strength"] == 0 else decode(model, test_t, popularity,
                                                                                 best["strength"])
        gain, se = paired_gain(ranks, base_ranks, K)
        yield facts, {"model": row.name, "arch": row.model, "seed": row.seed, "model_stage": stage.name,
                      "recipe_test_ndcg@10": row.metrics.get("ndcg@10"), "valid_rows": len(valid_t),
                      "test_rows": len(test_t), "valid": valid, "chosen_strength": best["strength"],
                      "test_s0": base, "test_chosen": chosen, "test_gain": gain, "test_gain_se": se}


def summary(entries: list[dict]) -> list[dict]:
    """Per dataset and model row: mean and std over seeds of the chosen strength and the test figures, and
    the mean valid figures at each strength."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in (e for e in entries if not e.get("reference")):
        groups.setdefault((e["dataset"], e["model"]), []).append(e)
    out = []
    for (dataset, model), es in groups.items():
        row = {"dataset": dataset, "model": model, "seeds": [e["seed"] for e in es],
               "strength": mean_std([e["chosen_strength"] for e in es])}
        for m in ("ndcg@10", "coverage@10", "pop1%@10"):
            row[f"test_s0_{m}"] = mean_std([e["test_s0"][m] for e in es])
            row[f"test_chosen_{m}"] = mean_std([e["test_chosen"][m] for e in es])
        row["gain_beyond_2se"] = sum(e["test_gain"] > 2 * e["test_gain_se"] for e in es)
        row["curve"] = [{"strength": v["strength"],
                         **{m: float(np.mean([e["valid"][i][m] for e in es])) for m in LIST_METRICS}}
                        for i, v in enumerate(es[0]["valid"])]
        out.append(row)
    return out


def cpu_per_1000(entries: list[dict]) -> float:
    """Mean CPU seconds of one valid decoding per 1,000 rows."""
    xs = [v["cpu_s"] * 1000 / e["valid_rows"] for e in entries if not e.get("reference") for v in e["valid"]]
    return float(np.mean(xs)) if xs else 0.0


def markdown(meta: dict) -> str:
    def pm(x: tuple[float, float], f: str = ".4f") -> str:
        return f"{x[0]:{f}} ± {x[1]:{f}}"

    rows = summary(meta["entries"])
    lines = ["# Popularity correction at decoding time: TIGER's lists against the popularity prior", "",
             f"Beam search ({meta['beams']} beams) with each item's score lowered by s x log P_pop(item) (add-one "
             "smoothed training popularity), s chosen on the whole valid split by NDCG@10; trained models of seeds "
             f"{', '.join(map(str, meta['seeds']))} from the committed recipes' runs (stages verified). "
             f"Commit `{meta['commit']}`, {meta['machine']}.", "",
             "| dataset | model | seeds | chosen s | test NDCG@10 s=0 | test NDCG@10 chosen | seeds with gain > 2 se "
             "| coverage@10 s=0 | coverage@10 chosen | pop1%@10 s=0 | pop1%@10 chosen |", "|---" * 11 + "|"]
    for e in (e for e in meta["entries"] if e.get("reference")):  # one list for every user: nothing to correct
        lines.append(f"| {e['dataset']} | {e['model']} | - | - | {e['ndcg@10']:.4f} | - | - | {e['coverage@10']:.3f} "
                     f"| - | {e['pop1%@10']:.3f} | - |")
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['model']} | {len(r['seeds'])} | {pm(r['strength'], '.2f')} "
                     f"| {pm(r['test_s0_ndcg@10'])} | {pm(r['test_chosen_ndcg@10'])} | {r['gain_beyond_2se']} "
                     f"| {pm(r['test_s0_coverage@10'], '.3f')} | {pm(r['test_chosen_coverage@10'], '.3f')} "
                     f"| {pm(r['test_s0_pop1%@10'], '.3f')} | {pm(r['test_chosen_pop1%@10'], '.3f')} |")
    lines += ["", "## Per seed: chosen s, test NDCG@10 and coverage@10 at s=0 and at the chosen s", "",
              "| dataset | model | seed | chosen s | NDCG@10 s=0 | NDCG@10 chosen | coverage@10 s=0 | coverage@10 chosen |",
              "|---" * 8 + "|"]
    for e in (e for e in meta["entries"] if not e.get("reference")):
        lines.append(f"| {e['dataset']} | {e['model']} | {e['seed']} | {e['chosen_strength']:g} "
                     f"| {e['test_s0']['ndcg@10']:.4f} | {e['test_chosen']['ndcg@10']:.4f} "
                     f"| {e['test_s0']['coverage@10']:.3f} | {e['test_chosen']['coverage@10']:.3f} |")
    lines += ["", "## Valid split at each strength (mean over seeds): NDCG@10 / coverage@10", "",
              "| dataset | model | " + " | ".join(f"s={s:g}" for s in meta["strengths"]) + " |",
              "|---" * (2 + len(meta["strengths"])) + "|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['model']} | " + " | ".join(
            f"{c['ndcg@10']:.4f} / {c['coverage@10']:.3f}" for c in r["curve"]) + " |")
    lines += ["", "Sources: " + "; ".join(f"{r['dataset']}: `{r['results']}` (recipe `{r['recipe']}`, data "
                                          f"`{r['data']}`)" for r in meta["runs"]) + ".", "",
              "gain: paired per-row test NDCG@10 difference, chosen s minus s=0, per seed; se its standard error. "
              f"CPU: {meta['threads']} torch thread(s), {meta['batch_size']} users per batch; a valid decoding took "
              f"{cpu_per_1000(meta['entries']):.1f} CPU s per 1,000 rows on average (`cpu_s` of each in the JSON).",
              "", f"![valid NDCG@10 against coverage@10]({meta['out_name']}.png)"]
    lines += ["", produced_by("popularity_correction", meta["runs"],
                              f"--seeds {' '.join(map(str, meta['seeds']))} "
                              f"--strengths {' '.join(f'{s:g}' for s in meta['strengths'])}")]
    return "\n".join(lines) + "\n"


def plot(meta: dict, path: Path) -> Path:
    """One panel per dataset: mean valid NDCG@10 against coverage@10 as s grows, one line per model row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary(meta["entries"])
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for r in (r for r in rows if r["dataset"] == d):
            xs = [c["coverage@10"] for c in r["curve"]]
            ys = [c["ndcg@10"] for c in r["curve"]]
            ax.plot(xs, ys, marker="o", label=r["model"])
            for c in r["curve"]:
                ax.annotate(f"{c['strength']:g}", (c["coverage@10"], c["ndcg@10"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.axvline(0.2, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{d} (valid, labels: s)")
        ax.set_xlabel("coverage@10")
        ax.set_ylabel("NDCG@10")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--models", nargs="*", help="row names (default: every generative row)")
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-name", default="popularity_correction", help="results file stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = {"benchmark": "popularity_correction", "protocol": "T", "seeds": args.seeds,
            "strengths": sorted(set(args.strengths)), "beams": args.beams, "k": K, "threads": args.threads,
            "batch_size": 256, "out_name": args.out_name, "commit": git_commit(), "machine": describe_machine("cpu"),
            "runs": [], "entries": []}
    try:
        if 0.0 not in meta["strengths"] or meta["strengths"][0] < 0:
            raise SemrecError(f"--strengths {args.strengths}: must hold 0 (the baseline) and no negative value")
        for run_dir, name in args.run:
            for facts, e in run_models(run_dir, name, seeds=args.seeds, strengths=meta["strengths"],
                                       names=args.models):
                record(meta, facts, e, args.out_name, markdown)
                if e.get("reference"):
                    continue
                plot(meta, RESULTS / f"{args.out_name}.png")
                print(f"{facts['dataset']} {e['model']} seed {e['seed']}: s {e['chosen_strength']:g}, test NDCG@10 "
                      f"{e['test_s0']['ndcg@10']:.4f} -> {e['test_chosen']['ndcg@10']:.4f}, coverage@10 "
                      f"{e['test_s0']['coverage@10']:.3f} -> {e['test_chosen']['coverage@10']:.3f}", flush=True)
    except SemrecError as e:
        print(f"popularity_correction: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
