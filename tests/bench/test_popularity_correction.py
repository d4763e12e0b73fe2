"""benchmarks/popularity_correction.py: the choice on valid, the per-seed summary, the table and its errors."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.generative import TIGER_TINY, examples, semantic_ids

from semrec.data.examples import ExampleTable
from semrec.evaluation import evaluate
from semrec.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import popularity_correction as pc  # noqa: E402  (a script of benchmarks/, not a package)

torch.set_num_threads(1)


def _valid(ndcgs, strengths=(0.0, 0.5, 1.0)):
    return [{"strength": s, "ndcg@10": v, "hr@10": 2 * v, "coverage@10": 0.1 + s / 10, "pop1%@10": 0.5 - s / 4,
             "cpu_s": 1.0} for s, v in zip(strengths, ndcgs)]


def _entry(seed, ndcgs, chosen, test0, test_c, model="TIGER"):
    lists = {"ndcg@10": test0, "hr@10": 0.0, "coverage@10": 0.1, "pop1%@10": 0.5}
    return {"dataset": "toys-t", "model": model, "seed": seed, "valid": _valid(ndcgs), "valid_rows": 500,
            "chosen_strength": chosen, "test_s0": lists, "test_chosen": {**lists, "ndcg@10": test_c},
            "test_gain": test_c - test0, "test_gain_se": 0.001}


def test_choice_takes_the_best_valid_and_the_smaller_strength_on_a_tie():
    assert pc.choose(_valid([0.01, 0.03, 0.02]))["strength"] == 0.5
    assert pc.choose(list(reversed(_valid([0.02, 0.02, 0.01]))))["strength"] == 0.0


def test_summary_averages_seeds_and_skips_the_reference_row():
    entries = [{"dataset": "toys-t", "model": "MostPop", "reference": True, "ndcg@10": 0.003, "hr@10": 0.006,
                "coverage@10": 0.001, "pop1%@10": 1.0},
               _entry(0, [0.01, 0.03, 0.02], 0.5, 0.010, 0.014), _entry(1, [0.02, 0.01, 0.00], 0.0, 0.012, 0.012)]
    (row,) = pc.summary(entries)
    assert row["seeds"] == [0, 1]
    assert row["strength"] == pytest.approx((0.25, np.std([0.5, 0.0], ddof=1)))
    assert row["test_chosen_ndcg@10"][0] == pytest.approx(0.013)
    assert row["gain_beyond_2se"] == 1  # +.004 > 2 x .001 on seed 0; no gain on seed 1
    assert [c["ndcg@10"] for c in row["curve"]] == pytest.approx([0.015, 0.02, 0.01])
    meta = {"beams": 10, "seeds": [0, 1], "strengths": [0.0, 0.5, 1.0], "commit": "c", "machine": "m", "threads": 1,
            "batch_size": 256, "out_name": "pc", "runs": [], "entries": entries}
    md = pc.markdown(meta)
    assert "| toys-t | MostPop | - | - | 0.0030 |" in md
    assert "| toys-t | TIGER | 2 | 0.25 ± 0.35 | 0.0110 ± 0.0014 | 0.0130 ± 0.0014 | 1 |" in md
    assert "| toys-t | TIGER | 0.0150 / 0.100 | 0.0200 / 0.150 | 0.0100 / 0.200 |" in md
    assert "(pc.png)" in md and "2.0 CPU s per 1,000 rows" in md
    # each seed's own figures: a bar met "on every seed" is read here, not from the mean
    assert "| toys-t | TIGER | 0 | 0.5 | 0.0100 | 0.0140 | 0.100 | 0.100 |" in md
    assert "| toys-t | TIGER | 1 | 0 | 0.0120 | 0.0120 | 0.100 | 0.100 |" in md


def test_decoding_at_zero_is_the_plain_beam_and_a_correction_lowers_the_head_share():
    n = 60
    model = build_model("tiger", semantic_ids(n, sizes=(4, 4)), TIGER_TINY, seed=0).eval()
    ex = examples(40, n, seed=1)
    table = ExampleTable.from_examples(ex, 6)
    pop = np.bincount(ex.targets, minlength=n) * 10
    plain, ranks = pc.decode(model, table, pop, 0.0)
    ref = evaluate(model, ex, protocol="T", ks=(10,), popularity=pop, batch_size=256)
    assert plain["ndcg@10"] == pytest.approx(ref["ndcg@10"]) and plain["coverage@10"] == ref["coverage@10"]
    assert ranks.shape == (40,)
    strong, _ = pc.decode(model, table, pop, 4.0)
    assert strong["pop1%@10"] < plain["pop1%@10"]  # fewer slots go to the most popular items


def test_strengths_without_the_baseline_are_one_line_and_exit_2(capsys, tmp_path):
    assert pc.main(["--run", str(tmp_path), "x", "--strengths", "0.5", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must hold 0" in err[0]
    assert pc.main(["--run", str(tmp_path / "absent"), "x"]) == 2
    assert "no such run directory" in capsys.readouterr().err
