"""RecBole atomic files: import (plain log, plain and row benchmark splits), export round trip, separators.

The fixture `tests/fixtures/recbole/ml-mini` is written in RecBole's exact MovieLens-100K format
(tab-separated, `field:type` headers); `make_recbole_fixtures.py` regenerates it."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semrec.cli import main
from semrec.data import load_dataset
from semrec.data.dataset import SPLITS
from semrec.data.recbole import RecBoleConfig, export_recbole, load_recbole
from semrec.errors import SemrecError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "recbole" / "ml-mini"


def raw_log() -> pd.DataFrame:
    """The fixture's .inter file read naively (no semrec code)."""
    lines = (FIXTURE / "ml-mini.inter").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    return pd.DataFrame({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                         "rating": [float(r[2]) for r in rows], "t": [int(r[3]) for r in rows],
                         "line": range(len(rows))})


def naive_sequences() -> dict[str, list[str]]:
    df = raw_log().sort_values(["t", "line"], kind="stable")
    seqs: dict[str, list[str]] = {}
    for u, i in zip(df["user"], df["item"]):
        seqs.setdefault(u, []).append(i)
    return seqs


def raw_examples(ds, split):
    ex, items, users = ds.splits[split], ds.items["raw_id"].tolist(), ds.users["raw_id"].tolist()
    return [(users[ex.users[e]], [items[i] for i in ex.history(e)], items[ex.targets[e]], int(ex.timestamps[e]))
            for e in range(len(ex))]


def same_dataset(a, b):
    for s in SPLITS:
        for f in ("users", "targets", "hist_items", "hist_offsets", "timestamps"):
            assert np.array_equal(getattr(a.splits[s], f), getattr(b.splits[s], f)), (s, f)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)


