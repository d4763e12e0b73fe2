"""benchmarks/tokenizers_downstream.py on small synthetic results: the (dataset, scheme) join, mean ± std over
seeds, MostPop, the winner's margin, Spearman's rho against a naive reference, and bad input."""

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import tokenizers_downstream as td  # noqa: E402  (a script of benchmarks/, not a package)

SCHEMES = ("rqkmeans", "rqkmeans_balanced", "pq", "rqvae", "letter")


def _intrinsic_row(ds: str, name: str, i: int) -> dict:
    return {"dataset": ds, "name": name, "collision_rate_before": 0.1 * i, "codes_used": [256, 200 + i, 100],
            "usage": [{"codes_used": 256, "codebook_size": 256}, {"codes_used": 200 + i, "codebook_size": 256},
                      {"codes_used": 100, "codebook_size": 256}],
            "perplexity": [200.0, 100.0 + i, 50.0], "recon_rel_mse": 0.5 - 0.01 * i, "cf_agree1": 0.05 + 0.01 * i,
            "cf_lift1": 10.0 + i}


def _intrinsic() -> dict:
    rows = [_intrinsic_row(ds, s, i) for ds in ("office-t", "toys-t") for i, s in enumerate(SCHEMES)]
    rows.append(_intrinsic_row("office-t", "opq", 9))  # fitted, never trained: left out of the join
    return {"seed": 0, "rows": rows}


def _row(name: str, tokenizer: str | None, loss: str, seed: int, ndcg: float, **kw) -> dict:
    return {"name": name, "model": kw.pop("model", "tiger"), "tokenizer": tokenizer, "loss": loss, "seed": seed,
            "split": kw.pop("split", "test"), "ndcg@10": ndcg, "hr@10": 2 * ndcg, **kw}


def _result(ds: str, base: float, seeds: tuple[int, ...], *, mostpop: bool = True, decoder: bool = False) -> dict:
    """NTP rows with NDCG@10 = base * (1 + scheme index / 10) + seed / 1000, plus rows the join must skip;
    `decoder`: decoder rows on every scheme but letter, ranked in the reverse order."""
    rows = []
    for seed in seeds:
        if mostpop:
            rows.append(_row("MostPop", None, "none", seed, 0.001, model="mostpop"))
        rows.append(_row("SASRec", None, "ce", seed, 0.05, model="sasrec"))
        for i, s in enumerate(SCHEMES):
            v = base * (1 + i / 10) + seed / 1000
            rows.append(_row(f"TIGER ({s})", s, "ntp", seed, v, **{"coverage@10": 0.1}))
            if s == "pq":  # TCA beside NTP on one scheme, not a downstream NTP figure
                rows.append(_row(f"TIGER+TCA ({s})", s, "tca", seed, v + 0.002 + 0.0005 * seed, **{"coverage@10": 0.3}))
            rows.append(_row(f"TIGER ({s})", s, "ntp", seed, 2.0, split="valid"))
            if decoder and s != "letter":
                rows.append(_row(f"Decoder ({s})", s, "ntp", seed, base * (2 - i / 10), model="decoder"))
        rows.append(_row("TIGER (rqkmeans_text_cf)", "rqkmeans_text_cf", "ntp", seed, 3.0))  # no intrinsic row
    return {"recipe": f"{ds}_r", "dataset": ds, "seeds": list(seeds), "commit": "abc", "machine": "CPU", "rows": rows}


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    (tmp_path / "tokenizers_compare.json").write_text(json.dumps(_intrinsic()))
    (tmp_path / "office_r.json").write_text(json.dumps(_result("office-t", 0.02, (0, 1, 2))))
    (tmp_path / "toys_r.json").write_text(json.dumps(_result("toys-t", 0.004, (0,))))
    return tmp_path


