"""Beam search against the exact top-K: how much does 10-beam decoding lose on trained models?

For each run of a committed recipe (a `semrec run --out` directory, read through
`semrec.pipeline.results.RunDirectory` with the recipe's results file kept under benchmarks/results, since
a later recipe run into the same directory rewrites its own results.json), every generative row of one
seed is loaded from its model stage (verified against the stage manifest and the dataset fingerprint) and
decodes the first `--rows` rows of the test split twice, by the code `semrec.evaluation.evaluate` runs:

- beam: trie-constrained beam search with `--beams` beams (10, the recipes' setting), its top 10;
- exact: every catalogue item scored by its exact log-probability (`semrec.decoding.exact_search`), top 10.

Both lists are scored by one function (`semrec.evaluation.score_lists`): HR@10, NDCG@10, coverage@10,
pop1%@10; then the exact-minus-beam NDCG@10 gain with the standard error of the paired per-row difference,
the rows hit by one list only, overlap@10 (mean |beam top 10 and exact top 10 in common| / 10) and the share
of rows whose top-1 agree. Cost: wall and CPU seconds of each decoding (one torch thread by default).

    python benchmarks/beam_vs_exact.py --run RUN_DIR office_tiger_tca_cpu --run RUN_DIR2 toys_tiger_tca_cpu \
        --rows 1000

writes benchmarks/results/beam_vs_exact.{json,md} after every model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from semrec.artifacts import atomic_file, read_json, write_json
from semrec.data import resolve_dataset
from semrec.data.examples import ExampleTable
from semrec.errors import SemrecError
from semrec.evaluation import decoding_defaults, generate, most_popular_lists, score_lists
from semrec.metrics import paired_gain
from semrec.models import load_model
from semrec.pipeline.cache import StageCache
from semrec.pipeline.results import RunDirectory
from semrec.pipeline.run import dataset_fingerprint, train_popularity
from semrec.runtime import describe_machine, git_commit

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
LIST_METRICS = ("hr@10", "ndcg@10", "coverage@10", "pop1%@10")


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of |a's items and b's items in common| / K, for lists (E, K) (-1: an empty slot)."""
    common = (a[:, :, None] == b[:, None, :]).any(2) & (a >= 0)
    return float(common.sum(1).double().mean()) / a.shape[1]


def compare(model, table: ExampleTable, popularity, *, beams: int = 10, batch_size: int = 256) -> dict:
    """The beam and exact top-10 lists of `model` on `table`, scored alike; their differences and cost."""
    renormalize, temperature = decoding_defaults(model)
    targets = model.canonical_items().cpu()[table.targets]  # items sharing a sequence are one entry
    lists, ranks, out = {}, {}, {"n_rows": len(table)}
    for mode in ("beam", "exact"):
        w0, c0 = time.perf_counter(), time.process_time()
        gen = generate(model, table, num_beams=beams, top_k=K, batch_size=batch_size, decode=mode,
                       renormalize=renormalize, temperature=temperature)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        metrics, ranks[mode] = score_lists(gen["items"], targets, (K,), num_items=model.codes.shape[0],
                                           popularity=popularity)
        lists[mode] = gen["items"]
        out[mode] = {**{m: metrics[m] for m in LIST_METRICS}, "wall_s": wall, "cpu_s": cpu,
                     "users_per_cpu_s": len(table) / cpu}
    gain, se = paired_gain(ranks["exact"], ranks["beam"], K)
    hit_b, hit_e = ranks["beam"] > 0, ranks["exact"] > 0
    out["diff"] = {"hr@10": out["exact"]["hr@10"] - out["beam"]["hr@10"], "ndcg@10": gain, "ndcg@10_se": se,
                   "beam_only_hits": int((hit_b & ~hit_e).sum()), "exact_only_hits": int((hit_e & ~hit_b).sum())}
    out["overlap@10"] = overlap(lists["beam"], lists["exact"])
    out["top1_agree"] = float((lists["beam"][:, 0] == lists["exact"][:, 0]).float().mean())
    out["exact_cpu_x_beam"] = out["exact"]["cpu_s"] / out["beam"]["cpu_s"]
    return out


