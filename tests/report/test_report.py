"""semrec.report / `semrec report` on a tiny real two-seed `semrec run` directory."""

from __future__ import annotations

import base64
import re
import shutil

import numpy as np
import pytest
from helpers.serving import build_tiny_run

from semrec.cli import main
from semrec.artifacts import read_json
from semrec.itemtok.artifact import ItemTokenization
from semrec.pipeline.results import RunDirectory
from semrec.report import alpha_sweep, build_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("report"), seeds=(0, 1), alphas=(0.1, 0.5))


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "out"
    paths = build_report([run_dir], out)
    return out, paths, (out / "report.md").read_text(), (out / "report.html").read_text()


def _table_row(md: str, first_cell: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_results_table_mean_std_over_seeds(run_dir, report):
    _, _, md, _ = report
    rows = read_json(run_dir / "results.json")["rows"]
    header = _table_row(md, "model")
    assert header == ["model", "seeds", "hr@1", "hr@3", "hr@5", "hr@10", "ndcg@3", "ndcg@5", "ndcg@10", "cc",
                      "coverage@10", "distinct_top1", "pop1%@10"]
    for name in ("MostPop", "Random", "SASRec", "TIGER", "TIGER+TCA"):
        cells = dict(zip(header, _table_row(md, name)))
        assert cells["seeds"] == "2"
        vals = [r["ndcg@10"] for r in rows if r["name"] == name]
        assert len(vals) == 2
        assert cells["ndcg@10"] == f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}"
    assert dict(zip(header, _table_row(md, "SASRec")))["cc"] == "-"  # teachers have no CC
    assert dict(zip(header, _table_row(md, "MostPop")))["distinct_top1"] == "1 ± 0"  # one list for everyone


def test_alpha_sweep_table_and_plot(run_dir, report):
    out, _, md, _ = report
    rows = read_json(run_dir / "results.json")["rows"]
    section = md.split("## Alpha sweep")[1].split("## Training curves")[0]
    for r in rows:
        if r["name"] != "TIGER+TCA":
            continue
        assert (f"| tiny | TIGER+TCA | test | {r['alpha']:g} | {r['seed']} | {r['ndcg@10']:.4f} | "
                f"{r['cc']:.4f} |") in section
        assert {e["alpha"] for e in r["sweep_valid"]} == {0.1, 0.5}
        for e in r["sweep_valid"]:
            assert (f"| tiny | TIGER+TCA | valid (selection metric) | {e['alpha']:g} | {r['seed']} | "
                    f"{e['valid']:.4f} | - |") in section
    for r in rows:  # alpha 0 of the sweep is the NTP twin
        if r["name"] == "TIGER":
            assert (f"| tiny | TIGER | test | 0 | {r['seed']} | {r['ndcg@10']:.4f} | {r['cc']:.4f} |") in section
    sweep = alpha_sweep([RunDirectory(run_dir)])
    zero = [e for e in sweep["test"] if e["alpha"] == 0.0]
    assert zero and all(e["name"] == "TIGER+TCA" and e["ntp_twin"] == "TIGER" for e in zero)
    assert "![alpha sweep](alpha_sweep.png)" in section
    assert (out / "alpha_sweep.png").read_bytes()[:8] == PNG


def test_training_curves_from_every_stage(run_dir, report):
    out, _, md, _ = report
    section = md.split("## Training curves")[1].split("## Code usage")[0]
    stages = sorted((run_dir / "stages").glob("model-*"))
    assert len(stages) == 2 * 3  # 2 seeds x (TIGER + TCA at two alphas)
    for st in stages:
        info = read_json(st / "train.json")
        cells = _table_row(section, info["label"])
        assert cells[1] == str(len(info["history"])) == "2"
        assert cells[2] == f"{info['history'][-1]['train_loss']:.4f}"
        best = max(h[f"valid_{info['monitor']}"] for h in info["history"])
        assert cells[3] == f"{best:.4f} ({info['monitor']})"
    assert section.count("| teacher sasrec (teacher-") == 2
    img = out / f"curves_{run_dir.name}.png"
    assert img.read_bytes()[:8] == PNG


def test_code_usage_counts_match_the_codes(run_dir, report):
    out, _, md, _ = report
    (ids,) = sorted((run_dir / "stages").glob("ids-*"))
    tok = ItemTokenization.from_pretrained(ids / "tokenization", load_quantizer=False)
    codes = tok.codes.numpy()
    section = md.split("## Code usage per level")[1]
    assert f"{codes.shape[0]} items" in section
    for lv in range(tok.num_levels):
        raw = codes[:, lv] - tok.level_offsets[lv]
        _, counts = np.unique(raw, return_counts=True)
        p = counts / counts.sum()
        cells = _table_row(section, str(lv))
        assert cells[1] == str(len(counts))
        assert cells[3] == f"{np.exp(-(p * np.log(p)).sum()):.1f}"
        assert cells[4] == f"{p.max():.4f}"
    assert (out / f"usage_{ids.name}.png").read_bytes()[:8] == PNG


def test_html_is_self_contained(report):
    out, paths, md, html = report
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(imgs) == len(paths["images"]) == md.count("![") == 3
    assert base64.b64decode(imgs[0]) == (out / "alpha_sweep.png").read_bytes()
    assert "<table>" in html and "TIGER+TCA" in html and "±" in html
    assert not re.search(r'src="(?!data:)', html)


def test_cli_report_several_runs(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    out = tmp_path / "rep"
    assert main(["report", str(run_dir), str(copy), "--out", str(out)]) == 0
    assert "report written to" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert _table_row(md, "TIGER")[1] == "4"  # rows of both runs pooled
    assert (out / "curves_copy.png").is_file() and (out / f"curves_{run_dir.name}.png").is_file()


@pytest.mark.parametrize("setup, message", [
    ("missing", "no such run directory"),
    ("bad_json", "results.json"),
    ("no_rows", "not a `semrec run` results file"),
])
def test_cli_report_errors_are_one_line_exit_2(tmp_path, capsys, setup, message):
    run = tmp_path / "run"
    if setup != "missing":
        run.mkdir()
        (run / "results.json").write_text("{broken" if setup == "bad_json" else '{"recipe": "x"}')
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("semrec: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "report.md").exists()
