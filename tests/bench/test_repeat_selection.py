"""benchmarks/repeat_selection.py: NDCG@10 per part against a per-row reference, the rankings, bad input."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import repeat_selection as rs  # noqa: E402  (a script of benchmarks/, not a package)


def test_split_ndcg_matches_a_per_row_mean():
    ranks = np.array([1, 0, 3, 11, 2, 0])
    repeat = np.array([True, False, True, False, False, True])
    per_row = [1 / math.log2(r + 1) if 0 < r <= 10 else 0.0 for r in ranks]
    got = rs.split_ndcg(ranks, repeat)
    assert got["all"] == pytest.approx(np.mean(per_row))
    assert got["repeat"] == pytest.approx(np.mean([x for x, m in zip(per_row, repeat) if m]))
    assert got["new"] == pytest.approx(np.mean([x for x, m in zip(per_row, repeat) if not m]))
    assert rs.split_ndcg(ranks, np.zeros(6, bool))["repeat"] is None


def _entry(model, seed, valid_new, test_all):
    parts = {"all": 0.1, "repeat": 0.5, "new": valid_new}
    return {"dataset": "office-t", "model": model, "seed": seed, "valid": parts,
            "test": {"all": test_all, "repeat": None, "new": test_all}}


def test_rankings_count_seeds_won_then_the_mean():
    pop = {"dataset": "office-t", "model": "MostPop", "reference": True, "valid": {"all": 0.9, "repeat": 0.9, "new": 0.9},
           "test": {"all": 0.9, "repeat": None, "new": 0.9}}  # would top every ranking if it were ranked
    es = [pop, _entry("A", 0, 0.20, 0.05), _entry("B", 0, 0.30, 0.06),
          _entry("A", 1, 0.20, 0.07), _entry("B", 1, 0.25, 0.06),
          _entry("A", 2, 0.20, 0.05), _entry("B", 2, 0.10, 0.06)]
    r = rs.rankings(es)["office-t"]
    assert r["valid new"] == ["B", "A"]  # B best at seeds 0 and 1
    assert r["test all"] == ["B", "A"]  # 2 seeds to 1
    assert r["valid all"] == ["A", "B"]  # tied at every seed: the first listed wins each, then the mean ties too
    assert "test repeat" not in r  # no repeat rows on test here
    md = rs.markdown({"commit": "c", "machine": "m", "seeds": [0, 1, 2], "entries": es,
                      "runs": [{"dataset": "office-t", "results": "benchmarks/results/x.json", "valid_rows": 10,
                                "test_rows": 10, "valid_repeat_share": 0.065, "test_repeat_share": 0.029}]})
    assert "| office-t | A | 3 | 0.1000 ± 0.0000 | 0.5000 ± 0.0000 | 0.2000 ± 0.0000 |" in md
    assert "6.5% repeats" in md and "--run RUN_DIR x --seeds 0 1 2" in md
    assert "| office-t | MostPop | - | 0.9000 ± 0.0000 |" in md


def test_a_missing_run_is_one_line_and_exit_2(capsys, tmp_path):
    assert rs.main(["--run", str(tmp_path / "absent"), "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run directory" in err[0]
