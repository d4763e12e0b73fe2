"""`semrec run`: a recipe end to end on a tiny real-format dataset, stage reuse, and bad recipes."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from semrec.cli import main
from semrec.cli.cf import refit_config
from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError
from semrec.data import load_dataset
from semrec.evaluation import evaluate
from semrec.models import load_model
from semrec.pipeline import load_recipe, run_recipe
from semrec.pipeline.results import RunDirectory

WORDS = ["red", "blue", "lego", "doll", "puzzle", "train", "car", "ball", "kite", "robot"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 40-item, 60-user protocol-T-style dataset with a learnable 'next item' rule, a scheme and a recipe."""
    root = tmp_path_factory.mktemp("pipe")
    n = 40
    items = pd.DataFrame({"raw_id": [f"A{i:03d}" for i in range(n)],
                          "title": [f"{WORDS[i % 10]} {WORDS[(i // 10) * 3 % 10]} set {i}" for i in range(n)]})

    def split(rows, seed):
        r = np.random.default_rng(seed)
        starts = r.integers(0, n, rows)
        hists = [[(s + k) % n for k in range(4)] for s in starts]
        return Examples.from_lists(r.integers(0, 60, rows), hists, [(s + 4) % n for s in starts])

    ds = SeqDataset("tiny", items, {"train": split(300, 1), "valid": split(40, 2), "test": split(40, 3)},
                    users=pd.DataFrame({"raw_id": [str(u) for u in range(60)]}), protocol="T")
    ds.save_pretrained(root / "data")
    scheme = {"scheme": "rqkmeans", "embedding": {"content": "text", "template": "{title}"},
              "quantizer": {"codebook_sizes": [4, 4], "niter": 5, "seed": 0},
              "collisions": {"method": "extra_code"}}
    (root / "scheme.yaml").write_text(yaml.safe_dump(scheme))
    recipe = {
        "name": "tiny", "data": str(root / "data"), "tokenizer": "scheme.yaml", "seeds": [0], "device": "cpu",
        "teacher": {"model": "sasrec", "config": {"hidden": 16, "heads": 1, "ffn": 32, "layers": 1, "max_len": 4},
                    "train": {"epochs": 2}},
        "teachers_in_table": [],
        "train": {"epochs": 1, "batch_size": 64, "warmup_steps": 1, "valid_max_rows": 20, "progress": False},
        "models": [
            {"name": "T", "model": "tiger", "config": {"num_layers": 1, "num_decoder_layers": 1, "d_model": 16,
                                                        "num_heads": 2, "d_kv": 8, "d_ff": 32, "max_history": 4}},
            {"name": "T+TCA", "model": "tiger", "train": {"loss": "tca"}, "sweep": {"alpha": [0.1, 0.5]},
             "config": {"num_layers": 1, "num_decoder_layers": 1, "d_model": 16, "num_heads": 2, "d_kv": 8,
                        "d_ff": 32, "max_history": 4}},
        ],
        "eval": {"num_beams": 10},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root


def test_run_end_to_end_then_reuse(tiny):
    logs = []
    recipe = load_recipe(tiny / "recipe.yaml")
    res = run_recipe(recipe, tiny / "run", log=logs.append, progress=False)
    names = [r["name"] for r in res["rows"]]
    assert names == ["MostPop", "Random", "SASRec", "T", "T+TCA"]
    assert {r["device"] for r in res["rows"]} == {"cpu"}
    for row in res["rows"]:
        for k in ("hr@1", "hr@10", "ndcg@10", "coverage@10", "pop1%@10"):
            assert 0.0 <= row[k] <= 1.0
        assert row["hr@1"] <= row["hr@3"] <= row["hr@10"]
        assert 1 <= row["distinct_top1"] <= 40 and row["valid_metric"] is not None
    mostpop, rand = res["rows"][:2]
    # MostPop: one list for everyone, the 10 most frequent training targets
    assert mostpop["distinct_top1"] == 1 and mostpop["coverage@10"] == 10 / 40
    assert mostpop["vs_mostpop"] == {"ndcg@10_gain": 0.0, "se": 0.0}
    assert rand["coverage@10"] > 0.9 and rand["distinct_top1"] > 10
    summary = {s["name"]: s for s in res["summary"]}
    assert "above_mostpop" not in summary["MostPop"]
    assert summary["SASRec"]["above_mostpop"] is True  # the rule is learnable: the teacher learns it
    tca = res["rows"][4]
    assert tca["loss"] == "tca" and tca["alpha"] in (0.1, 0.5)
    assert {c["alpha"] for c in tca["sweep_valid"]} == {0.1, 0.5}
    assert 0.0 <= tca["cc"] <= 1.0 and tca["invalid_rate"] == 0.0
    md = (tiny / "run" / "results.md").read_text()
    assert ("| T+TCA" in md and "ndcg@10" in md and "| valid ndcg@10 |" in md and "| MostPop |" in md
            and "coverage@10" in md)
    assert json.loads((tiny / "run" / "results.json").read_text())["rows"] == res["rows"]
    computed = [m for m in logs if "computing" in m]
    assert len(computed) == 1 + 1 + 3 + 2  # teacher, ids, 3 models, 2 test evaluations
    # the teacher stage holds what `semrec train-cf` writes (the teacher itself in teacher/)
    [stage] = (tiny / "run" / "stages").glob("teacher-*")
    metrics = json.loads((stage / "metrics.json").read_text())
    assert len((stage / "train_log.jsonl").read_text().splitlines()) == metrics["epochs_run"]
    assert refit_config(stage / "teacher")[1]["train"]["epochs"] == metrics["best_epoch"]

    logs2 = []
    res2 = run_recipe(load_recipe(tiny / "recipe.yaml"), tiny / "run", log=logs2.append, progress=False)
    assert not [m for m in logs2 if "computing" in m]  # everything reused
    assert [r["hr@10"] for r in res2["rows"]] == [r["hr@10"] for r in res["rows"]]
    # the compute time counts reused stages too: a fully cached re-run reports what the results cost
    stage_seconds = sum(json.loads(p.read_text())["seconds"] for p in (tiny / "run" / "stages").glob("*/stage.json"))
    assert res2["compute_time_s"] == res["compute_time_s"] == pytest.approx(stage_seconds, abs=0.1)
    assert res2["compute_time_s"] > res2["wall_time_s"]

    # a changed training option recomputes only that model row and its evaluation
    logs3 = []
    recipe3 = load_recipe(tiny / "recipe.yaml", ["train.lr=0.002"])
    recipe3.models = recipe3.models[:1]
    run_recipe(recipe3, tiny / "run", log=logs3.append, progress=False)
    assert [m.split("]")[0] for m in logs3 if "computing" in m] == ["[model", "[eval-test"]

    # exact lists: new test evaluations only (training's beam validation still picks alpha), with the metrics
    # evaluate() gives
    logs4 = []
    res4 = run_recipe(load_recipe(tiny / "recipe.yaml", ["eval.decode=exact"]), tiny / "run", log=logs4.append,
                      progress=False)
    assert [m.split("]")[0] for m in logs4 if "computing" in m] == ["[eval-test"] * 2
    t_row = res4["rows"][3]
    assert res4["decode"] == "exact" and t_row["decode"] == "exact" and "num_beams" not in t_row
    assert "exact top-10" in (tiny / "run" / "results.md").read_text()
    run = RunDirectory(tiny / "run")
    model = load_model(run.model_stage(run.rows[3]) / "model")
    test = load_dataset(tiny / "data").test
    want = evaluate(model, test, decode="exact")
    assert all(t_row[k] == pytest.approx(want[k]) for k in ("hr@1", "hr@10", "ndcg@10", "coverage@10"))
    logs5 = []
    run_recipe(load_recipe(tiny / "recipe.yaml"), tiny / "run", log=logs5.append, progress=False)
    assert not [m for m in logs5 if "computing" in m]  # the beam stages kept their keys

    # bf16 decoding is an evaluation of its own; the trained model and the float32 evaluations are reused
    logs6 = []
    recipe6 = load_recipe(tiny / "recipe.yaml", ["eval.bf16=true"])
    recipe6.models = recipe6.models[:1]
    res6 = run_recipe(recipe6, tiny / "run", log=logs6.append, progress=False)
    assert [m.split("]")[0] for m in logs6 if "computing" in m] == ["[eval-test"]
    assert res6["rows"][3]["invalid_rate"] == 0.0


def test_model_stage_is_keyed_by_the_precision_used_not_the_request(tiny, monkeypatch):
    """`bf16: true` on a CPU without native bf16 trains in float32: it reuses the float32 stage."""
    from semrec import runtime

    def model_stages(overrides: list[str]) -> set[str]:
        recipe = load_recipe(tiny / "recipe.yaml", overrides)
        recipe.models = recipe.models[:1]
        logs = []
        run_recipe(recipe, tiny / "run_amp", log=logs.append, progress=False)
        return {m.split()[-1] for m in logs if m.startswith("[model]") and ("computing" in m or "reusing" in m)}

    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: False)
    fp32 = model_stages(["train.bf16=false"])
    assert model_stages(["train.bf16=true"]) == fp32
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: True)
    assert model_stages(["train.bf16=true"]).isdisjoint(fp32)


