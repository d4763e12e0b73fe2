"""semrec.serving.Recommender and `semrec recommend` on a tiny real `semrec run` directory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from semrec.cli import main
from semrec.errors import SemrecError
from semrec.artifacts import read_json, write_json
from semrec.models import load_model
from semrec.pipeline.results import RunDirectory
from semrec.serving import Recommender, pick_row
from helpers.serving import build_tiny_run, tiny_titles

N_ITEMS = 40


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def rec(run_dir):
    return Recommender.from_run(run_dir, device="cpu")


def test_default_row_is_best_on_test_and_named_row_loads(run_dir, rec):
    rows = [r for r in read_json(run_dir / "results.json")["rows"] if r["tokenizer"] is not None]
    assert rec.name == max(rows, key=lambda r: r["ndcg@10"])["name"]
    other = Recommender.from_run(run_dir, model="TIGER", device="cpu")
    assert other.name == "TIGER"
    stage = next(r for r in rows if r["name"] == "TIGER")["model_stage"]
    direct = load_model(run_dir / "stages" / stage / "model")
    a, b = next(other.model.parameters()), next(direct.parameters())
    assert torch.equal(a.cpu(), b.cpu())
    with pytest.raises(SemrecError, match="no model row 'TIGER\\+TCX'.*did you mean 'TIGER\\+TCA'"):
        Recommender.from_run(run_dir, model="TIGER+TCX", device="cpu")


def test_recommendations_are_catalogue_items_sorted_and_batched(rec):
    titles = tiny_titles(N_ITEMS)
    hists = [[0, 1, 2], ["blue pen", 7], [39], [5, 6, 7, 8, 9, 10, 11]]
    out = rec.recommend(hists, top_k=5)
    assert len(out) == len(hists)
    for recs in out:
        assert len(recs) == 5
        ids = [r["item_id"] for r in recs]
        assert len(set(ids)) == 5 and all(0 <= i < N_ITEMS for i in ids)
        assert [r["title"] for r in recs] == [titles[i] for i in ids]
        assert [r["raw_id"] for r in recs] == [f"A{i:04d}" for i in ids]
        scores = [r["score"] for r in recs]
        assert all(np.isfinite(scores)) and all(s <= 0 for s in scores)
        assert scores == sorted(scores, reverse=True)
    # batching changes nothing: one history at a time gives the same lists
    for h, recs in zip(hists, out):
        single = rec.recommend([h], top_k=5)[0]
        assert [r["item_id"] for r in single] == [r["item_id"] for r in recs]
        np.testing.assert_allclose([r["score"] for r in single], [r["score"] for r in recs], atol=1e-5)


def test_scores_are_exact_log_probs_and_wide_beam_is_exhaustive(run_dir):
    """With beams >= catalogue size the search is exhaustive: the top-5 equals the naive ranking of
    log P(item | history) computed by teacher forcing every item."""
    from helpers.generative import score_items

    wide = Recommender.from_run(run_dir, device="cpu", num_beams=64)
    hists = [[3, 4, 5], [20, 22]]
    out = wide.recommend(hists, top_k=5)
    table = wide.example_table(hists)
    batch = wide.model.collate(table, torch.arange(len(hists)), with_targets=False)
    ref = score_items(wide.model, batch)  # (B, N)
    canon = wide.model.canonical_items().cpu()
    for b, recs in enumerate(out):
        uniq = torch.unique(canon)
        order = uniq[ref[b, uniq].argsort(descending=True)][:5]
        assert [r["item_id"] for r in recs] == order.tolist()
        np.testing.assert_allclose([r["score"] for r in recs], ref[b, order].numpy(), atol=1e-4)


def test_title_lookup_exact_fuzzy_ambiguous_unknown(rec):
    r = rec.resolver
    assert r.resolve("  blue   PEN ") == 0  # exact beats the longer 'Blue Pen Refill'
    assert r.resolve("Blue Pen Refill") == 1
    assert r.resolve("A0005") == 5 and r.resolve("7") == 7 and r.resolve(np.int64(9)) == 9
    assert r.resolve("deluxe stapler") == 2  # every word found in exactly one title
    assert r.resolve("Red Stapler Delux") == 2  # typo: difflib
    with pytest.raises(SemrecError, match=r"'pen' is ambiguous: .*0 \('Blue Pen'\).*1 \('Blue Pen Refill'\)"):
        r.resolve("pen")
    with pytest.raises(SemrecError, match="unknown item 'quantum flux capacitor'"):
        r.resolve("quantum flux capacitor")
    with pytest.raises(SemrecError, match="unknown item id 40: ids are 0..39"):
        r.resolve(40)
    with pytest.raises(SemrecError, match="unknown item id -1"):
        r.resolve(-1)


def test_whole_title_wins_over_longer_titles_and_real_ambiguity_stays():
    from semrec.serving import ItemResolver

    titles = ["Post-it Super Sticky Notes, 3 in x 3 in, Assorted",
              "Post-it Super Sticky Notes, 3 in x 3 in, Assorted, 12 Pads",
              "Post-it Super Sticky Notes, 3&quot; x 3&quot;, Canary Yellow",
              "Post-it Super Sticky Notes, 4 in x 6 in, Lined",
              "Stapler", "Stapler", "Pen, Blue", "Pen (Blue)"]
    r = ItemResolver([f"A{i}" for i in range(len(titles))], titles)
    assert r.resolve("Post-it Super Sticky Notes, 3 in x 3 in, Assorted") == 0  # exact, though item 1 contains it
    assert r.resolve("post-it super sticky notes 3 in x 3 in assorted") == 0  # same words, same order
    assert r.resolve('Post-it Super Sticky Notes, 3" x 3", Canary Yellow') == 2  # HTML entities in the catalogue
    with pytest.raises(SemrecError, match=r"'Post-it Super Sticky Notes' is ambiguous: 4 items match"):
        r.resolve("Post-it Super Sticky Notes")  # a partial title matching many: still an error
    with pytest.raises(SemrecError, match=r"'stapler' is ambiguous: 2 items share it"):
        r.resolve("stapler")  # two items with one title: real ambiguity
    with pytest.raises(SemrecError, match=r"'pen blue' is ambiguous: 2 items have these words in this order"):
        r.resolve("pen blue")


def test_bad_histories(rec):
    with pytest.raises(SemrecError, match="empty history"):
        rec.recommend([[]])
    with pytest.raises(SemrecError, match="history 1: unknown item id 99"):
        rec.recommend([[1], [99]])
    with pytest.raises(SemrecError, match="no history given"):
        rec.recommend([])
    with pytest.raises(SemrecError, match="top_k must be a positive integer"):
        rec.recommend([[1]], top_k=0)


def test_old_run_without_recorded_stage(run_dir, tmp_path):
    """Runs written before rows named their model stage: the stage is matched by its config."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    res = read_json(old / "results.json")
    for row in res["rows"]:
        row.pop("model_stage", None)
    write_json(old / "results.json", res)
    run = RunDirectory(old)
    for name in ("TIGER", "TIGER+TCA"):
        want = next(r for r in read_json(run_dir / "results.json")["rows"] if r["name"] == name)["model_stage"]
        assert run.model_stage(pick_row(run, name)).name == want


