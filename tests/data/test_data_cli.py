"""`semrec data ...`: working commands, and every bad input as one line, exit code 2, nothing half-written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from semrec.cli import main

REPO = Path(__file__).resolve().parents[2]
FIX = Path(__file__).resolve().parents[1] / "fixtures"
LOG = "user_id,item_id,timestamp\n" + "".join(f"u{u},i{(u + k) % 4},{100 * k + u}\n"
                                              for u in range(4) for k in range(4))
ITEMS = "item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(4))


def run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_prepare_stats_overwrite(tmp_path, capsys):
    out = tmp_path / "toys"
    rc, text, _ = run(capsys, ["data", "prepare", "office-t", "--out", str(out)])
    assert rc == 0 and "saved to" in text and (out / "meta.json").is_file()
    rc, by_dir, _ = run(capsys, ["data", "stats", str(out), "--json"])
    rc2, by_name, _ = run(capsys, ["data", "stats", "office-t", "--json"])
    assert rc == rc2 == 0 and json.loads(by_dir) == json.loads(by_name)
    assert json.loads(by_dir)["splits"]["test"]["examples"] == 5000
    rc, _, err = run(capsys, ["data", "prepare", "office-t", "--out", str(out)])
    assert rc == 2 and "already exists" in err
    rc, _, _ = run(capsys, ["data", "prepare", "office-t", "--out", str(out), "--overwrite", "--name", "renamed"])
    assert rc == 0 and json.loads((out / "meta.json").read_text())["name"] == "renamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toys"]


def test_import_with_flags_and_config(tmp_path, capsys):
    (tmp_path / "log.tsv").write_text(LOG.replace(",", "\t").replace("user_id", "who"))
    (tmp_path / "items.csv").write_text(ITEMS)
    (tmp_path / "cfg.yaml").write_text("split: time\nratios: [0.5, 0.25, 0.25]\nuser_col: nobody\n")
    rc, text, err = run(capsys, ["data", "import", "--interactions", str(tmp_path / "log.tsv"), "--items",
                                 str(tmp_path / "items.csv"), "--out", str(tmp_path / "ds"),
                                 "--config", str(tmp_path / "cfg.yaml"), "--user-col", "who"])
    assert rc == 0, err
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["info"]["split"]["scheme"] == "time" and meta["info"]["config"]["user_col"] == "who"
    assert meta["num_interactions"] == 16 and sum(meta["split_sizes"].values()) == 12


def test_amazon_command(tmp_path, capsys):
    rc, text, err = run(capsys, ["data", "amazon", "--reviews", str(FIX / "amazon2018" / "Toys_5.json.gz"),
                                 "--meta", str(FIX / "amazon2018" / "meta_Toys.json.gz"), "--year", "2018",
                                 "--out", str(tmp_path / "a"), "--min-rating", "3"])
    assert rc == 0, err
    assert "rating_below_min=1" in text and "duplicate_interactions=1" in text


def test_help_for_every_action(capsys):
    for action, needle in (("prepare", "toys-t"), ("import", "--drop-unknown-items"), ("amazon", "--year"),
                           ("stats", "--json")):
        with pytest.raises(SystemExit) as e:
            main(["data", action, "--help"])
        assert e.value.code == 0 and needle in capsys.readouterr().out


def _write(tmp_path, name, text):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


BAD = {
    "misnamed column": (LOG.replace("user_id", "userid"), ITEMS, [],
                        "log.csv: no column 'user_id'; did you mean 'userid'?"),
    "flag names a missing column": (LOG, ITEMS, ["--time-col", "ts"], "no column 'ts'"),
    "items without title column": (LOG, ITEMS.replace("title", "name"), [], "items.csv: no column 'title'"),
    "ragged row": (LOG.replace("u0,i1,100", "u0,i1,100,extra"), ITEMS, [], "log.csv: line 3: expected 3 fields, saw 4"),
    "bad timestamp": (LOG.replace("u1,i1,1\n", "u1,i1,yesterday\n"), ITEMS, [],
                      "log.csv: line 6: cannot read timestamp 'yesterday'"),
    "empty id": (LOG.replace("u2,i2,2\n", ",i2,2\n"), ITEMS, [], "log.csv: line 10: empty value in column 'user_id'"),
    "unknown item": (LOG, ITEMS.replace("i3,Item 3\n", ""), [],
                     "item id(s) (4 interactions) are not in"),
    "duplicate item ids": (LOG, ITEMS + "i2,Again\n", [], "items.csv: duplicate item id 'i2' (line 4 and line 6"),
    "empty interactions": ("", ITEMS, [], "log.csv: empty file"),
    "header only": ("user_id,item_id,timestamp\n", ITEMS, [], "log.csv: no rows"),
    "empty items": (LOG, b"", [], "items.csv: empty file"),
    "kcore empties": (LOG, ITEMS, ["--kcore", "5"], "no interactions left after k-core filtering"),
    "bad rating": (LOG.replace("timestamp", "timestamp,rating").replace("\n", ",4\n").replace("rating,4", "rating")
                   .replace("u3,i2,303,4", "u3,i2,303,five"), ITEMS, ["--min-rating", "4"],
                   "rating 'five' in column 'rating' is not a number"),
    "bad ratios": (LOG, ITEMS, ["--split", "time", "--ratios", "0.5,0.5"], "ratios must be three"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_import_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    log, items, flags, needle = BAD[case]
    out = tmp_path / "out"
    argv = ["data", "import", "--interactions", _write(tmp_path, "log.csv", log),
            "--items", _write(tmp_path, "items.csv", items), "--out", str(out), *flags]
    rc, _, err = run(capsys, argv)
    assert rc == 2
    assert err.startswith("semrec: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_other_bad_inputs(tmp_path, capsys):
    bad_jsonl = _write(tmp_path, "items.jsonl", '{"item_id": "i0", "title": "a"}\n{"item_id": "i1", title}\n')
    rc, _, err = run(capsys, ["data", "import", "--interactions", _write(tmp_path, "log.csv", LOG),
                              "--items", bad_jsonl, "--out", str(tmp_path / "o")])
    assert rc == 2 and "items.jsonl: line 2: not valid JSON" in err and err.count("\n") == 1
    # --drop-unknown-items reports what it dropped
    rc, text, err = run(capsys, ["data", "import", "--interactions", str(tmp_path / "log.csv"), "--items",
                                 _write(tmp_path, "items.csv", ITEMS.replace("i3,Item 3\n", "")),
                                 "--out", str(tmp_path / "o2"), "--drop-unknown-items"])
    assert rc == 0 and "unknown_item_interactions=4" in text
    # a broken line in a raw dump names the file and line
    lines = (FIX / "amazon2014").joinpath("reviews_Toys_5.json.gz")
    import gzip
    with gzip.open(lines, "rt") as f:
        good = f.read().splitlines()
    with gzip.open(tmp_path / "reviews_B.json.gz", "wt") as f:
        f.write("\n".join([good[0], "{not json", *good[1:]]) + "\n")
    rc, _, err = run(capsys, ["data", "amazon", "--reviews", str(tmp_path / "reviews_B.json.gz"), "--meta",
                              str(FIX / "amazon2014" / "meta_Toys.json.gz"), "--year", "2014",
                              "--out", str(tmp_path / "o3")])
    assert rc == 2 and "reviews_B.json.gz: line 2: not valid JSON" in err and err.count("\n") == 1
    rc, _, err = run(capsys, ["data", "prepare", "toys", "--out", str(tmp_path / "o4")])
    assert rc == 2 and "unknown builtin dataset 'toys'" in err
    rc, _, err = run(capsys, ["data", "stats", str(tmp_path / "missing")])
    assert rc == 2 and "unknown dataset" in err
    assert not any((tmp_path / o).exists() for o in ("o", "o3", "o4"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_console_entry_point_subprocess(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "semrec", "data", "stats", "toys-p", "--json"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["interactions"] == 167597
    bad = subprocess.run([sys.executable, "-m", "semrec", "data", "prepare", "nope", "--out", "x"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert not (tmp_path / "x").exists()