def test_join_takes_each_schemes_ntp_test_rows_of_its_own_dataset():
    rows = td.join(_intrinsic(), _result("office-t", 0.02, (0, 1, 2)), "office_r.json")
    assert [r["scheme"] for r in rows] == list(SCHEMES)  # opq (not trained) and rqkmeans_text_cf (no IDs) left out
    pq = rows[2]
    per_seed = [0.02 * 1.2 + s / 1000 for s in (0, 1, 2)]
    assert pq["ndcg@10"]["mean"] == pytest.approx(statistics.fmean(per_seed))
    assert pq["ndcg@10"]["std"] == pytest.approx(statistics.stdev(per_seed))
    assert pq["hr@10"]["mean"] == pytest.approx(2 * statistics.fmean(per_seed)) and pq["ndcg@10"]["n"] == 3
    assert pq["figures"]["collision_rate_before"] == pytest.approx(0.2)  # office-t's pq row, not toys-t's
    assert pq["figures"]["code_usage"] == pytest.approx((1 + 202 / 256 + 100 / 256) / 3)
    assert pq["ndcg@10_rel"] == pytest.approx(pq["ndcg@10"]["mean"] / rows[0]["ndcg@10"]["mean"])
    one = td.join(_intrinsic(), _result("toys-t", 0.004, (0,)), "toys_r.json")
    assert one[0]["ndcg@10"]["std"] is None and one[0]["ndcg@10_rel"] == 1.0
    msl = _result("office-t", 0.02, (0, 1, 2))  # MSL rows ("ntp+msl", "tca+msl") are NTP and TCA rows
    for r in msl["rows"]:
        r["loss"] = {"ntp": "ntp+msl", "tca": "tca+msl"}.get(r["loss"], r["loss"])
    assert td.join(_intrinsic(), msl, "msl.json") == rows


def test_tca_rows_sit_beside_their_scheme_judged_by_the_tca_gain_bar():
    rows = td.join(_intrinsic(), _result("office-t", 0.02, (0, 1, 2)), "office_r.json")
    pq = rows[2]
    assert [r["tca"] is None for r in rows] == [True, True, False, True, True]
    nd = pq["tca"]["ndcg@10"]
    assert nd["base_mean"] == pytest.approx(pq["ndcg@10"]["mean"]) and nd["tca_mean"] == pytest.approx(
        pq["ndcg@10"]["mean"] + 0.0025)
    assert nd["seed_gains"] == pytest.approx([0.002, 0.0025, 0.003]) and nd["tca_std"] == pytest.approx(0.0015)
    assert pq["tca"]["gain_exceeds_std"] is True  # .0025 > max(.001, .0015)
    assert pq["tca"]["coverage@10"]["tca_mean"] == pytest.approx(0.3) and pq["tca"]["seeds"] == [0, 1, 2]
    line = td.tca_line("office-t", rows)
    assert line.startswith("office-t, TCA: pq ") and "gain +0.0025 (per seed +0.0020, +0.0025, +0.0030; above" in line
    assert td.tca_line("office-t", [{**r, "tca": None} for r in rows]) is None
    one = td.join(_intrinsic(), _result("toys-t", 0.004, (0,)), "toys_r.json")
    assert "one seed: not judged against the larger seed std" in td.tca_line("toys-t", one)