def test_an_option_at_its_neutral_value_keeps_the_cached_stage(tiny):
    """An option added after stages were cached (`stage_key_omits`) leaves the key unchanged at the value
    that builds the model as before, and changes it otherwise."""
    from semrec.models.tiger import TigerConfig

    def model_stages(extra: dict) -> set[str]:
        recipe = load_recipe(tiny / "recipe.yaml")
        recipe.models = recipe.models[:1]
        recipe.models[0].config = {**recipe.models[0].config, **extra}
        logs = []
        run_recipe(recipe, tiny / "run_omit", log=logs.append, progress=False)
        return {m.split()[-1] for m in logs if m.startswith("[model]") and ("computing" in m or "reusing" in m)}

    assert TigerConfig.stage_key_omits == {"item_embeddings": False, "edge_head": False}
    base = model_stages({})
    assert model_stages({"item_embeddings": False, "edge_head": False}) == base
    assert model_stages({"item_embeddings": True}).isdisjoint(base)
    assert model_stages({"edge_head": True}).isdisjoint(base)
    key = json.loads((tiny / "run_omit" / "stages" / next(iter(base)).split("/")[-1] / "stage.json").read_text())
    config = key["config"]["config"]
    assert "item_embeddings" not in config and "edge_head" not in config and config["item_positions"]