def load_row_model(run: RunDirectory, row, dataset):
    """(model stage, model) of a generative result row, its stage verified and trained on `dataset` as it is now.
    The model alone: a popularity correction its recipe chose on valid (`selected_on_valid`) is not applied."""
    stage = run.model_stage(row)
    want = read_json(stage / "stage.json").get("inputs", {}).get("data")
    if want is not None and want != dataset_fingerprint(dataset):
        raise SemrecError(f"{stage.name}: trained on other data than {dataset.name} as it is now")
    StageCache.verify(stage)
    return stage, load_model(stage / "model")


def open_run(run_dir: str, results_name: str, *, seeds: list[int], names: list[str] | None):
    """A committed recipe run read through its results file under benchmarks/results: (run, its dataset as it
    is now, the generative rows of `seeds` (`names`: only these rows), the facts a report records of it)."""
    results = RESULTS / f"{results_name}.json"
    run = RunDirectory(run_dir, results=results)
    dataset = resolve_dataset(run.result.get("data") or run.result["dataset"])
    picked = [r for r in run.generative_rows if r.seed in seeds and (names is None or r.name in names)]
    if not picked:
        raise SemrecError(f"{results}: no generative row of seeds {seeds}" + (f" named {names}" if names else ""))
    facts = {"recipe": run.result.get("recipe", results_name), "results": f"benchmarks/results/{results.name}",
             "run_dir": Path(run_dir).name, "dataset": dataset.name, "protocol": run.result.get("protocol"),
             "data": run.result.get("data"), "recipe_commit": run.result.get("commit")}
    return run, dataset, picked, facts


def run_models(run_dir: str, results_name: str, *, seed: int, rows: int, beams: int, names: list[str] | None):
    """(run facts, [row entry]) for the generative rows of `seed` in one run (`names`: only these rows)."""
    run, dataset, picked, facts = open_run(run_dir, results_name, seeds=[seed], names=names)
    popularity = train_popularity(dataset)
    test = dataset.test.subset(np.arange(min(rows, len(dataset.test))))
    pop_lists = most_popular_lists(popularity, len(test), K)
    metrics, _ = score_lists(pop_lists, test.targets, (K,), num_items=dataset.num_items, popularity=popularity)
    yield facts, {"model": "MostPop", "reference": True, **{m: metrics[m] for m in LIST_METRICS}}
    for row in picked:
        stage, model = load_row_model(run, row, dataset)
        table = ExampleTable.from_examples(test, model.max_history)
        yield facts, {"model": row.name, "arch": row.model, "seed": row.seed, "model_stage": stage.name,
                      "recipe_test_ndcg@10": row.metrics.get("ndcg@10"), "recipe_test_rows": row.metrics.get("n_rows"),
                      **compare(model, table, popularity, beams=beams)}


