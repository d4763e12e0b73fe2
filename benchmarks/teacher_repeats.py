"""How much of a CF teacher's mass and accuracy goes to items the user has already read?

TCA turns the teacher's softmax over all items into soft labels. A teacher trained on data with repeat
interactions can learn to put its top score on the last item of the history; its soft labels then teach
the student to repeat, which pays only where the split being scored repeats as often as training did.

For each seed's teacher of a committed recipe run (a `semrec run --out` directory read through
`RunDirectory`, with the recipe's results file kept under benchmarks/results) and each split (the training
examples as TIGER trains on them, `semrec.data.examples.training_examples`: every prefix; valid; test):

- the share of targets already in the history the teacher reads, and equal to its last item;
- the share of rows whose teacher top-1 item is the last history item;
- the teacher's softmax mass (temperature 1) on the history items, the mass TCA spends there unless
  `cf_exclude_history` is set;
- the teacher's full-ranking HR@10 and NDCG@10 with history items kept (the recipes' protocol) and removed
  (`semrec.cf.teacher_ranks(exclude_history=True)`: a repeated target then counts as a miss).

    python benchmarks/teacher_repeats.py --run RUN_DIR office_tiger_tca_msl_lr6_long_cpu --seeds 0 1 2

writes benchmarks/results/teacher_repeats.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from beam_vs_exact import RESULTS, add_run_argument, produced_by, write_report
from tca_gain import mean_std
from semrec.artifacts import read_json
from semrec.cf import CFTeacher, target_in_history_rate, teacher_ranks
from semrec.cf.base import check_logits, teacher_name
from semrec.data import resolve_dataset
from semrec.data.dataset import Examples
from semrec.data.examples import training_examples
from semrec.errors import SemrecError
from semrec.evaluation import most_popular_lists, score_lists
from semrec.itemtok.artifact import ItemTokenization
from semrec.metrics import rank_metrics
from semrec.pipeline.results import RunDirectory
from semrec.pipeline.run import dataset_fingerprint, train_popularity
from semrec.runtime import describe_machine, git_commit
from semrec.tca import exclude_history

FIGURES = ("target_in_history", "target_is_last", "top1_is_last", "mass_on_history",
           "hr@10", "ndcg@10", "hr@10_history_removed", "ndcg@10_history_removed",
           "last_shares_first_code", "first_code_mass", "first_code_mass_history_removed")
LABELS = {"target_in_history": "target in history", "target_is_last": "target = last item",
          "top1_is_last": "teacher top-1 = last item", "mass_on_history": "teacher mass on history",
          "hr@10": "HR@10", "ndcg@10": "NDCG@10", "hr@10_history_removed": "HR@10, history removed",
          "ndcg@10_history_removed": "NDCG@10, history removed",
          "last_shares_first_code": "last item shares the target's first code",
          "first_code_mass": "CT mass on the target's first code",
          "first_code_mass_history_removed": "CT mass on it, history removed"}


@torch.no_grad()
def history_figures(teacher: CFTeacher, examples: Examples, *, batch_size: int = 2048) -> dict[str, float]:
    """Mean share of rows whose teacher top-1 is the last history item, and mean softmax mass on the
    history the teacher reads (its last `history_len` items)."""
    hist = torch.from_numpy(examples.padded_histories(teacher.history_len(), pad=-1, side="left"))
    top1_last = mass = 0.0
    for lo in range(0, len(examples), batch_size):
        h = hist[lo:lo + batch_size]
        logits = check_logits(teacher.item_logits(h).float(), teacher_name(teacher))
        top1_last += float((logits.argmax(1) == h[:, -1]).sum())
        seen = exclude_history(logits, h).isinf()
        mass += float(torch.softmax(logits, 1).masked_fill(~seen, 0).sum())
    return {"top1_is_last": top1_last / len(examples), "mass_on_history": mass / len(examples)}


@torch.no_grad()
def first_code_figures(teacher: CFTeacher, examples: Examples, first_code: torch.Tensor, *,
                       batch_size: int = 2048) -> dict[str, float]:
    """What TCA hands the student at the first code. first_code (N,) long: each item's first token.

    The Collaborative Tokenizer's first-position probability of the target's first token is the teacher's
    softmax mass (temperature 1) on the items that share it; it is given with the history kept and with it
    removed (`cf_exclude_history`). Beside them, the share of rows whose last history item shares the
    target's first code: what the teacher's mass on the last item tells the student about the target."""
    hist = torch.from_numpy(examples.padded_histories(teacher.history_len(), pad=-1, side="left"))
    targets = torch.as_tensor(examples.targets, dtype=torch.long)
    width = int(first_code.max()) + 1
    mass = {"first_code_mass": 0.0, "first_code_mass_history_removed": 0.0}
    for lo in range(0, len(examples), batch_size):
        h, t = hist[lo:lo + batch_size], targets[lo:lo + batch_size]
        logits = check_logits(teacher.item_logits(h).float(), teacher_name(teacher))
        for name, scores in zip(mass, (logits, exclude_history(logits, h))):
            per_code = torch.zeros(len(h), width).scatter_add_(1, first_code.expand(len(h), -1),
                                                               torch.softmax(scores, 1))
            mass[name] += float(per_code.gather(1, first_code[t][:, None]).sum())
    last = hist[:, -1]
    shares = (last >= 0) & (first_code[last.clamp_min(0)] == first_code[targets])
    return {"last_shares_first_code": float(shares.float().mean()),
            **{name: m / len(examples) for name, m in mass.items()}}


def split_figures(teacher: CFTeacher, examples: Examples, first_code: torch.Tensor) -> dict[str, float]:
    last = examples.padded_histories(1, pad=-1, side="left")[:, 0]  # the last item read, -1 for none
    kept = rank_metrics(teacher_ranks(teacher, examples), (10,))
    removed = rank_metrics(teacher_ranks(teacher, examples, exclude_history=True), (10,))
    return {"target_in_history": target_in_history_rate(examples),
            "target_is_last": float(np.mean(last == examples.targets)),
            **history_figures(teacher, examples),
            "hr@10": kept["hr@10"], "ndcg@10": kept["ndcg@10"],
            "hr@10_history_removed": removed["hr@10"], "ndcg@10_history_removed": removed["ndcg@10"],
            **first_code_figures(teacher, examples, first_code)}


def mostpop_figures(dataset, examples: Examples) -> dict[str, float]:
    """HR@10 / NDCG@10 of MostPop (the most frequent training targets, one list for every row) on `examples`,
    counted like the teacher's: the bar its accuracy is read against."""
    lists = most_popular_lists(train_popularity(dataset), len(examples), 10)
    metrics, _ = score_lists(lists, examples.targets, (10,), num_items=dataset.num_items)
    return {"hr@10": metrics["hr@10"], "ndcg@10": metrics["ndcg@10"]}


