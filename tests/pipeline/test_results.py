"""semrec.pipeline.results: typed rows, their baselines, and the run-directory API."""

import pytest

from semrec.artifacts import write_json
from semrec.config import load_config
from semrec.errors import SemrecError
from semrec.pipeline.recipe import Recipe
from semrec.pipeline.results import ResultRow, RunDirectory, infer_baseline, rows_of
from semrec.pipeline.run import baseline_of


def _row(name: str, loss: str, **kw) -> dict:
    base = {"name": name, "model": "tiger", "tokenizer": "rqkmeans", "loss": loss, "alpha": None, "tau": 1.0,
            "dataset": "office-t", "protocol": "T", "split": "test", "device": "cpu", "seed": 0, "ndcg@10": 0.01}
    return {**base, **kw}


def test_row_round_trip_keeps_the_flat_form():
    flat = _row("TIGER+TCA", "tca", alpha=0.1, **{"hr@10": 0.02, "coverage": 0.5}, baseline="TIGER",
                model_stage="model-abc", epochs_run=3)
    row = ResultRow.from_dict(flat)
    assert row.metrics == {"ndcg@10": 0.01, "hr@10": 0.02, "coverage": 0.5}
    assert (row.baseline, row.model_stage, row.epochs_run, row.uses_tca, row.is_teacher) == \
        ("TIGER", "model-abc", 3, True, False)
    again = row.to_dict()
    assert {k: v for k, v in again.items() if v is not None} == flat
    assert list(again)[:11] == ["name", "model", "tokenizer", "loss", "alpha", "tau", "dataset", "protocol",
                                "split", "device", "seed"]
    assert ResultRow.from_dict(again) == row


def test_rows_without_a_recorded_baseline_get_the_unique_ntp_twin():
    rows = [_row("TIGER", "ntp"), _row("TIGER+TCA", "tca", alpha=0.1),
            _row("TIGER MSL", "ntp+msl", tau=4.5), _row("TIGER MSL+TCA", "tca+msl", tau=4.5, alpha=0.1),
            _row("Decoder+TCA", "tca", model="decoder", alpha=0.1),
            _row("SASRec", "ce", model="sasrec", tokenizer=None, tau=None)]
    got = {r.name: r.baseline for r in rows_of({"rows": rows}, "x")}
    assert got == {"TIGER": None, "TIGER+TCA": "TIGER", "TIGER MSL": None, "TIGER MSL+TCA": "TIGER MSL",
                   "Decoder+TCA": None, "SASRec": None}
    # two NTP rows that fit equally well: no guess
    two = [ResultRow.from_dict(r) for r in (_row("A", "ntp"), _row("B", "ntp"), _row("A+TCA", "tca"))]
    assert infer_baseline(two[2], two) is None
    # a recorded baseline (even None) is kept
    kept = rows_of({"rows": [_row("TIGER", "ntp"), _row("TIGER+TCA", "tca", baseline=None)]}, "x")
    assert kept[1].baseline is None


def test_baseline_of_a_recipe_row_needs_the_same_model_ids_and_budget():
    recipe = load_config(Recipe, {
        "name": "r", "data": "office-t", "train": {"epochs": 2},
        "models": [{"name": "T", "config": {"d_model": 64}, "train": {"loss": "ntp"}},
                   {"name": "T big", "config": {"d_model": 128}, "train": {"loss": "ntp"}},
                   {"name": "T+TCA", "config": {"d_model": 64}, "train": {"loss": "tca", "alpha": 0.3}},
                   {"name": "T big+TCA", "config": {"d_model": 128}, "train": {"loss": "tca"},
                    "sweep": {"alpha": [0.1, 0.5]}},
                   {"name": "T long+TCA", "config": {"d_model": 64}, "train": {"loss": "tca", "epochs": 9}}]})
    got = {m.name: baseline_of(recipe, m) for m in recipe.models}
    assert got == {"T": None, "T big": None, "T+TCA": "T", "T big+TCA": "T big", "T long+TCA": None}