def test_model_selects_a_family_and_the_other_families_ranking_agreement_is_reported():
    plain = td.join(_intrinsic(), _result("office-t", 0.02, (0, 1, 2)), "office_r.json")
    both = _result("office-t", 0.02, (0, 1, 2), decoder=True)
    assert td.join(_intrinsic(), both, "office_r.json") == plain  # decoder rows do not enter TIGER's figures
    dec = td.join(_intrinsic(), both, "office_r.json", "decoder")
    assert [r["scheme"] for r in dec] == ["rqkmeans", "rqkmeans_balanced", "pq", "rqvae"]
    assert [r["model"] for r in dec] == ["Decoder (rqkmeans)", "Decoder (rqkmeans_balanced)", "Decoder (pq)",
                                         "Decoder (rqvae)"]
    assert dec[1]["ndcg@10"]["mean"] == pytest.approx(0.02 * 1.9) and dec[1]["ndcg@10"]["std"] == 0.0
    assert all(r["tca"] is None for r in dec)  # the TCA rows' baseline is TIGER (pq), not the decoder
    (a,) = td.agreement({"office_r": both}, dec, "decoder")  # against TIGER on the 4 common schemes
    assert a["model"] == "tiger" and a["schemes"] == ["rqkmeans", "rqkmeans_balanced", "pq", "rqvae"]
    assert a["rho"] == pytest.approx(-1.0) and not a["same_winner"] and a["winner"] == "rqvae"
    line = td.agreement_line("office-t", "decoder", [a])
    assert "TIGER (`office_r.json`) Spearman rho -1.00 over 4 schemes" in line and "a different winner (rqvae)" in line
    assert td.agreement({"office_r": both}, plain, "tiger")[0]["rho"] == pytest.approx(-1.0)
    assert td.agreement({"office_r": _result("office-t", 0.02, (0,))}, plain, "tiger") == []


def test_a_model_family_without_rows_is_one_line_and_exit_code_2(results_dir: Path, capsys):
    assert td.main(["--dir", str(results_dir), "--result", "office_r", "--model", "decoder"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NTP test rows of model 'decoder'" in err
    assert not (results_dir / "tokenizers_downstream.md").exists()


def test_main_with_model_decoder_names_the_family_and_keeps_the_flag(results_dir: Path):
    (results_dir / "office_d.json").write_text(json.dumps(_result("office-t", 0.02, (0, 1, 2), decoder=True)))
    assert td.main(["--dir", str(results_dir), "--result", "office_d", "--model", "decoder", "--out-name", "dec"]) == 0
    md = (results_dir / "dec.md").read_text()
    assert md.startswith("# Semantic-ID schemes: intrinsic figures and downstream decoder-only accuracy")
    assert "**rqkmeans** wins" in md and "--model decoder --out-name dec`" in md
    assert "ranking agreement with decoder-only): TIGER (`office_d.json`) Spearman rho -1.00" in md
    assert json.loads((results_dir / "dec.json").read_text())["model"] == "decoder"


def test_each_family_may_come_from_its_own_result_on_a_dataset(results_dir: Path):
    split = _result("office-t", 0.02, (0, 1, 2), decoder=True)
    split["rows"] = [r for r in split["rows"] if r["model"] == "decoder"]  # a decoder-only recipe result
    (results_dir / "office_dec.json").write_text(json.dumps(split))
    argv = ["--dir", str(results_dir), "--result", "office_r", "--result", "office_dec", "--result", "toys_r"]
    assert td.main([*argv, "--model", "decoder", "--out-name", "dec"]) == 2  # toys_r holds no decoder rows
    assert td.main([*argv[:-2], "--model", "decoder", "--out-name", "dec"]) == 0
    dec = json.loads((results_dir / "dec.json").read_text())["datasets"]["office-t"]
    assert dec["source"] == "office_dec" and dec["winner"]["scheme"] == "rqkmeans"
    assert [(a["model"], a["source"]) for a in dec["agreement"]] == [("tiger", "office_r")]
    assert td.main([*argv, "--out-name", "tig"]) == 0  # the TIGER report: its rows from office_r, agreement too
    tig = json.loads((results_dir / "tig.json").read_text())["datasets"]
    assert tig["office-t"]["source"] == "office_r" and tig["office-t"]["agreement"][0]["rho"] == pytest.approx(-1.0)
    assert "Downstream: `office_r.json`" in (results_dir / "tig.md").read_text()


def test_two_tca_models_on_one_scheme_are_refused():
    res = _result("office-t", 0.02, (0,))
    twin = next(r for r in res["rows"] if r["loss"] == "tca")
    res["rows"].append({**twin, "name": "TIGER+TCA (pq) alpha .5"})
    with pytest.raises(td.SemrecError, match="scheme pq has two TCA models"):
        td.join(_intrinsic(), res, "office_r.json")


def test_winner_margin_is_judged_against_seed_std_only_with_several_seeds():
    w = td.winner(td.join(_intrinsic(), _result("office-t", 0.02, (0, 1, 2)), "office_r.json"))
    assert (w["scheme"], w["runner_up"]) == ("letter", "rqvae")
    assert w["gain"] == pytest.approx(0.002) and w["gain_exceeds_std"] is True  # std of both: 0.001
    one = td.winner(td.join(_intrinsic(), _result("toys-t", 0.004, (0,)), "toys_r.json"))
    assert one["gain_exceeds_std"] is None and "one seed" in td.winner_line("toys-t", one)


def _naive_ranks(x: list[float]) -> list[float]:
    return [sum(v < a for v in x) + (sum(v == a for v in x) + 1) / 2 for a in x]


def _naive_spearman(x: list[float], y: list[float]) -> float:
    rx, ry = _naive_ranks(x), _naive_ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def test_spearman_uses_average_ranks_for_ties():
    assert td.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert td.spearman(np.array([1, 2, 3, 4, 5.0]), np.array([5, 6, 7, 8, 7.0])) == pytest.approx(
        _naive_spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]))
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 9).astype(float), rng.integers(0, 4, 9).astype(float)  # many ties
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert td.spearman(x, y) == pytest.approx(_naive_spearman(list(x), list(y)))
    assert np.isnan(td.spearman(np.ones(5), np.arange(5.0)))  # a constant side has no ranking


