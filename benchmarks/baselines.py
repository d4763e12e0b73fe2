"""MostPop and Random on every bundled dataset's test split, scored by the code that scores the models.

    python benchmarks/baselines.py        # -> benchmarks/results/baselines.{json,md}

MostPop recommends the items most often seen as a generative model's training target (the same list for
every row); Random draws 10 distinct items per row (seed 0). A recommender that is not clearly above the
MostPop row of its dataset has not learned the user.
"""

from __future__ import annotations

import json
from pathlib import Path

from semrec.data import load_builtin
from semrec.data.builtin import BUILTIN_DATASETS
from semrec.evaluation import ks_for, most_popular_lists, random_lists, score_lists
from semrec.pipeline.run import train_popularity
from semrec.runtime import describe_machine, git_commit

RESULTS = Path(__file__).resolve().parent / "results"
SHOWN = ["hr@10", "ndcg@10", "coverage@10", "distinct_top1", "pop1%@10"]


def main() -> None:
    rows = []
    for name in BUILTIN_DATASETS:
        ds = load_builtin(name)
        pop = train_popularity(ds)
        test = ds.test
        for model, lists in (("MostPop", most_popular_lists(pop, len(test), 10)),
                             ("Random", random_lists(ds.num_items, len(test), 10, seed=0))):
            metrics, _ = score_lists(lists, test.targets, ks_for(ds.protocol), num_items=ds.num_items,
                                     popularity=pop)
            rows.append({"dataset": name, "protocol": ds.protocol, "model": model, "n_rows": len(test),
                         "num_items": ds.num_items, **metrics})
    result = {"split": "test", "seed": 0, "commit": git_commit(), "machine": describe_machine("cpu"), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "baselines.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# MostPop and Random on every bundled dataset (test split)", "",
             f"Commit `{result['commit']}`; {result['machine']}; Random seed 0. Popularity: how often an item is a "
             "training target of the generative models (every prefix on protocol P, the rows on protocol T).", "",
             "| dataset | protocol | items | model | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 4) + "|"]
    for r in rows:
        cells = [f"{r[m]:.0f}" if m == "distinct_top1" else f"{r[m]:.4f}" for m in SHOWN]
        lines.append(f"| {r['dataset']} | {r['protocol']} | {r['num_items']} | {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Produced by `python benchmarks/baselines.py`."]
    (RESULTS / "baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
