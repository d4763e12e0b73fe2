"""Amazon Reviews 2023: `<Cat>.jsonl[.gz]` + `meta_<Cat>.jsonl[.gz]` and the official benchmark CSVs,
on fixtures written here in exactly those formats (field names, millisecond timestamps, parent_asin keys,
`history` as space-separated parent_asins in the `_w_his` splits)."""

import json

import pytest

from semrec.cli import main
from semrec.data import load_dataset
from semrec.data.amazon_raw import AmazonConfig, load_amazon2023
from semrec.errors import SemrecError
from helpers.external_formats import ITEMS, USERS, interactions, write_benchmark, write_dumps

@pytest.mark.parametrize("gz", [True, False])
def test_reviews_and_meta_2023(tmp_path, gz):
    reviews, meta = write_dumps(tmp_path, gz)
    ds = load_amazon2023(meta, reviews, AmazonConfig(min_user_interactions=0, min_item_interactions=0))
    rows = interactions()
    assert len(ds.interactions) == len(rows) and ds.num_users == len(USERS)
    # keyed by parent_asin (the variant asin is ignored), timestamps from milliseconds to seconds
    assert set(ds.items["raw_id"]) <= set(ITEMS)
    by_user = {}
    for u, p, _, _, t in sorted(rows, key=lambda r: r[4]):
        by_user.setdefault(u, []).append(p)
    raw_items, raw_users = ds.items["raw_id"].tolist(), ds.users["raw_id"].tolist()
    for e in range(len(ds.test)):
        u = raw_users[ds.test.users[e]]
        assert [raw_items[i] for i in ds.test.history(e)] + [raw_items[ds.test.targets[e]]] == by_user[u]
    assert ds.interactions["timestamp"].min() == min(r[4] for r in rows) // 1000
    it = ds.items.set_index("raw_id").loc[ITEMS[0]]
    assert it["title"] == "Howard LC0000 Leather Conditioner, 8-Ounce" and it["brand"] == "Howard Products"
    assert it["categories"] == ["Beauty", "Skin Care"] and json.loads(it["details"]) == {"UPC": "617390882780"}
    assert it["price"] == "12.5" and ds.items.set_index("raw_id").loc[ITEMS[1], "price"] is None


@pytest.mark.parametrize("with_history", [True, False])
def test_benchmark_splits_kept_as_given(tmp_path, with_history):
    _, meta = write_dumps(tmp_path)
    files = write_benchmark(tmp_path, with_history)
    argv = ["data", "amazon", "--year", "2023", "--meta", str(meta), "--train", str(files["train"]),
            "--valid", str(files["valid"]), "--test", str(files["test"]), "--out", str(tmp_path / "d")]
    assert main(argv) == 0
    ds = load_dataset(tmp_path / "d")
    rows = interactions()
    assert len(ds.interactions) == len(rows) and ds.info["split"]["scheme"] == "given"
    assert ds.interactions["split"].value_counts().to_dict() == {"train": len(rows) - 12, "valid": 6, "test": 6}
    raw_items = ds.items["raw_id"].tolist()
    by_user, t_of = {}, {}
    for u, p, _, _, t in rows:
        by_user.setdefault(u, []).append(p)
        t_of[u, p] = t
    for split, cut in (("test", -1), ("valid", -2)):
        ex = ds.splits[split]
        assert len(ex) == len(USERS)
        for e in range(len(ex)):
            seq = by_user[ds.users["raw_id"][ex.users[e]]]
            assert [raw_items[i] for i in ex.history(e)] == seq[:cut]
            assert raw_items[ex.targets[e]] == seq[cut]
            assert ex.timestamps[e] == t_of[ds.users["raw_id"][ex.users[e]], seq[cut]] // 1000


def test_2023_bad_inputs(tmp_path, capsys):
    reviews, meta = write_dumps(tmp_path, gz=False)
    files = write_benchmark(tmp_path)
    files["valid"].write_text("user_id,item_id,rating,timestamp\nU,B,5.0,1\n")
    with pytest.raises(SemrecError, match=r"All_Beauty.valid.csv: missing column\(s\) parent_asin"):
        load_amazon2023(meta, splits=files)
    (tmp_path / "r.jsonl").write_text(json.dumps({"user_id": "U", "asin": "B", "timestamp": 1}) + "\n")
    with pytest.raises(SemrecError, match=r"r.jsonl: line 1: missing field\(s\) parent_asin"):
        load_amazon2023(meta, tmp_path / "r.jsonl")
    argv = ["data", "amazon", "--year", "2023", "--meta", str(meta), "--train", str(files["train"]),
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2 and "missing --valid, --test" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