def test_import_movielens_atomic_files():
    ds = load_recbole(FIXTURE / "ml-mini")
    seqs = naive_sequences()
    assert ds.num_users == len(seqs) == 60 and ds.num_items == 48 and len(ds.interactions) == len(raw_log())
    # leave-one-out on the time-ordered log, with raw ids kept
    for (u, hist, target, _) in raw_examples(ds, "test"):
        assert hist + [target] == seqs[u]
    for (u, hist, target, _) in raw_examples(ds, "valid"):
        assert hist + [target] == seqs[u][:-1]
    # header types: movie_title (token_seq) is the title, the other item and user fields are kept as text
    items = ds.items.set_index("raw_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "class"] == "Animation Children's Comedy"
    assert items.loc["1", "release_year"] == "1995"
    assert set(ds.users.columns) == {"raw_id", "age", "gender", "occupation", "zip_code"}
    assert sorted(ds.interactions["rating"].unique().tolist()) == sorted(raw_log()["rating"].unique().tolist())
    assert ds.info["recbole"]["item"]["fields"]["class"] == "token_seq"
    # RecBole's own layout names the folder: dataset/ml-mini/ml-mini.inter
    same_dataset(ds, load_recbole(FIXTURE))


def test_export_import_round_trip(tmp_path):
    ds = load_recbole(FIXTURE / "ml-mini")
    export_recbole(ds, tmp_path / "out" / "ml-mini")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["ml-mini.inter", "ml-mini.item", "ml-mini.test.inter", "ml-mini.train.inter",
                     "ml-mini.user", "ml-mini.valid.inter"]
    header = (tmp_path / "out" / "ml-mini.item").read_text().splitlines()[0]
    assert header == "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
    back = load_recbole(tmp_path / "out" / "ml-mini")
    same_dataset(ds, back)
    pd.testing.assert_frame_equal(ds.interactions, back.interactions)  # split labels included
    # and through the CLI, with the saved dataset in between
    assert main(["data", "import", "--recbole", str(FIXTURE / "ml-mini"), "--out", str(tmp_path / "d")]) == 0
    assert main(["data", "export", "--data", str(tmp_path / "d"), "--recbole", str(tmp_path / "e" / "ml")]) == 0
    assert main(["data", "import", "--recbole", str(tmp_path / "e" / "ml"), "--out", str(tmp_path / "d2")]) == 0
    same_dataset(load_dataset(tmp_path / "d"), load_dataset(tmp_path / "d2"))


def test_row_dataset_round_trip_without_log(tmp_path):
    from semrec.data import load_builtin

    ds = load_builtin("office-t")
    ds.splits = {s: ds.splits[s].subset(np.arange(50)) for s in SPLITS}
    export_recbole(ds, tmp_path / "o" / "office")
    assert not (tmp_path / "o" / "office.inter").exists()  # protocol T has no full log
    back = load_recbole(tmp_path / "o" / "office")
    assert back.protocol == "T" and back.interactions is None
    for s in SPLITS:
        assert raw_examples(back, s) == raw_examples(ds, s)
    assert back.items["raw_id"].tolist() == ds.items["raw_id"].tolist()
    assert back.titles == [" ".join(t.split()) if t else None for t in ds.titles]


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def test_plain_benchmark_files_keep_their_splits(tmp_path):
    """Each user's last event in .test.inter, the one before in .valid.inter: valid/test examples get all
    earlier events as history, whichever file they are in."""
    seqs = naive_sequences()
    log = raw_log().sort_values(["t", "line"], kind="stable")
    rank = log.groupby("user").cumcount(ascending=False)
    for name, mask in (("train", rank >= 2), ("valid", rank == 1), ("test", rank == 0)):
        part = log[mask.to_numpy()].sample(frac=1.0, random_state=0)  # file order is not time order
        _write(tmp_path / f"ml.{name}.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float",
               [f"{u}\t{i}\t{r:g}\t{t}" for u, i, r, t in zip(part["user"], part["item"], part["rating"], part["t"])])
    shutil.copy(FIXTURE / "ml-mini.item", tmp_path / "ml.item")
    ds = load_recbole(tmp_path / "ml")
    assert ds.num_items == 48  # item i = row i of the .item file
    assert ds.items["raw_id"].tolist() == [str(k) for k in range(1, 49)]
    assert sorted((u, h, t) for u, h, t, _ in raw_examples(ds, "test")) == \
        sorted((u, s[:-1], s[-1]) for u, s in seqs.items())
    assert sorted((u, h, t) for u, h, t, _ in raw_examples(ds, "train")) == \
        sorted((u, s[:-3], s[-3]) for u, s in seqs.items())
    counts = ds.interactions["split"].value_counts().to_dict()
    assert counts == {"train": len(log) - 120, "valid": 60, "test": 60}


def test_row_benchmark_without_item_file(tmp_path):
    header = "session_id:token\titem_id_list:token_seq\titem_id:token"
    _write(tmp_path / "dg.train.inter", header, ["1\t9 8\t7", "2\t8\t9"])
    _write(tmp_path / "dg.valid.inter", header, ["1\t9 8 7\t5"])
    _write(tmp_path / "dg.test.inter", header, ["3\t5 9\t8"])
    ds = load_recbole(tmp_path / "dg", RecBoleConfig(user_col="session_id"))
    assert ds.items["raw_id"].tolist() == ["9", "8", "7", "5"]  # first appearance
    assert raw_examples(ds, "test") == [("3", ["5", "9"], "8", -1)]
    assert ds.protocol == "T"


@pytest.mark.parametrize("header, expect", [
    ("user_id\titem_id\ttimestamp", "is not 'name:type'"),
    ("user_id:token\titem_id:tokn\ttimestamp:float", "RecBole types are"),
])
def test_bad_headers(tmp_path, header, expect):
    _write(tmp_path / "x.inter", header, ["1\t2\t3"])
    with pytest.raises(SemrecError, match=expect):
        load_recbole(tmp_path / "x")


def test_benchmark_files_come_in_threes(tmp_path):
    header = "user_id:token\titem_id:token\ttimestamp:float"
    _write(tmp_path / "x.train.inter", header, ["1\t2\t3"])
    _write(tmp_path / "x.test.inter", header, ["1\t2\t3"])
    with pytest.raises(SemrecError, match="come in threes; missing .*x.valid.inter"):
        load_recbole(tmp_path / "x")


def test_separators_sniffed_per_file(tmp_path, capsys):
    """A tab-separated .inter next to a comma-separated .item with an odd extension, and a '::' .dat."""
    log = raw_log()
    (tmp_path / "log.inter").write_text("user\titem\tts\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, i, t in zip(log["user"], log["item"], log["t"])))
    (tmp_path / "movies.item").write_text("item_id,title\n" + "".join(f"{k},\"Film {k}, The\"\n"
                                                                      for k in range(1, 49)))
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::{t}\n" for u, i, t in
                                                  zip(["user", *log["user"]], ["item", *log["item"]],
                                                      ["ts", *log["t"]])))
    for f in ("log.inter", "ratings.dat"):
        rc = main(["data", "import", "--interactions", str(tmp_path / f), "--items", str(tmp_path / "movies.item"),
                   "--user-col", "user", "--item-col", "item", "--time-col", "ts", "--out", str(tmp_path / f"d-{f}")])
        assert rc == 0, capsys.readouterr().err
        ds = load_dataset(tmp_path / f"d-{f}")
        assert ds.num_users == 60 and len(ds.interactions) == len(log)
        assert "Film 1, The" in ds.titles
    # an explicit wrong separator is used as given, and the error names it
    rc = main(["data", "import", "--interactions", str(tmp_path / "log.inter"), "--items",
               str(tmp_path / "movies.item"), "--sep", ",", "--user-col", "user", "--out", str(tmp_path / "bad")])
    assert rc == 2 and "no column 'user'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_docs_example_recipe_and_scheme_load():
    """docs/recbole_example.md's recipe and scheme are valid (the data directory is made by its first command)."""
    from semrec.pipeline import load_recipe
    from semrec.itemtok.schemes import load_scheme

    docs = Path(__file__).resolve().parents[2] / "docs" / "examples"
    recipe = load_recipe(docs / "ml_mini_tiger_tca.yaml")
    assert recipe.data == "data_dirs/ml-mini" and all(m.examples == "prefixes" for m in recipe.models)
    assert load_scheme(recipe.resolve_path(recipe.tokenizer)).quantizer["codebook_sizes"] == [8, 8, 8]