def test_a_training_option_at_its_neutral_value_keeps_the_cached_stage(tiny):
    """The same for TrainConfig's `stage_key_omits`; a TCA row with such an option is still paired with its
    NTP row."""
    from semrec.pipeline.run import baseline_of
    from semrec.training import TrainConfig

    def model_stages(extra: dict) -> set[str]:
        recipe = load_recipe(tiny / "recipe.yaml")
        recipe.models = [recipe.models[1]]
        recipe.models[0].sweep = {"alpha": [0.1]}
        recipe.models[0].train = {**recipe.models[0].train, **extra}
        logs = []
        run_recipe(recipe, tiny / "run_omit_train", log=logs.append, progress=False)
        return {m.split()[-1] for m in logs if m.startswith("[model]") and ("computing" in m or "reusing" in m)}

    assert TrainConfig.stage_key_omits == {"cf_exclude_history": False, "valid_rows": "all"}
    base = model_stages({})
    assert model_stages({"cf_exclude_history": False, "valid_rows": "all"}) == base
    assert model_stages({"cf_exclude_history": True}).isdisjoint(base)
    assert model_stages({"valid_rows": "new_items"}).isdisjoint(base)
    assert "Validated on the valid split's new-item rows only" in (tiny / "run_omit_train" / "results.md").read_text()
    key = json.loads((tiny / "run_omit_train" / "stages" / next(iter(base)).split("/")[-1] / "stage.json").read_text())
    assert "cf_exclude_history" not in key["config"]["train"] and key["config"]["train"]["loss"] == "tca"
    recipe = load_recipe(tiny / "recipe.yaml")
    recipe.models[1].train = {**recipe.models[1].train, "cf_exclude_history": True}
    assert baseline_of(recipe, recipe.models[1]) == "T"


