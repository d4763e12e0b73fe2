"""Would a selection split without repeats choose other models? NDCG@10 on repeat and new-item rows.

Model selection reads the valid split; on Office its targets repeat a history item twice as often as test's
(6.5% against 2.9%), and a TCA teacher that favours the last item read is rewarded there and not on test. For
each generative row and seed of a committed recipe run (a `semrec run --out` directory read through
`RunDirectory`, with the recipe's results file kept under benchmarks/results), the valid split and the
recipe's test rows are decoded once (the recipe's decoding: 10 beams, MSL renormalisation where trained so)
and NDCG@10 is reported on all rows, on the rows whose target is in the history (repeats) and on the others
(new items). The models are then ranked on each valid figure per seed, beside their test ranking.

    python benchmarks/repeat_selection.py --run RUN_DIR office_tiger_tca_msl_lr6_repeats_long_cpu --seeds 0 1 2

writes benchmarks/results/repeat_selection.{json,md} after every model.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from beam_vs_exact import add_run_argument, load_row_model, open_run, produced_by, record
from popularity_correction import decode
from tca_gain import mean_std
from semrec.cf import target_in_history
from semrec.data.examples import ExampleTable
from semrec.errors import SemrecError
from semrec.evaluation import most_popular_lists, score_lists
from semrec.metrics import rank_metrics
from semrec.pipeline.run import train_popularity
from semrec.runtime import describe_machine, git_commit

PARTS = ("all", "repeat", "new")
SPLITS = ("valid", "test")


def split_ndcg(ranks: np.ndarray, repeat: np.ndarray) -> dict[str, float | None]:
    """NDCG@10 over all rows, the repeat rows and the new-item rows ((E,) ranks, (E,) bool); None where a
    part has no row."""
    parts = {"all": np.ones_like(repeat), "repeat": repeat, "new": ~repeat}
    return {p: (rank_metrics(ranks[m], (10,))["ndcg@10"] if m.any() else None) for p, m in parts.items()}


def run_models(run_dir: str, results_name: str, *, seeds: list[int], names: list[str] | None):
    """(run facts, entry) per generative row and seed of one run (`names`: only these rows)."""
    run, dataset, picked, facts = open_run(run_dir, results_name, seeds=seeds, names=names)
    popularity = train_popularity(dataset)
    test_rows = max(int(r.metrics.get("n_rows") or len(dataset.test)) for r in picked)
    splits = {"valid": dataset.valid, "test": dataset.test.subset(np.arange(min(test_rows, len(dataset.test))))}
    repeat = {s: target_in_history(ex) for s, ex in splits.items()}
    facts = {**facts, **{f"{s}_rows": len(ex) for s, ex in splits.items()},
             **{f"{s}_repeat_share": float(repeat[s].mean()) for s in splits}}
    reference = {"model": "MostPop", "reference": True}  # one list for every row: the bar to clear
    for s, ex in splits.items():
        _, ranks = score_lists(most_popular_lists(popularity, len(ex), 10), ex.targets, (10,),
                               num_items=dataset.num_items)
        reference[s] = split_ndcg(np.asarray(ranks), repeat[s])
    yield facts, reference
    for row in picked:
        stage, model = load_row_model(run, row, dataset)
        entry = {"model": row.name, "seed": row.seed, "model_stage": stage.name,
                 "recipe_test_ndcg@10": row.metrics.get("ndcg@10")}
        for s, ex in splits.items():
            _, ranks = decode(model, ExampleTable.from_examples(ex, model.max_history), popularity, 0.0)
            entry[s] = split_ndcg(np.asarray(ranks), repeat[s])
        yield facts, entry


def rankings(entries: list[dict]) -> dict[str, dict[str, list[str]]]:
    """Per dataset and figure (split, part): the models in order of that figure, best first, by the number
    of seeds at which each is best (a tie at one seed goes to the row listed first), then the mean over seeds."""
    out: dict[str, dict[str, list[str]]] = {}
    for ds in dict.fromkeys(e["dataset"] for e in entries):
        es = [e for e in entries if e["dataset"] == ds and not e.get("reference")]
        models = list(dict.fromkeys(e["model"] for e in es))
        seeds = sorted({e["seed"] for e in es})
        figures = {}
        for s in SPLITS:
            for p in PARTS:
                val = {(e["model"], e["seed"]): e[s][p] for e in es if e[s][p] is not None}
                if not val:
                    continue
                wins = {m: 0 for m in models}
                for seed in seeds:
                    here = {m: val[(m, seed)] for m in models if (m, seed) in val}
                    if here:
                        wins[max(here, key=here.get)] += 1
                mean = {m: float(np.mean([v for (mm, _), v in val.items() if mm == m])) for m in models}
                figures[f"{s} {p}"] = sorted(models, key=lambda m: (-wins[m], -mean[m]))
        out[ds] = figures
    return out


def markdown(meta: dict) -> str:
    entries = meta["entries"]
    lines = ["# NDCG@10 on repeat and new-item rows: would a selection split without repeats choose otherwise?",
             "", f"Commit `{meta['commit']}`, {meta['machine']}. Seeds {meta['seeds']}; mean ± std over seeds. "
             "repeat: rows whose target is in the history; new: the others. Each row's lists are the recipe's "
             "decoding of its trained model (stages verified); `all` on test reproduces the recipe's table.", ""]
    for run in meta["runs"]:
        lines.append(f"- {run['dataset']} (`{run['results']}`): valid {run['valid_rows']} rows, "
                     f"{run['valid_repeat_share']:.1%} repeats; test {run['test_rows']} rows, "
                     f"{run['test_repeat_share']:.1%} repeats.")
    head = " | ".join(f"{s} {p}" for s in SPLITS for p in PARTS)
    lines += ["", f"| dataset | model | seeds | {head} |", "|---" * (3 + len(SPLITS) * len(PARTS)) + "|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["dataset"], e["model"]), []).append(e)
    for (ds, model), es in groups.items():
        cells = []
        for s in SPLITS:
            for p in PARTS:
                xs = [e[s][p] for e in es if e[s][p] is not None]
                cells.append("-" if not xs else "{:.4f} ± {:.4f}".format(*mean_std(xs)))
        seeds = "-" if es[0].get("reference") else len(es)
        lines.append(f"| {ds} | {model} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", "Models ranked by each figure (most seeds best first, then the mean):", ""]
    for ds, figures in rankings(entries).items():
        for fig, order in figures.items():
            lines.append(f"- {ds}, {fig}: " + " > ".join(order))
    lines += ["", produced_by("repeat_selection", meta["runs"], f"--seeds {' '.join(map(str, meta['seeds']))}")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="*", help="row names (default: every generative row)")
    ap.add_argument("--out-name", default="repeat_selection", help="results file stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    meta = {"benchmark": "repeat_selection", "seeds": args.seeds, "commit": git_commit(),
            "machine": describe_machine("cpu"), "runs": [], "entries": []}
    try:
        for run_dir, name in args.run:
            for facts, e in run_models(run_dir, name, seeds=args.seeds, names=args.models):
                record(meta, facts, e, args.out_name, markdown)
                print(f"{facts['dataset']} {e['model']} seed {e.get('seed', '-')}: " + ", ".join(
                    f"{s} {p} {e[s][p]:.4f}" for s in SPLITS for p in PARTS if e[s][p] is not None), flush=True)
    except SemrecError as e:
        print(f"repeat_selection: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