def markdown(meta: dict) -> str:
    f4 = "{:.4f}".format
    lines = [f"# Beam search ({meta['beams']} beams) against the exact top-10", "",
             f"Protocol T test split, the first {meta['rows']:,} rows of each dataset; trained models of seed "
             f"{meta['seed']} from the committed recipes' runs (models read through `RunDirectory`, stages verified). "
             f"Commit `{meta['commit']}`, {meta['machine']}.", "",
             "| dataset | model | HR@10 beam | HR@10 exact | diff | NDCG@10 beam | NDCG@10 exact | diff (± se) "
             "| hits beam only / exact only | overlap@10 | top-1 agree | coverage@10 beam / exact "
             "| beam CPU s | exact CPU s | exact users / CPU s |",
             "|---" * 15 + "|"]
    for e in meta["entries"]:
        if e.get("reference"):  # one list for every row: no search, nothing to compare
            lines.append(f"| {e['dataset']} | {e['model']} | {f4(e['hr@10'])} | - | - | {f4(e['ndcg@10'])} | - | - "
                         f"| - | - | - | {e['coverage@10']:.4f} | - | - | - |")
            continue
        b, x, d = e["beam"], e["exact"], e["diff"]
        lines.append(
            f"| {e['dataset']} | {e['model']} | {f4(b['hr@10'])} | {f4(x['hr@10'])} | {d['hr@10']:+.4f} "
            f"| {f4(b['ndcg@10'])} | {f4(x['ndcg@10'])} | {d['ndcg@10']:+.4f} ± {d['ndcg@10_se']:.4f} "
            f"| {d['beam_only_hits']} / {d['exact_only_hits']} | {e['overlap@10']:.3f} | {e['top1_agree']:.3f} "
            f"| {b['coverage@10']:.4f} / {x['coverage@10']:.4f} | {b['cpu_s']:.1f} | {x['cpu_s']:.1f} "
            f"| {x['users_per_cpu_s']:.2f} |")
    lines += ["", "Sources: " + "; ".join(f"{r['dataset']}: `{r['results']}` (recipe `{r['recipe']}`, data "
                                          f"`{r['data']}`)" for r in meta["runs"]) + ".",
              "", "diff: exact minus beam; se: standard error of the paired per-row NDCG@10 difference. CPU s: "
              f"process CPU time of each decoding, {meta['threads']} torch thread(s), {meta['batch_size']} users per "
              "batch; exact scoring feeds every prefix of the catalogue's trie once per user."]
    lines += ["", produced_by("beam_vs_exact", meta["runs"], f"--rows {meta['rows']} --seed {meta['seed']}")]
    return "\n".join(lines) + "\n"


def add_run_argument(ap: argparse.ArgumentParser) -> None:
    """The repeated `--run RUN_DIR RESULTS_NAME` of the scripts that read trained models from recipe runs."""
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("RUN_DIR", "RESULTS_NAME"),
                    help="a run directory and the name of its recipe's results under benchmarks/results")


def record(meta: dict, facts: dict, entry: dict, out_name: str, markdown) -> None:
    """Add one entry (and its run's facts, once) to `meta`, then rewrite the report's JSON and Markdown."""
    if facts not in meta["runs"]:
        meta["runs"].append(facts)
    meta["entries"].append({"dataset": facts["dataset"], **entry})
    write_report(meta, RESULTS / out_name, markdown)


def write_report(meta: dict, stem: Path, markdown) -> None:
    """Write `stem`.json from `meta` and `stem`.md from `markdown(meta)`, each atomically."""
    write_json(stem.with_name(stem.name + ".json"), meta)
    with atomic_file(stem.with_name(stem.name + ".md")) as f:
        f.write(markdown(meta))


def produced_by(script: str, runs: list[dict], options: str) -> str:
    """The report's closing line: the command that wrote it, one `--run` per run read."""
    return (f"Produced by `python benchmarks/{script}.py " + " ".join(
        f"--run RUN_DIR {r['results'].split('/')[-1][:-5]}" for r in runs)
        + f" {options}`, RUN_DIR being the recipe's `semrec run --out` directory.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--rows", type=int, default=1000, help="first test rows decoded (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="the seed whose models are compared")
    ap.add_argument("--models", nargs="*", help="row names (default: every generative row)")
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-name", default="beam_vs_exact", help="results file stem")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = {"benchmark": "beam_vs_exact", "protocol": "T", "seed": args.seed, "rows": args.rows, "beams": args.beams,
            "k": K, "threads": args.threads, "batch_size": 256, "commit": git_commit(),
            "machine": describe_machine("cpu"), "runs": [], "entries": []}
    for run_dir, name in args.run:
        for facts, entry in run_models(run_dir, name, seed=args.seed, rows=args.rows, beams=args.beams,
                                       names=args.models):
            record(meta, facts, entry, args.out_name, markdown)
            if entry.get("reference"):
                print(f"{facts['dataset']} MostPop: NDCG@10 {entry['ndcg@10']:.4f}", flush=True)
                continue
            print(f"{facts['dataset']} {entry['model']}: overlap@10 {entry['overlap@10']:.3f}, NDCG@10 beam "
                  f"{entry['beam']['ndcg@10']:.4f} exact {entry['exact']['ndcg@10']:.4f}, exact "
                  f"{entry['exact']['users_per_cpu_s']:.2f} users/CPU s", flush=True)


if __name__ == "__main__":
    main()
