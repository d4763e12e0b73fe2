"""The prepared accelerator run (scripts/gpu_run.sh) end to end with --tiny on the CPU: every stage runs and
writes JSON + Markdown; bad input is one line with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ["cuda_tests", "tca_throughput", "tiger_train_throughput", "tiger_beauty", "llm_rows"]


def _run(*args, timeout=240):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_tiny_run_writes_every_stage(tmp_path):
    p = _run("--tiny", "--budget-s", "1200", "--out", str(tmp_path), timeout=1200)  # no stage skipped on a busy machine
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_run.json").read_text())
    assert list(res["stages"]) == STAGES
    assert all(st["status"] == "ok" for st in res["stages"].values()), res["stages"]
    tests = res["stages"]["cuda_tests"]["result"]
    assert tests["ok"] and tests.get("passed", 0) + tests.get("skipped", 0) >= 5
    ct = res["stages"]["tca_throughput"]["result"]
    assert ct["ct_samples_per_s"] > 0 and ct["soft_ntp_samples_per_s"] > 0
    tp = res["stages"]["tiger_train_throughput"]["result"]["rows"]
    assert {r["loss"] for r in tp} == {"ntp", "tca"} and all(r["samples_per_s"] > 0 for r in tp)
    tiger = res["stages"]["tiger_beauty"]["result"]
    assert tiger["steps"] > 0 and tiger["history"] and tiger["test_rows"] == 128
    assert all(0.0 <= v <= 1.0 for v in tiger["test"].values())
    # MostPop on the same rows, counted alike: the bar the model is read against
    pop = tiger["mostpop_test"]
    assert set(pop) == set(tiger["test"]) and 0.0 <= pop["recall@5"] <= pop["recall@10"] <= 1.0
    assert tiger["best_valid_ndcg@10"] == max(h["valid_ndcg@10"] for h in tiger["history"])
    llm = res["stages"]["llm_rows"]["result"]
    assert llm["train_rows_per_s"] > 0 and llm["eval_rows_per_s"] > 0 and llm["invalid_rate"] == 0.0
    md = (tmp_path / "gpu_run.md").read_text()
    assert all(f"## {s}: ok" in md for s in STAGES) and "| MostPop test ndcg@10 |" in md
    # the results name no path of the machine that made them
    assert res["meta"]["command"] == "bash scripts/gpu_run.sh --tiny --budget-s 1200 --out DIR"
    assert str(tmp_path) not in md


def test_missing_artifacts_is_one_line_exit_2(tmp_path):
    # the default timeout (240 s): a loaded machine starts Python slowly
    p = _run("--tiny", "--artifacts", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "--make-artifacts" in p.stderr
    assert not (tmp_path / "out").exists()
