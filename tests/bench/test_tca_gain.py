"""benchmarks/tca_gain.py: the acceptance bar it prints (TCA's mean NDCG@10 gain over the larger seed std)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import tca_gain  # noqa: E402  (a script of benchmarks/, not a package)


def _result(ntp: list[float], tca: list[float]) -> dict:
    rows = []
    for name, model, loss, vals in (("TIGER", "tiger", "ntp", ntp), ("TIGER+TCA", "tiger", "tca", tca),
                                    ("Decoder+TCA", "decoder", "tca", tca)):
        for seed, v in enumerate(vals):
            rows.append({"name": name, "model": model, "loss": loss, "seed": seed, "tokenizer": "rqkmeans",
                         "alpha": 0.2, "ndcg@10": v, "hr@10": 2 * v, "cc": 0.1})
    return {"dataset": "office-t", "recipe": "r", "rows": rows}


def test_gain_is_judged_against_the_larger_seed_std():
    (high,) = tca_gain.pairs(_result([0.010, 0.012, 0.014], [0.020, 0.021, 0.022]))  # Decoder+TCA has no twin
    assert (high["base"], high["tca"]) == ("TIGER", "TIGER+TCA")
    assert high["ndcg@10"]["gain"] == pytest.approx(0.009)
    assert high["ndcg@10"]["seed_gains"] == pytest.approx([0.010, 0.009, 0.008])
    assert high["gain_exceeds_std"] is True
    (low,) = tca_gain.pairs(_result([0.010, 0.012, 0.014], [0.011, 0.013, 0.015]))  # gain .001 < std .002
    assert low["gain_exceeds_std"] is False


def test_valid_rows_of_the_same_name_and_seed_do_not_stand_in_for_test_rows():
    res = _result([0.010, 0.012, 0.014], [0.020, 0.021, 0.022])
    res["rows"] += [{**r, "split": "valid", "ndcg@10": 0.5} for r in res["rows"]]
    (pair,) = tca_gain.pairs(res)
    assert pair["ndcg@10"]["base_mean"] == pytest.approx(0.012) and pair["ndcg@10"]["tca_mean"] == pytest.approx(0.021)


def test_one_seed_cannot_meet_or_miss_the_bar():
    (one,) = tca_gain.pairs(_result([0.010], [0.020]))
    assert one["gain_exceeds_std"] is None
    md = tca_gain.markdown([one], [], ["r"])
    assert "n/a (1 seed)" in md and "±" not in md.split("| office-t |")[1]


def test_mostpop_row_comes_from_the_recipe_else_from_the_baselines_file():
    res = _result([0.010, 0.012], [0.020, 0.021])
    res["rows"].append({"name": "MostPop", "model": "mostpop", "loss": "none", "seed": 0, "tokenizer": "rqkmeans",
                        "ndcg@10": 0.004, "hr@10": 0.008})
    (pop,) = tca_gain.most_popular([res])
    assert (pop["model"], pop["ndcg@10"][0], pop["source"]) == ("MostPop", 0.004, "r.json")
    res["rows"].pop()
    (pop,) = tca_gain.most_popular([res])  # office-t's row of the committed baselines
    assert pop["source"] == "baselines.json" and pop["ndcg@10"][0] == pytest.approx(0.0087, abs=5e-5)
    md = tca_gain.markdown(tca_gain.pairs(res), [pop], ["r"])
    assert "| office-t | MostPop |" in md and md.count("| - | - |") == 1  # no coverage in these rows


def test_alpha_is_marked_fixed_unless_every_seed_chose_it_on_valid():
    res = _result([0.010, 0.012], [0.020, 0.021])
    (fixed,) = tca_gain.pairs(res)
    assert "| 0.2, 0.2 (fixed) |" in tca_gain.markdown([fixed], [], ["r"])
    for r in res["rows"]:
        if r["loss"] == "tca":
            r["selected_on_valid"] = {"alpha": 0.2, "ndcg@10": 0.05}
    (chosen,) = tca_gain.pairs(res)
    assert "| 0.2, 0.2 |" in tca_gain.markdown([chosen], [], ["r"])


def test_a_tca_variant_is_named_beside_its_ntp_row():
    res = _result([0.010, 0.012, 0.014], [0.020, 0.021, 0.022])
    res["rows"] += [{**r, "name": "TIGER+TCA history excluded"} for r in res["rows"] if r["name"] == "TIGER+TCA"]
    md = tca_gain.markdown(tca_gain.pairs(res), [], ["r"])
    assert "| office-t | TIGER | rqkmeans |" in md and "| office-t | TIGER vs TIGER+TCA history excluded |" in md


def _alone(name: str, vals: list[float], **over) -> dict:
    """A results file holding one TCA variant, run without its NTP model."""
    rows = [{"name": name, "model": "tiger", "loss": "tca", "seed": s, "tokenizer": "rqkmeans", "alpha": 0.5,
             "ndcg@10": v, "hr@10": 2 * v, "cc": 0.1, "baseline": None} for s, v in enumerate(vals)]
    return {"dataset": "office-t", "recipe": "alone", "rows": rows, **over}


def test_a_pair_across_files_equals_the_pair_within_one():
    res = _result([0.010, 0.012, 0.014], [0.020, 0.021, 0.022])
    (inside,) = tca_gain.pairs(res)
    across = tca_gain.cross_pair(_alone("TIGER+TCA", [0.020, 0.021, 0.022]), "TIGER+TCA", res, "TIGER")
    for m in ("ndcg@10", "hr@10", "cc"):
        assert across[m] == inside[m]  # the same numbers, computed the same way
    assert across["gain_exceeds_std"] is True and across["base_recipe"] == "r" and across["recipe"] == "alone"
    md = tca_gain.markdown([across], [], ["alone", "r"])
    assert "| office-t | TIGER (`r`) vs TIGER+TCA (`alone`) |" in md


@pytest.mark.parametrize("change, words", [
    ({"dataset": "toys-t"}, "dataset differs"),
    ({"data": "other-fingerprint"}, "data differs"),
    ({"model": "decoder"}, "model differs"),
    ({"tokenizer": "pq"}, "IDs differs"),
    ({"loss": "tca+msl"}, "loss apart from TCA differs"),
    ({"baseline": "TIGER 6 passes"}, "records its own baseline"),
    ({"seed": 7}, "no seed in common"),
])
def test_a_pair_across_files_refuses_rows_that_are_not_twins(change, words):
    base = _result([0.010, 0.012], [0.020, 0.021])
    alone = _alone("TIGER+TCA x", [0.020])
    if {"dataset", "data"} & set(change):
        alone.update(change)
    else:
        alone["rows"][0].update(change)
    with pytest.raises(ValueError, match=words):
        tca_gain.cross_pair(alone, "TIGER+TCA x", base, "TIGER")


def test_bad_pair_argument_is_one_line_exit_2(capsys):
    assert tca_gain.main(["--pair", "no-row-named", "--out-name", "never_written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RESULT:TCA ROW=RESULT:NTP ROW" in err[0]
    assert tca_gain.main(["--pair", "no_such_file:A=baselines:B", "--out-name", "never_written"]) == 2
    assert "no_such_file.json not found" in capsys.readouterr().err
    assert not (tca_gain.RESULTS / "never_written.json").exists()


def test_teachers_scored_two_ways_are_two_rows():
    """A teacher row scored without the history keeps its table name; it is not averaged with the plain ones."""
    res = _result([0.010, 0.012], [0.020, 0.021])
    for seed, (plain, excluded) in enumerate(((0.07, 0.05), (0.06, 0.04))):
        res["rows"] += [{"name": name, "model": "sasrec", "loss": "ce", "seed": seed, "tokenizer": None,
                         "ndcg@10": v, "hr@10": 2 * v} for name, v in (("SASRec", plain),
                                                                         ("SASRec, history excluded", excluded))]
    rows = {r["model"]: r for r in tca_gain.teachers([res]) if r["model"].startswith("SASRec")}
    assert set(rows) == {"SASRec", "SASRec, history excluded"}
    assert rows["SASRec"]["ndcg@10"][0] == pytest.approx(0.065)
    assert rows["SASRec, history excluded"]["ndcg@10"][0] == pytest.approx(0.045)


def test_mostpop_source_is_the_results_file_read():
    """A recipe run stored under another name (`run_recipe.py --name`): MostPop's source is that file."""
    name = "office_tiger_tca_new_item_teacher_5seeds_long_cpu"
    res = tca_gain.load_result(name)
    assert res["recipe"] != name
    (pop,) = tca_gain.most_popular([res])
    assert pop["source"] == f"{name}.json"
