"""benchmarks/training_curves.py: per-pass figures read from a run's model stages, averaged over seeds."""

import sys
from pathlib import Path

import numpy as np
import pytest

from semrec.artifacts import write_json
from semrec.pipeline.results import ResultRow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import training_curves as tc  # noqa: E402  (a script of benchmarks/, not a package)


def _history(ndcgs, covs):
    steps = [{"kind": "step", "step": 5, "train_loss": 3.0}]  # not a pass: skipped
    return steps + [{"kind": "epoch", "epoch": i, "step": 10 * (i + 1), "valid_ndcg@10": n, "valid_coverage@10": c}
                    for i, (n, c) in enumerate(zip(ndcgs, covs))]


def _fake_run(tmp_path: Path, curves: dict[int, tuple[list, list]]) -> Path:
    """A run directory with one TIGER model stage per seed, its results file named `r` under tmp_path/results."""
    run = tmp_path / "run"
    rows = [ResultRow("MostPop", "mostpop", None, "none", None, None, "toys-t", "T", "test", None, 0,
                      {"ndcg@10": 0.002, "coverage@10": 0.0005}, valid_metric=0.0021).to_dict()]
    for seed, (ndcgs, covs) in curves.items():
        stage = run / "stages" / f"model-{seed}"
        (stage / "model").mkdir(parents=True)
        best = int(np.argmax(ndcgs)) if ndcgs else 0
        write_json(stage / "train.json", {"history": _history(ndcgs, covs), "best_epoch": best,
                                          "stopped_early": best < len(ndcgs) - 1, "cpu_time_s": 100.0 + seed})
        rows.append(ResultRow("TIGER", "tiger", "rqkmeans", "ntp+msl", None, None, "toys-t", "T", "test", None, seed,
                              {"ndcg@10": 0.01 + seed / 1000, "coverage@10": 0.2},
                              model_stage=f"model-{seed}").to_dict())
    write_json(tmp_path / "results" / "r.json", {"dataset": "toys-t", "protocol": "T", "commit": "c", "rows": rows})
    return run


def test_summary_averages_each_pass_over_the_seeds_that_ran_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "RESULTS", tmp_path / "results")
    run = _fake_run(tmp_path, {0: ([0.01, 0.02, 0.03], [0.1, 0.2, 0.3]), 1: ([0.02, 0.01], [0.2, 0.4])})
    got = list(tc.run_curves(str(run), "r", None))
    assert [e["model"] for _, e in got] == ["MostPop", "TIGER", "TIGER"]
    assert got[1][1]["passes"][0] == {"pass": 1, "step": 10, "valid_ndcg@10": 0.01, "valid_coverage@10": 0.1}
    entries = [{"dataset": f["dataset"], **e} for f, e in got]
    (row,) = tc.summary(entries)
    assert [c["seeds"] for c in row["curve"]] == [2, 2, 1]
    assert row["curve"][0]["valid_ndcg@10"] == pytest.approx((0.015, np.std([0.01, 0.02], ddof=1)))
    assert row["curve"][1]["valid_coverage@10"][0] == pytest.approx(0.3)
    assert row["curve"][2]["valid_ndcg@10"] == pytest.approx((0.03, 0.0))
    assert row["best_is_last"] == 1  # seed 0 peaked at its last pass, seed 1 at its first
    assert row["ndcg@10"][0] == pytest.approx(0.0105)
    meta = {"commit": "c", "machine": "m", "out_name": "tc", "runs": [got[0][0]], "entries": entries}
    md = tc.markdown(meta)
    assert "| toys-t | TIGER | 3 | 1 | 0.0300 ± 0.0000 | 0.300 ± 0.000 |" in md
    assert "| toys-t | MostPop | - | - | - | 0.0020 | 0.0005 | 0.0021 |" in md
    assert "| toys-t | TIGER | 2 | 1 of 2 | 100 |" in md and "--run RUN_DIR r --out-name tc" in md
    unknown = [{**e, "cpu_time_s": None} for e in entries]  # stages written without CPU time
    assert tc.summary(unknown)[0]["cpu_time_s"] is None
    assert "| toys-t | TIGER | 2 | 1 of 2 | - |" in tc.markdown({**meta, "entries": unknown})


def test_main_writes_json_md_and_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(tc, "RESULTS", tmp_path / "results")
    run = _fake_run(tmp_path, {0: ([0.01, 0.02], [0.1, 0.2])})
    assert tc.main(["--run", str(run), "r", "--out-name", "tc"]) == 0
    assert {p.name for p in (tmp_path / "results").iterdir()} == {"r.json", "tc.json", "tc.md", "tc.png"}


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tc, "RESULTS", tmp_path / "results")
    assert tc.main(["--run", str(tmp_path / "absent"), "r"]) == 2
    assert "no such run directory" in capsys.readouterr().err
    run = _fake_run(tmp_path, {0: ([], [])})  # a stage whose history has no pass
    assert tc.main(["--run", str(run), "r", "--out-name", "tc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pass with valid_ndcg@10" in err[0]
    assert not (tmp_path / "results" / "tc.json").exists()  # nothing half-written
    assert tc.main(["--run", str(run), "r", "--models", "SASRec"]) == 2
    assert "no generative row named ['SASRec']" in capsys.readouterr().err