def test_run_directory_errors(tmp_path):
    with pytest.raises(SemrecError, match="no such run directory"):
        RunDirectory(tmp_path / "missing")
    write_json(tmp_path / "results.json", {"recipe": "r"})
    with pytest.raises(SemrecError, match="no 'rows' list"):
        RunDirectory(tmp_path)
    write_json(tmp_path / "results.json", {"rows": [{"model": "tiger"}]})
    with pytest.raises(SemrecError, match="row 0: not a results row"):
        RunDirectory(tmp_path)
    write_json(tmp_path / "results.json", {"rows": [_row("TIGER", "ntp")]})
    run = RunDirectory(tmp_path)
    with pytest.raises(SemrecError, match="stage kind 'foo'"):
        run.stages("foo")
    assert run.stages("model") == []
    with pytest.raises(SemrecError, match="cannot tell which model stage produced row 'TIGER'"):
        run.model_stage(run.rows[0])


def test_run_directory_reads_another_results_file_of_its_stages(tmp_path):
    """A recipe's table kept elsewhere finds its models in the run directory the last run overwrote."""
    write_json(tmp_path / "results.json", {"rows": [_row("Decoder", "ntp", model="decoder")]})
    (tmp_path / "stages" / "model-abc" / "model").mkdir(parents=True)
    kept = tmp_path / "kept.json"
    write_json(kept, {"dataset": "office-t", "rows": [_row("TIGER", "ntp", model_stage="model-abc"),
                                                      _row("TIGER+TCA", "tca", model_stage="model-gone")]})
    run = RunDirectory(tmp_path, results=kept)
    assert [r.name for r in run.rows] == ["TIGER", "TIGER+TCA"] and run.result["dataset"] == "office-t"
    assert run.model_stage(run.rows[0]) == tmp_path / "stages" / "model-abc"
    with pytest.raises(SemrecError, match="model stage of row 'TIGER\\+TCA' is missing"):
        run.model_stage(run.rows[1])
    assert [r.name for r in RunDirectory(tmp_path).rows] == ["Decoder"]
    with pytest.raises(SemrecError, match="missing.json: no such file"):
        RunDirectory(tmp_path, results=tmp_path / "missing.json")


def test_teacher_stage_is_the_one_the_results_distilled(tmp_path):
    """Two recipes' teachers of one seed share a run directory: each result finds the teacher its TCA models
    read, not whichever comes first by name."""
    stages = tmp_path / "stages"
    for key, new_items in (("aaa", False), ("bbb", True)):
        (stages / f"teacher-{key}").mkdir(parents=True)
        (stages / f"teacher-{key}" / "train_log.jsonl").write_text("")
        write_json(stages / f"teacher-{key}" / "stage.json",
                   {"key": key, "config": {"train": {"seed": 0, "new_items": new_items}}, "inputs": {}})
    for model, teacher in (("model-plain", None), ("model-tca", "bbb")):
        (stages / model / "model").mkdir(parents=True)
        write_json(stages / model / "stage.json", {"inputs": {"teacher": teacher} if teacher else {}})
    write_json(tmp_path / "results.json", {"rows": [_row("TIGER", "ntp", model_stage="model-plain"),
                                                    _row("TIGER+TCA", "tca", model_stage="model-tca")]})
    assert RunDirectory(tmp_path).teacher_stage(0) == stages / "teacher-bbb"
    write_json(tmp_path / "ntp.json", {"rows": [_row("TIGER", "ntp", model_stage="model-plain")]})
    with pytest.raises(SemrecError, match="cannot tell the teacher stage of seed 0 \\(2 candidates"):
        RunDirectory(tmp_path, results=tmp_path / "ntp.json").teacher_stage(0)
    with pytest.raises(SemrecError, match="seed 1 \\(0 candidates"):
        RunDirectory(tmp_path).teacher_stage(1)
    (stages / "teacher-bbb" / "train_log.jsonl").unlink()  # the distilled teacher's stage is unfinished
    with pytest.raises(SemrecError, match="seed 0 \\(1 candidates, or its directory is gone"):
        RunDirectory(tmp_path).teacher_stage(0)