def run_first_codes(run: RunDirectory) -> torch.Tensor:
    """(N,) each item's first token in the run's item IDs (its one tokenization stage)."""
    stages = list(run.stages("ids"))
    if len(stages) != 1:
        raise SemrecError(f"{run.path}: expected one item-ID stage, found {len(stages)}")
    return ItemTokenization.from_pretrained(stages[0] / "tokenization", load_quantizer=False).codes[:, 0]


def seed_teachers(run: RunDirectory, dataset, seeds: list[int]) -> dict[int, CFTeacher]:
    """The teacher of each seed that the run's results distilled, checked to be trained on `dataset` as it is now."""
    want, found = dataset_fingerprint(dataset), {}
    for seed in seeds:
        stage = run.teacher_stage(seed)
        if read_json(stage / "stage.json").get("inputs", {}).get("data") != want:
            raise SemrecError(f"{stage}: the teacher of seed {seed} was not trained on {dataset.name} as it is now")
        found[seed] = CFTeacher.from_pretrained(stage / "teacher").eval()
    return found


def markdown(meta: dict) -> str:
    out = ["# How much of the CF teacher's mass and accuracy goes to items already read", "",
           f"Commit `{meta['commit']}`; {meta['machine']}. Seeds {meta['seeds']}; mean ± std over seeds "
           "(the data figures do not depend on the seed).", ""]
    for ds in meta["datasets"]:
        out += [f"## {ds['dataset']} (teachers of `{ds['results']}`)", "",
                "| split | rows | " + " | ".join(LABELS[f] for f in FIGURES) + " |",
                "|---|---|" + "---|" * len(FIGURES)]
        for split, s in ds["splits"].items():
            cells = [f"{s[f]['mean']:.3f} ± {s[f]['std']:.3f}" for f in FIGURES]
            out.append(f"| {split} | {s['rows']} | " + " | ".join(cells) + " |")
        out += ["", "MostPop on the same rows (one list for every row), HR@10 / NDCG@10: " + ", ".join(
            f"{split} {s['mostpop']['hr@10']:.3f} / {s['mostpop']['ndcg@10']:.3f}" for split, s in ds["splits"].items()),
            ""]
    out += ["train: the examples TIGER trains on (every prefix of the train rows). "
            "History: the items the teacher reads (its last `max_len`); the removed-history metrics drop "
            "every history item from the ranking, so a repeated target counts as a miss. First code: the "
            "first token of the run's item IDs; CT mass: the Collaborative Tokenizer's first-position "
            "probability of the target's first token (the teacher's softmax mass on the items sharing it, "
            "temperature 1), with the history kept and removed (`cf_exclude_history`).", "",
            produced_by("teacher_repeats", meta["datasets"], f"--seeds {' '.join(map(str, meta['seeds']))}")]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_argument(ap)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out-name", default="teacher_repeats", help="results file stem")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    meta = {"commit": git_commit(), "machine": describe_machine(), "seeds": args.seeds, "datasets": []}
    try:
        for run_dir, name in args.run:
            results = RESULTS / f"{name}.json"
            run = RunDirectory(run_dir, results)
            dataset = resolve_dataset(run.result["data"])
            teachers = seed_teachers(run, dataset, args.seeds)
            first_code = run_first_codes(run)
            splits = {"train": training_examples(dataset), "valid": dataset.valid, "test": dataset.test}
            per_split = {}
            for split, examples in splits.items():
                c0 = time.process_time()
                rows = [split_figures(teachers[s], examples, first_code) for s in args.seeds]
                per_split[split] = {"rows": len(examples), "cpu_s": time.process_time() - c0,
                                    "mostpop": mostpop_figures(dataset, examples),
                                    **{f: dict(zip(("mean", "std"), mean_std([r[f] for r in rows]))) for f in FIGURES}}
                print(f"{dataset.name} {split}: " + ", ".join(
                    f"{f} {per_split[split][f]['mean']:.3f}" for f in FIGURES), flush=True)
            meta["datasets"].append({"dataset": dataset.name, "results": f"benchmarks/results/{name}.json",
                                     "splits": per_split})
    except SemrecError as e:
        print(f"teacher_repeats: error: {e}", file=sys.stderr)
        return 2
    write_report(meta, RESULTS / args.out_name, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