def test_popularity_correction_is_chosen_on_valid_then_decodes_test(tiny):
    """eval.popularity_correction: each row's model decodes the whole valid split at every strength (stages of
    their own), the best valid NDCG@10 picks s (ties: the smaller), test is decoded at it, and serving the row
    applies it; the trained model and uncorrected evaluations keep their keys."""
    from semrec.decoding import popularity_bias
    from semrec.pipeline.run import train_popularity
    from semrec.serving import Recommender

    out = tiny / "run_popcorr"
    recipe = load_recipe(tiny / "recipe.yaml", ["eval.popularity_correction=[2, 0.5, 0.5]"])
    recipe.models = recipe.models[:1]
    logs = []
    res = run_recipe(recipe, out, log=logs.append, progress=False)
    assert [m.split("]")[0] for m in logs if "computing" in m][-3:] == ["[eval-valid", "[eval-valid", "[eval-test"]
    row = res["rows"][3]
    tried = row["correction_valid"]
    assert [c["popularity_correction"] for c in tried] == [0.5, 2.0]
    best = max(c["valid"] for c in tried)
    chosen = min(c["popularity_correction"] for c in tried if c["valid"] == best)
    assert row["selected_on_valid"] == {"popularity_correction": chosen, "ndcg@10": best}
    assert row["valid_metric"] == best and res["popularity_correction"] == [2, 0.5, 0.5]

    ds = load_dataset(tiny / "data")
    model = load_model(RunDirectory(out).model_stage(RunDirectory(out).rows[3]) / "model")
    pop = train_popularity(ds)
    for c in tried:
        bias = popularity_bias(model.prefix_index(), pop, c["popularity_correction"])
        assert evaluate(model, ds.valid, edge_bias=bias)["ndcg@10"] == pytest.approx(c["valid"])
    bias = popularity_bias(model.prefix_index(), pop, chosen)
    want = evaluate(model, ds.test, edge_bias=bias, popularity=pop)
    assert all(row[k] == pytest.approx(want[k]) for k in ("hr@1", "hr@10", "ndcg@10", "coverage@10", "pop1%@10"))
    assert "chosen per row and seed from [2.0, 0.5, 0.5]" in (out / "results.md").read_text()
    assert "popularity_correction" in (out / "results.md").read_text()
    served = Recommender.from_run(out, device="cpu")
    torch.testing.assert_close(served.edge_bias, bias)
    assert Recommender.from_run(out, device="cpu", popularity_correction=0.0).edge_bias is None

    # the recipe without the option: the same model stage, one new (uncorrected) test evaluation
    logs2 = []
    recipe2 = load_recipe(tiny / "recipe.yaml")
    recipe2.models = recipe2.models[:1]
    res2 = run_recipe(recipe2, out, log=logs2.append, progress=False)
    assert [m.split("]")[0] for m in logs2 if "computing" in m] == ["[eval-test"]
    assert res2["rows"][3]["selected_on_valid"] is None and "popularity_correction" not in res2
    keys = [json.loads(p.read_text())["config"] for p in (out / "stages").glob("eval-*/stage.json")]
    assert sorted(k.get("popularity_correction", 0.0) for k in keys) == sorted([0.5, 2.0, chosen, 0.0])

    # a row selecting on valid's new-item rows chooses s on those rows too
    from semrec.training.trainer import new_item_rows

    recipe3 = load_recipe(tiny / "recipe.yaml", ["eval.popularity_correction=[0, 2]", "train.valid_rows=new_items"])
    recipe3.models = recipe3.models[:1]
    row3 = run_recipe(recipe3, out, log=lambda m: None, progress=False)["rows"][3]
    model3 = load_model(RunDirectory(out).model_stage(RunDirectory(out).rows[3]) / "model")
    for c in row3["correction_valid"]:
        s3 = c["popularity_correction"]
        bias = popularity_bias(model3.prefix_index(), pop, s3) if s3 else None
        assert evaluate(model3, new_item_rows(ds.valid), edge_bias=bias)["ndcg@10"] == pytest.approx(c["valid"])
    keys = [json.loads(p.read_text())["config"] for p in (out / "stages").glob("eval-valid-*/stage.json")]
    assert sum(k.get("rows") == "new_items" for k in keys) == 2  # its own valid stages, at s = 0 and 2


