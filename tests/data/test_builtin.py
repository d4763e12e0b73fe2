"""The built-in loaders on the real bundled files: counts from each PROVENANCE.md, split structure, round trips."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from semrec.data import BUILTIN_DATASETS, dataset_stats, load_builtin, load_dataset, resolve_dataset
from semrec.errors import SemrecError

# name -> (items, users seen in the three files) from PROVENANCE.md
T_COUNTS = {"toys-t": (20669, 8708), "sports-t": (27008, 10954), "office-t": (9913, 7075)}
# name -> (users, items, interactions)
P_COUNTS = {"toys-p": (19412, 11924, 167597), "beauty-p": (22363, 12101, 198502), "sports-p": (35598, 18357, 296337)}

_cache = {}


def ds_of(name):
    if name not in _cache:
        _cache[name] = load_builtin(name)
    return _cache[name]


def test_registry_names():
    assert set(BUILTIN_DATASETS) == set(T_COUNTS) | set(P_COUNTS)


@pytest.mark.parametrize("name", list(T_COUNTS))
def test_protocol_t_counts_and_chronology(name):
    ds = ds_of(name)
    n_items, n_users = T_COUNTS[name]
    assert ds.protocol == "T" and ds.num_items == n_items and ds.num_users == n_users
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [10000, 5000, 5000]
    for ex in ds.splits.values():
        assert (ex.lengths == 10).all()
        assert ex.hist_items.min() >= 0 and max(ex.hist_items.max(), ex.targets.max()) < n_items
    assert ds.items["title"].notna().all() and ds.interactions is None
    # global time split: every train target time <= every valid one <= every test one
    assert ds.train.timestamps.max() <= ds.valid.timestamps.min()
    assert ds.valid.timestamps.max() <= ds.test.timestamps.min()
    assert ds.info["data_stat"]["num_item"] == n_items
    assert dataset_stats(ds)["interactions"] == 20000


def test_protocol_t_row_and_item_mapping(repo_data):
    ds = ds_of("toys-t")
    # first line of train_10000.csv.gz: uid 3402, iid 18129, hist [13452, ..., 17711], 1471996800
    assert ds.users["raw_id"][ds.train.users[0]] == "3402"
    assert ds.train.targets[0] == 18128 and ds.train.timestamps[0] == 1471996800
    assert ds.train.history(0)[[0, -1]].tolist() == [13451, 17710]
    raw = pd.read_csv(repo_data / "amazon18_toys_tca4rec" / "item.csv.gz")
    row = raw[raw["iid"] == 18129].iloc[0]
    assert ds.items.loc[18128, "raw_id"] == row["rawid"] and ds.items.loc[18128, "title"] == row["title"]
    assert list(ds.items.columns) == ["raw_id", "title", "mapping_raw_id", "brand"]
    sports = ds_of("sports-t")
    assert sports.items.loc[0, "category"] == ["Sports & Fitness"] and sports.items.loc[0, "style"] == []
    assert all(isinstance(v, list) for v in sports.items["category"])


@pytest.mark.parametrize("name", list(P_COUNTS))
def test_protocol_p_counts_and_leave_one_out(name):
    ds = ds_of(name)
    n_users, n_items, n_inter = P_COUNTS[name]
    assert (ds.protocol, ds.num_users, ds.num_items, len(ds.interactions)) == ("P", n_users, n_items, n_inter)
    assert dataset_stats(ds)["interactions"] == n_inter
    tr, va, te = ds.train, ds.valid, ds.test
    assert len(tr) == len(va) == len(te) == n_users
    assert (tr.users == np.arange(n_users)).all() and (te.users == va.users).all()
    # test history = valid history + valid target; valid history = train history + train target
    np.testing.assert_array_equal(te.lengths, va.lengths + 1)
    np.testing.assert_array_equal(va.lengths, tr.lengths + 1)
    np.testing.assert_array_equal(te.hist_items[te.hist_offsets[1:] - 1], va.targets)
    np.testing.assert_array_equal(va.hist_items[va.hist_offsets[1:] - 1], tr.targets)
    # the whole sequence (test history + test target) is the user's interaction log
    full = np.insert(te.hist_items, te.hist_offsets[1:], te.targets)
    np.testing.assert_array_equal(full, ds.interactions["item_id"].to_numpy())
    # no test target is a training target in the same user's train part (= the valid history)
    for u in range(0, n_users, 97):
        assert te.targets[u] not in va.history(u)
        assert va.targets[u] not in tr.history(u) and va.targets[u] != tr.targets[u]
    assert ds.interactions.groupby("user_id")["split"].last().eq("test").all()


def test_protocol_p_item_text(repo_data):
    toys = ds_of("toys-p")
    assert toys.items.loc[0, "raw_id"] == "B005E7BDXW"
    assert toys.items.loc[0, "title"] == "Pocoyo And Friends Swiggle Traks Feature Track With Bridge"
    assert toys.items.loc[0, "categories"] == [["Toys & Games", "Dolls & Accessories", "Dolls"]]
    assert toys.items.loc[0, "attributes"] == [399, 2, 220, 262]
    beauty = ds_of("beauty-p")
    with gzip.open(repo_data / "amazon14_p5s3rec_seq" / "item_meta_Beauty.jsonl.gz", "rt") as f:
        raw = [json.loads(line) for line in f]
    k = next(j for j, r in enumerate(raw) if "&amp;" in r["title"])
    assert "&amp;" not in beauty.items.loc[k, "title"] and "&" in beauty.items.loc[k, "title"]
    sports = ds_of("sports-p")
    assert sports.items["title"].isna().all() and sports.items["keywords"].map(bool).all()
    assert dataset_stats(sports)["items_without_title"] == 18357


@pytest.mark.parametrize("name", ["sports-t", "toys-p"])
def test_save_load_round_trip(name, tmp_path):
    ds = ds_of(name)
    out = ds.save_pretrained(tmp_path / name)
    back = load_dataset(out)
    assert (back.name, back.protocol, back.info) == (ds.name, ds.protocol, json.loads(json.dumps(ds.info)))
    pd.testing.assert_frame_equal(back.items, ds.items)
    pd.testing.assert_frame_equal(back.users, ds.users)
    if ds.interactions is None:
        assert back.interactions is None
    else:
        pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    for s in ("train", "valid", "test"):
        for f in ("users", "targets", "hist_items", "hist_offsets", "timestamps"):
            np.testing.assert_array_equal(getattr(back.splits[s], f), getattr(ds.splits[s], f))
    assert dataset_stats(resolve_dataset(str(out))) == dataset_stats(ds)


def test_resolve_and_data_dir_errors(tmp_path, monkeypatch):
    with pytest.raises(SemrecError, match="unknown builtin dataset 'toys'"):
        load_builtin("toys")
    with pytest.raises(SemrecError, match="did you mean 'beauty-p'"):
        resolve_dataset("beauty_p")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SemrecError, match="not a dataset directory"):
        resolve_dataset(str(tmp_path / "file.txt"))
    monkeypatch.setenv("SEMREC_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SemrecError, match="SEMREC_DATA_DIR=.*no such directory"):
        load_builtin("toys-t")
    monkeypatch.setenv("SEMREC_DATA_DIR", str(tmp_path))
    with pytest.raises(SemrecError, match="amazon18_toys_tca4rec: no such directory"):
        load_builtin("toys-t")


def _tiny_tca(folder, item_rows, hist="[1, 2]"):
    import gzip as gz

    folder.mkdir(exist_ok=True)
    with gz.open(folder / "item.csv.gz", "wt") as f:
        f.write(",rawid,title,mapping_iid,brand,category,iid\n" + item_rows)
    row = "uid,iid,his_len,hist_id,rating,label,hist_rating,hist_label,timestamp\n"
    for name, uid in (("train_10000", 7), ("valid_5000", 3), ("test_5000", 7)):
        with gz.open(folder / f"{name}.csv.gz", "wt") as f:
            f.write(row + f'{uid},3,2,"{hist}",5.0,1,"[5.0, 4.0]","[1, 0]",{uid * 100}\n')
    return folder


def test_tca4rec_loader_checks_ids(tmp_path):
    from semrec.data import load_tca4rec

    rows = "0,A1,T one,A1,b,['x'],2\n1,A2,T two,A2,,\"['y', 'z']\",1\n2,A3,NA,A1,c,[],3\n"
    ds = load_tca4rec(_tiny_tca(tmp_path / "ok", rows))
    assert ds.items["raw_id"].tolist() == ["A2", "A1", "A3"]  # row i = iid i + 1
    assert ds.items["title"].tolist() == ["T two", "T one", "NA"] and ds.items.loc[0, "brand"] is None
    assert ds.items["category"].tolist() == [["y", "z"], ["x"], []]
    assert ds.users["raw_id"].tolist() == ["3", "7"] and ds.train.users.tolist() == [1]
    assert ds.train.history(0).tolist() == [0, 1] and ds.train.targets.tolist() == [2]
    with pytest.raises(SemrecError, match=r"item.csv.gz: iid must be exactly 1..3"):
        load_tca4rec(_tiny_tca(tmp_path / "gap", rows.replace(",3\n", ",4\n")))
    with pytest.raises(SemrecError, match=r"train_10000.csv.gz: line 2: hist_id 9 is not an item"):
        load_tca4rec(_tiny_tca(tmp_path / "bad", rows, hist="[1, 9]"))
    with pytest.raises(SemrecError, match=r"line 2: hist_id has 3 items but his_len is 2"):
        load_tca4rec(_tiny_tca(tmp_path / "len", rows, hist="[1, 2, 3]"))