def test_cli_recommend_text_json_and_file(run_dir, tmp_path, capsys):
    assert main(["recommend", "--run", str(run_dir), "--history", "Blue Pen", "3", "--top-k", "3", "--json",
                 "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["history"] == ["Blue Pen", "3"] and len(out[0]["recommendations"]) == 3
    f = tmp_path / "h.txt"
    f.write_text("Blue Pen | 3\n\nred stapler deluxe | A0010 | 11\n")
    assert main(["recommend", "--run", str(run_dir), "--history-file", str(f), "--top-k", "2",
                 "--model", "TIGER", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "history: Blue Pen | 3  (model TIGER)" in text and "history: red stapler deluxe | A0010 | 11" in text
    assert text.count("  1. [") == 2 and text.count("  2. [") == 2 and "score -" in text


@pytest.mark.parametrize("args, message", [
    (["--history", "pen"], "'pen' is ambiguous"),
    (["--history", "quantum flux capacitor"], "unknown item 'quantum flux capacitor'"),
    (["--history", "1", "400"], "unknown item id 400"),
    (["--history", " "], "--history: empty item"),
    (["--history", "1", "--top-k", "0"], "--top-k must be >= 1"),
    (["--history-file", "FILE_EMPTY_ITEM"], "line 1: empty item"),
    (["--history-file", "FILE_BLANK"], "no histories"),
    (["--history-file", "MISSING"], "MISSING: no such file"),
    (["--history", "1", "--model", "Nope"], "no model row 'Nope'"),
    (["--history", "1", "--popularity-correction", "-1"], "--popularity-correction must be >= 0"),
])
def test_cli_recommend_errors_are_one_line_exit_2(run_dir, tmp_path, capsys, args, message):
    (tmp_path / "FILE_EMPTY_ITEM").write_text("1 |  | 2\n")
    (tmp_path / "FILE_BLANK").write_text("\n  \n")
    args = [str(tmp_path / a) if a.startswith(("FILE_", "MISSING")) else a for a in args]
    assert main(["recommend", "--run", str(run_dir), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("semrec: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_recommend_missing_run(tmp_path, capsys):
    assert main(["recommend", "--run", str(tmp_path / "nope"), "--history", "1"]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1


def test_popularity_correction_equals_the_biased_beam_search(run_dir, rec, capsys):
    from semrec.decoding import beam_search, popularity_bias
    from semrec.pipeline.run import train_popularity

    hists = [[3, 4, 5], [20, 22], [0]]
    assert Recommender.from_run(run_dir, device="cpu", popularity_correction=0.0).edge_bias is None
    fixed = Recommender.from_run(run_dir, device="cpu", popularity_correction=0.8)
    out = fixed.recommend(hists, top_k=5)
    table = fixed.example_table(hists)
    batch = fixed.model.collate(table, torch.arange(len(hists)), with_targets=False)
    bias = popularity_bias(fixed.model.prefix_index(), train_popularity(fixed.dataset), 0.8)
    info = fixed.model.training_info or {}
    ref = beam_search(fixed.model, batch, num_beams=5, renormalize=bool(info.get("msl", False)),
                      temperature=float(info.get("tau") or 1.0), edge_bias=bias)
    assert [[r["item_id"] for r in recs] for recs in out] == ref.items.tolist()
    np.testing.assert_allclose([[r["score"] for r in recs] for recs in out], ref.scores.numpy(), atol=1e-5)
    assert [[r["item_id"] for r in recs] for recs in out] != [[r["item_id"] for r in x] for x in
                                                              rec.recommend(hists, top_k=5)]
    with pytest.raises(SemrecError, match="popularity_correction must be >= 0"):
        Recommender(rec.model, rec.dataset, popularity_correction=-0.1)
    capsys.readouterr()
    assert main(["recommend", "--run", str(run_dir), "--device", "cpu", "--history", "3", "4", "--json",
                 "--popularity-correction", "0.8", "--model", fixed.name, "--top-k", "5"]) == 0
    got = json.loads(capsys.readouterr().out)[0]["recommendations"]
    assert [r["item_id"] for r in got] == [r["item_id"] for r in fixed.recommend([[3, 4]], top_k=5)[0]]