def test_a_sweep_chosen_on_the_mean_over_seeds(tiny):
    """`sweep_choice: mean_over_seeds`: every seed's row uses the one alpha whose valid metric averaged over the
    recipe's seeds is best, and records its own seed's valid beside that mean; the default (per seed) reuses the
    same models and keeps each seed's best."""
    out = tiny / "run_pooled"
    recipe = load_recipe(tiny / "recipe.yaml", ["seeds=[0, 1]"])
    recipe.models = [recipe.models[1]]
    recipe.models[0].sweep_choice = "mean_over_seeds"
    rows = [r for r in run_recipe(recipe, out, log=lambda m: None, progress=False)["rows"] if r["name"] == "T+TCA"]
    valid = {(r["seed"], c["alpha"]): c["valid"] for r in rows for c in r["sweep_valid"]}
    mean = {a: (valid[0, a] + valid[1, a]) / 2 for a in (0.1, 0.5)}
    best = max(mean, key=mean.get)  # the first on ties, as the grid lists them
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        assert r["alpha"] == best and r["valid_metric"] == valid[r["seed"], best]
        assert r["selected_on_valid"] == {"alpha": best, "ndcg@10": valid[r["seed"], best],
                                          "ndcg@10 mean over seeds": pytest.approx(mean[best])}
    assert "'ndcg@10 mean over seeds'" in (out / "results.md").read_text()
    logs = []
    recipe.models[0].sweep_choice = "per_seed"
    rows2 = [r for r in run_recipe(recipe, out, log=logs.append, progress=False)["rows"] if r["name"] == "T+TCA"]
    assert not [m for m in logs if m.startswith("[model") and "computing" in m]
    for r in rows2:
        assert r["alpha"] == max((0.1, 0.5), key=lambda a: valid[r["seed"], a])
        assert "ndcg@10 mean over seeds" not in r["selected_on_valid"]
    with pytest.raises(SemrecError, match="model 'x': sweep_choice 'mean_over_seeds' needs a sweep"):
        load_recipe(tiny / "recipe.yaml", ["models=[{name: x, model: tiger, sweep_choice: mean_over_seeds}]"])
    with pytest.raises(SemrecError, match="sweep_choice"):
        load_recipe(tiny / "recipe.yaml",
                    ["models=[{name: x, model: tiger, sweep: {alpha: [0.1]}, sweep_choice: pooled}]"])


def test_the_mean_over_seeds_can_overrule_most_seeds(monkeypatch):
    """Two of three seeds prefer alpha .5 by .01 on valid, one prefers .1 by .05: the mean picks .1 for all;
    equal means keep the grid's first value."""
    from semrec.pipeline.recipe import ModelSpec, Recipe
    from semrec.pipeline.run import Pipeline

    def choose(valid: dict[int, list[float]]) -> dict:
        p = Pipeline.__new__(Pipeline)  # the choice alone: no dataset, stages come from the stubs below
        p.recipe, p.choices_over_seeds = Recipe(name="r", data="x", seeds=sorted(valid)), {}
        monkeypatch.setattr(p, "teacher", lambda model, seed: seed)
        monkeypatch.setattr(p, "sweep_candidates", lambda spec, tok, tdir, seed: [
            (v, {"alpha": a}, f"model-{seed}-{a}") for v, a in zip(valid[tdir], (0.1, 0.5))])
        spec = ModelSpec(name="x", sweep={"alpha": [0.1, 0.5]}, sweep_choice="mean_over_seeds")
        got = p.sweep_mean_over_seeds(spec, None)
        assert p.sweep_mean_over_seeds(spec, None) is got  # chosen once per row
        return got

    got = choose({0: [.30, .31], 1: [.40, .35], 2: [.20, .21]})
    assert (got["sweep"], got["valid"], got["index"]) == ({"alpha": 0.1}, pytest.approx(.30), 0)
    assert [c[2] for c in got["candidates"][1]] == ["model-1-0.1", "model-1-0.5"]  # each seed's own stages
    assert choose({0: [.30, .31], 1: [.40, .40], 2: [.20, .21]})["sweep"] == {"alpha": 0.5}
    assert choose({0: [.30, .20], 1: [.20, .30]})["sweep"] == {"alpha": 0.1}


def test_a_teacher_scored_without_the_history_is_so_everywhere(tiny):
    """A teacher trained with `exclude_history`: its table row says so, its top-10 lists (coverage, the MostPop
    check) leave each row's history out as its own metrics do, and CC is against its top-1 among the items the
    row has not read (evaluation stages of their own; the training curves' valid CC too)."""
    from semrec.cf import CFTeacher
    from semrec.cf.evaluate import teacher_top_lists

    out = tiny / "run_excluded"
    recipe = load_recipe(tiny / "recipe.yaml", ["teacher.train.exclude_history=true"])
    recipe.models = [dataclasses.replace(recipe.models[1], sweep={}, train={"loss": "tca", "alpha": 0.5})]
    res = run_recipe(recipe, out, log=lambda m: None, progress=False)
    assert [r["name"] for r in res["rows"]] == ["MostPop", "Random", "SASRec, history excluded", "T+TCA"]
    run = RunDirectory(out)
    teacher = CFTeacher.from_pretrained(run.teacher_stage(0) / "teacher").eval()
    test = load_dataset(tiny / "data").test
    lists = teacher_top_lists(teacher, test, 10, exclude_history=True)
    assert not any(set(lists[r].tolist()) & set(test.history(r).tolist()) for r in range(len(test)))
    assert res["rows"][2]["coverage@10"] == pytest.approx(torch.unique(lists).numel() / 40)
    model = load_model(run.model_stage(run.rows[3]) / "model")
    want = evaluate(model, test, teacher=teacher, teacher_exclude_history=True)
    assert res["rows"][3]["cc"] == pytest.approx(want["cc"])
    curve = json.loads((run.model_stage(run.rows[3]) / "train.json").read_text())["history"]
    valid = load_dataset(tiny / "data").valid
    want_valid = evaluate(model, valid, teacher=teacher, teacher_exclude_history=True, max_rows=20)
    assert curve[-1]["valid_cc"] == pytest.approx(want_valid["cc"])
    keys = [json.loads(p.read_text())["config"] for p in (out / "stages").glob("eval-test-*/stage.json")]
    assert [k.get("cc") for k in keys] == ["history_excluded"]


