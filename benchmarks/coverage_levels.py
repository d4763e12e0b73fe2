"""Where do TIGER's top-10 lists narrow: at the first code level, or inside a first-level cluster?

For each run of a committed recipe (a `semrec run --out` directory read through `RunDirectory`, with the
recipe's results file kept under benchmarks/results), the generative rows of one seed decode the test split
with the recipes' beam search; the SASRec teacher of the same seed and MostPop give their top-10 lists too.
Every list set is scored by one function, on the first code level of the run's semantic IDs (RQ-KMeans:
a first-level code is a cluster of items with similar text):

- hr@10, ndcg@10, coverage@10 (`semrec.evaluation.score_lists`);
- level-1 hr@10: the target's first-level code is among the list's first-level codes;
- hr@10 given a level-1 hit: hr@10 / level-1 hr@10 (picking the item once the cluster is right);
- level-1 coverage: first-level codes in any list / first-level codes in the catalogue;
- level-1 codes per list: mean distinct first-level codes in one top-10 list;
- in-cluster popularity: mean over list slots of the item's popularity percentile among the items sharing
  its first-level code (0 = the cluster's most popular item by training-target count, 1 = its least), beside
  the same figure for the test targets themselves (what a list that follows the users would show).

    python benchmarks/coverage_levels.py --run RUN_DIR toys_tiger_tca_msl_long_cpu --seed 0

writes benchmarks/results/coverage_levels.{json,md} after every list set.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from beam_vs_exact import add_run_argument, load_row_model, open_run, produced_by, record
from semrec.cf.base import CFTeacher
from semrec.cf.evaluate import teacher_top_lists
from semrec.data.examples import ExampleTable
from semrec.errors import SemrecError
from semrec.evaluation import decoding_defaults, generate, most_popular_lists, score_lists
from semrec.pipeline.cache import StageCache
from semrec.pipeline.results import RunDirectory
from semrec.pipeline.run import train_popularity
from semrec.runtime import describe_machine, git_commit

K = 10


def in_cluster_percentile(level1: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """(N,) each item's popularity percentile among the items of its first-level code: 0 = the most popular
    (ties: lower id first), 1 = the least; 0 for an item alone in its code."""
    order = np.lexsort((np.arange(len(level1)), -popularity, level1))  # by code, then popularity descending
    sizes = np.bincount(level1)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(level1), dtype=np.float64)
    rank[order] = np.arange(len(level1)) - start[level1[order]]
    return rank / np.maximum(sizes[level1] - 1, 1)


def distinct_per_row(codes: np.ndarray) -> np.ndarray:
    """(E,) the number of distinct non-negative values in each row of `codes` (E, K) (-1: an empty slot)."""
    s = np.sort(codes, 1)
    first = np.concatenate([np.ones_like(s[:, :1], dtype=bool), s[:, 1:] != s[:, :-1]], 1)
    return (first & (s >= 0)).sum(1)


def level_figures(lists: torch.Tensor, targets: np.ndarray, level1: np.ndarray, percentile: np.ndarray,
                  popularity: np.ndarray) -> dict:
    """The list figures of the module docstring for `lists` (E, K) of item ids (-1: an empty slot)."""
    items = np.asarray(lists)
    metrics, _ = score_lists(lists, targets, (K,), num_items=len(level1), popularity=popularity)
    filled = items >= 0
    codes = np.where(filled, level1[np.clip(items, 0, None)], -1)
    l1_hit = (codes == level1[targets][:, None]).any(1)
    hr = metrics["hr@10"]
    return {"hr@10": hr, "ndcg@10": metrics["ndcg@10"], "coverage@10": metrics["coverage@10"],
            "l1_hr@10": float(l1_hit.mean()), "hr_given_l1": hr / float(l1_hit.mean()) if l1_hit.any() else 0.0,
            "l1_coverage": len(np.unique(codes[filled])) / len(np.unique(level1)),
            "l1_per_list": float(distinct_per_row(codes).mean()),
            "in_cluster_pct": float(percentile[items[filled]].mean())}


def run_lists(run_dir: str, results_name: str, *, seed: int, rows: int | None, names: list[str] | None):
    """(run facts, entry) per list set: MostPop, the teacher, then the generative rows of `seed`."""
    run, dataset, picked, facts = open_run(run_dir, results_name, seeds=[seed], names=names)
    popularity = np.asarray(train_popularity(dataset), dtype=np.float64)
    test = dataset.test if rows is None else dataset.test.subset(np.arange(min(rows, len(dataset.test))))
    models = [(row, *load_row_model(run, row, dataset)) for row in picked]
    codes = models[0][2].codes.cpu().numpy()
    if any(not np.array_equal(m.codes.cpu().numpy(), codes) for _, _, m in models[1:]):
        raise SemrecError(f"{run_dir}: the rows of seed {seed} use different semantic IDs; pick rows of one scheme")
    level1 = codes[:, 0] - codes[:, 0].min()
    percentile = in_cluster_percentile(level1, popularity)
    targets = np.asarray(test.targets)
    facts = {**facts, "n_rows": len(test), "n_items": len(level1),
             "n_level1_codes": int(len(np.unique(level1))),
             "targets_in_cluster_pct": float(percentile[targets].mean())}
    yield facts, {"model": "MostPop", **level_figures(most_popular_lists(popularity, len(test), K), targets, level1,
                                                      percentile, popularity)}
    tdir = run.teacher_stage(seed)
    StageCache.verify(tdir)
    teacher = CFTeacher.from_pretrained(tdir / "teacher").eval()
    yield facts, {"model": "SASRec", "seed": seed, "stage": tdir.name,
                  **level_figures(teacher_top_lists(teacher, test, K), targets, level1, percentile, popularity)}
    for row, stage, model in models:
        renormalize, temperature = decoding_defaults(model)
        table = ExampleTable.from_examples(test, model.max_history)
        c0 = time.process_time()
        gen = generate(model, table, num_beams=10, top_k=K, batch_size=256, renormalize=renormalize,
                       temperature=temperature)
        items = gen["items"]
        canon = model.canonical_items().cpu()
        yield facts, {"model": row.name, "seed": seed, "stage": stage.name, "decode_cpu_s": time.process_time() - c0,
                      "recipe_test_ndcg@10": row.metrics.get("ndcg@10"),
                      **level_figures(items, canon[torch.as_tensor(targets)].numpy(), level1, percentile, popularity)}


def markdown(meta: dict) -> str:
    f4 = "{:.4f}".format
    lines = ["# Where top-10 lists narrow: first code level or inside a first-level cluster", "",
             f"Protocol T test split; seed {meta['seed']}; the recipes' runs (models and teachers read from their "
             f"stages, verified). Commit `{meta['commit']}`, {meta['machine']}.", "",
             "| dataset | model | NDCG@10 | HR@10 | coverage@10 | level-1 HR@10 | HR@10 given level-1 hit "
             "| level-1 coverage | level-1 codes per list | in-cluster popularity (targets) |", "|---" * 10 + "|"]
    runs = {r["dataset"]: r for r in meta["runs"]}
    for e in meta["entries"]:
        r = runs[e["dataset"]]
        lines.append(f"| {e['dataset']} | {e['model']} | {f4(e['ndcg@10'])} | {f4(e['hr@10'])} "
                     f"| {e['coverage@10']:.1%} | {f4(e['l1_hr@10'])} | {f4(e['hr_given_l1'])} "
                     f"| {e['l1_coverage']:.1%} | {e['l1_per_list']:.2f} "
                     f"| {e['in_cluster_pct']:.3f} ({r['targets_in_cluster_pct']:.3f}) |")
    lines += ["", "Sources: " + "; ".join(
        f"{r['dataset']}: `{r['results']}` (recipe `{r['recipe']}`, {r['n_rows']:,} test rows, {r['n_items']:,} items "
        f"in {r['n_level1_codes']} first-level codes)" for r in meta["runs"]) + ".", "",
        "level-1: the first code of the run's semantic IDs. HR@10 given level-1 hit: HR@10 / level-1 HR@10. "
        "In-cluster popularity: mean percentile of a recommended item's training-target count among the items of "
        "its first-level code (0 = the cluster's most popular item); in brackets, the test targets' own mean. "
        "SASRec lists rank the whole catalogue (history included), as in the recipes' teacher rows."]
    models = " --models " + " ".join(f'"{m}"' for m in meta["models"]) if meta.get("models") else ""
    lines += ["", produced_by("coverage_levels", meta["runs"], f"--seed {meta['seed']}{models}")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--rows", type=int, default=None, help="first test rows decoded (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="the seed whose models and teacher are read")
    ap.add_argument("--models", nargs="*", help="row names (default: every generative row)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-name", default="coverage_levels", help="results file stem")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = {"benchmark": "coverage_levels", "protocol": "T", "seed": args.seed, "rows": args.rows, "k": K,
            "beams": 10, "models": args.models, "threads": args.threads, "commit": git_commit(),
            "machine": describe_machine("cpu"), "runs": [], "entries": []}
    for run_dir, name in args.run:
        for facts, entry in run_lists(run_dir, name, seed=args.seed, rows=args.rows, names=args.models):
            record(meta, facts, entry, args.out_name, markdown)
            print(f"{facts['dataset']} {entry['model']}: NDCG@10 {entry['ndcg@10']:.4f}, level-1 HR@10 "
                  f"{entry['l1_hr@10']:.4f}, coverage@10 {entry['coverage@10']:.1%}", flush=True)


if __name__ == "__main__":
    main()