def test_permutation_p_and_the_exact_bar_for_five_points():
    x = np.arange(5.0)
    assert td.permutation_p(x, x, np.zeros(5)) == pytest.approx(2 / 120, abs=0.005)  # exact: 2 of 5! orderings
    assert td.critical_rho(5) == 1.0 and td.critical_rho(6) == pytest.approx(0.8857, abs=1e-4)
    assert td.critical_rho(4) is None  # 2/4! > 0.05: no ordering of 4 points is significant
    # two datasets each perfectly ordered: permuting within datasets rarely matches it
    groups = np.array(["a"] * 5 + ["b"] * 5)
    assert td.permutation_p(np.r_[x, x + 10], np.r_[x, x], groups) < 0.01


def test_main_writes_one_table_per_dataset_with_mostpop_and_the_finding(results_dir: Path, capsys):
    argv = ["--dir", str(results_dir), "--result", "office_r", "--result", "toys_r", "--out-name", "out"]
    assert td.main(argv) == 0
    md = (results_dir / "out.md").read_text()
    assert md.count("| MostPop (") == 2 and "## office-t" in md and "## toys-t" in md
    assert "**letter** wins" in md and "one seed per scheme" in md
    assert "needs |rho| >= 1.0 (a perfect ordering)" in md and "office-t, TCA: pq" in md
    assert "--out-name out`" in md
    report = json.loads((results_dir / "out.json").read_text())
    cf = next(c for c in report["correlations"] if c["figure"] == "cf_agree1")
    assert cf["per_dataset"]["office-t"]["rho"] == pytest.approx(1.0) and cf["pooled"]["n"] == 10
    assert (results_dir / "out.png").stat().st_size > 0 and str(results_dir) not in md


def test_a_missing_result_is_one_line_and_exit_code_2(results_dir: Path, capsys):
    assert td.main(["--dir", str(results_dir), "--result", "office_r", "--result", "sports_r"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sports_r.json not found" in err and "Traceback" not in err
    assert not (results_dir / "tokenizers_downstream.md").exists()


def test_two_results_on_one_dataset_are_refused(results_dir: Path, capsys):
    (results_dir / "office_b.json").write_text(json.dumps(_result("office-t", 0.03, (0,))))
    assert td.main(["--dir", str(results_dir), "--result", "office_r", "--result", "office_b"]) == 2
    assert "both hold tiger rows on office-t" in capsys.readouterr().err