def test_recipe_errors_are_one_line(tiny, capsys):
    bad = yaml.safe_load((tiny / "recipe.yaml").read_text())
    bad["trian"] = {}
    (tiny / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["run", str(tiny / "bad.yaml"), "--out", str(tiny / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("semrec: error:") and "unknown key 'trian'; did you mean 'train'?" in err
    assert "\n" not in err and not (tiny / "never").exists()

    with pytest.raises(SemrecError, match="unknown model 'tigger'"):
        load_recipe(tiny / "recipe.yaml", ["models=[{name: x, model: tigger}]"])
    with pytest.raises(SemrecError, match="cannot sweep 'alpah'"):
        load_recipe(tiny / "recipe.yaml", ["models=[{name: x, model: tiger, sweep: {alpah: [0.1]}}]"])
    with pytest.raises(SemrecError, match="train.epochs: expected an integer"):
        load_recipe(tiny / "recipe.yaml", ["train={epochs: many}"])
    for bad in ("[-1]", "[]", "[.nan]", "[0, .inf]"):
        with pytest.raises(SemrecError, match="eval.popularity_correction: expected a non-empty list of finite"):
            load_recipe(tiny / "recipe.yaml", [f"eval.popularity_correction={bad}"])
    with pytest.raises(SemrecError, match="eval.decode: .*'greedy'"):
        load_recipe(tiny / "recipe.yaml", ["eval.decode=greedy"])
    with pytest.raises(SemrecError, match="model 'x': examples 'all': expected one of auto, rows, prefixes"):
        load_recipe(tiny / "recipe.yaml", ["models=[{name: x, model: tiger, examples: all}]"])


def test_collaborative_ids_are_one_artifact_from_the_quantizer_seed_teacher(tiny):
    """A scheme that reads CF embeddings builds its IDs once, from the teacher trained with the quantizer's
    seed, whatever the run seeds: every generative-model seed then sees the same IDs."""
    scheme = yaml.safe_load((tiny / "scheme.yaml").read_text())
    scheme["embedding"] = {"content": "cf"}
    scheme["quantizer"]["seed"] = 0
    (tiny / "cf_scheme.yaml").write_text(yaml.safe_dump(scheme))
    recipe = load_recipe(tiny / "recipe.yaml", ["tokenizer=cf_scheme.yaml", "seeds=[1, 2]"])
    recipe.models = recipe.models[:1]
    out = tiny / "run_cf"
    res = run_recipe(recipe, out, log=lambda m: None, progress=False)
    assert [r["seed"] for r in res["rows"] if r["name"] == "T"] == [1, 2]
    stages = {p.parent.name: json.loads(p.read_text()) for p in (out / "stages").glob("*/stage.json")}
    ids = [s for s in stages.values() if s["stage"] == "ids"]
    teachers = {s["config"]["train"]["seed"]: s["key"] for s in stages.values() if s["stage"] == "teacher"}
    assert len(ids) == 1 and sorted(teachers) == [0, 1, 2]
    assert ids[0]["inputs"]["teacher"] == teachers[0]


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml")))
def test_every_committed_recipe_loads(path):
    """A typo in a committed recipe (option, model, dataset or scheme file) fails here, not hours into a run."""
    from semrec.data.builtin import BUILTIN_DATASETS
    from semrec.itemtok.schemes import load_scheme

    recipe = load_recipe(REPO / path)
    assert recipe.data in BUILTIN_DATASETS, recipe.data
    for tok in {recipe.tokenizer, *[m.tokenizer for m in recipe.models if m.tokenizer]}:
        load_scheme(recipe.resolve_path(tok))
