"""`import_dataset` on generic files it has never seen (written here), in every supported format."""

import json

import numpy as np
import pandas as pd
import pytest

from semrec.data import ImportConfig, import_dataset, load_dataset
from semrec.errors import SemrecError

COLS = dict(user_col="customer", item_col="product", time_col="when", items_id_col="sku", title_col="name")


def make_pair(tmp_path, n_users=7, n_items=9, seed=0):
    """A shop log: customers, products, ISO dates (with ties), star ratings and a channel column."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for _ in range(int(rng.integers(3, 8))):
            day = int(rng.integers(1, 28))
            rows.append({"customer": f"cust-{u:02d}", "product": f"P{int(rng.integers(0, n_items)):03d}",
                         "when": f"2021-03-{day:02d}", "stars": int(rng.integers(1, 6)),
                         "channel": ["web", "app"][int(rng.integers(0, 2))]})
    inter = pd.DataFrame(rows)
    items = pd.DataFrame({"sku": [f"P{k:03d}" for k in range(n_items + 2)],
                          "name": [f"Product &amp; thing {k}" if k != 4 else "" for k in range(n_items + 2)],
                          "color": [["red", "blue"][k % 2] for k in range(n_items + 2)]})
    inter.to_csv(tmp_path / "log.csv", index=False)
    items.to_csv(tmp_path / "catalog.csv", index=False)
    return inter, items


def naive_loo(inter, min_rating=None):
    df = inter.drop_duplicates(subset=["customer", "product", "when"]).copy()
    if min_rating is not None:
        df = df[df["stars"] >= min_rating]
    df["line"] = np.arange(len(df))
    seqs = {}
    for r in df.sort_values(["when", "line"], kind="stable").itertuples():
        seqs.setdefault(r.customer, []).append(r.product)
    return {u: s for u, s in seqs.items() if len(s) >= 3}


def raw_sequences(ds):
    inter = ds.interactions
    out = {}
    for u, i in zip(inter["user_id"], inter["item_id"]):
        out.setdefault(ds.users.loc[u, "raw_id"], []).append(ds.items.loc[i, "raw_id"])
    return out


def test_generic_csv_pair(tmp_path):
    inter, items = make_pair(tmp_path)
    ds = import_dataset(tmp_path / "log.csv", tmp_path / "catalog.csv", ImportConfig(**COLS))
    want = naive_loo(inter)
    assert raw_sequences(ds) == want
    assert ds.num_users == len(want) and ds.num_items == len({i for s in want.values() for i in s})
    # leave-one-out targets are the last and second-to-last items of each raw sequence
    for e, u in enumerate(ds.test.users):
        seq = want[ds.users.loc[u, "raw_id"]]
        assert ds.items.loc[ds.test.targets[e], "raw_id"] == seq[-1]
        assert ds.items.loc[ds.valid.targets[e], "raw_id"] == seq[-2]
        assert ds.items.loc[ds.train.targets[e], "raw_id"] == seq[-3]
        assert ds.items["raw_id"].to_numpy()[ds.test.history(e)].tolist() == seq[:-1]
    # extra columns kept, titles cleaned, untitled item kept as None, timestamps are unix seconds
    assert {"stars", "channel"} <= set(ds.interactions.columns)
    assert set(ds.items.columns) == {"raw_id", "title", "color"}
    titled = ds.items.dropna(subset=["title"])
    assert titled["title"].str.startswith("Product & thing").all()
    assert ds.interactions["timestamp"].min() >= pd.Timestamp("2021-03-01", tz="UTC").timestamp()
    assert ds.info["items_without_interactions"] == len(items) - ds.num_items
    back = load_dataset(ds.save_pretrained(tmp_path / "out"))
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.items, ds.items)


def test_formats_give_the_same_dataset(tmp_path):
    inter, items = make_pair(tmp_path, seed=1)
    inter.to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    inter.to_parquet(tmp_path / "log.parquet", index=False)
    with open(tmp_path / "catalog.jsonl", "w") as f:
        for r in items.to_dict("records"):
            f.write(json.dumps(r) + "\n")
    cfg = ImportConfig(**COLS)
    ref = import_dataset(tmp_path / "log.csv", tmp_path / "catalog.csv", cfg)
    for log, cat in (("log.tsv", "catalog.jsonl"), ("log.parquet", "catalog.csv")):
        ds = import_dataset(tmp_path / log, tmp_path / cat, cfg)
        assert raw_sequences(ds) == raw_sequences(ref)
        np.testing.assert_array_equal(ds.test.targets, ref.test.targets)
        assert ds.titles == ref.titles


def test_rating_filter_kcore_and_time_split(tmp_path):
    inter, _ = make_pair(tmp_path, n_users=30, n_items=12, seed=2)
    ds = import_dataset(tmp_path / "log.csv", tmp_path / "catalog.csv",
                        ImportConfig(**COLS, min_rating=3, rating_col="stars"))
    assert raw_sequences(ds) == naive_loo(inter, min_rating=3)
    assert ds.info["dropped"]["rating_below_min"] == int((inter["stars"] < 3).sum())
    assert (ds.interactions["stars"] >= 3).all()
    ds = import_dataset(tmp_path / "log.csv", tmp_path / "catalog.csv",
                        ImportConfig(**COLS, min_user_interactions=4, min_item_interactions=4))
    counts_u = ds.interactions.groupby("user_id").size()
    counts_i = ds.interactions.groupby("item_id").size()
    assert counts_u.min() >= 4 and counts_i.min() >= 4
    ds = import_dataset(tmp_path / "log.csv", tmp_path / "catalog.csv",
                        ImportConfig(**COLS, split="time", ratios=[0.7, 0.15, 0.15]))
    tr, va, te = ds.train.timestamps, ds.valid.timestamps, ds.test.timestamps
    assert len(tr) and len(va) and len(te)
    assert tr.max() <= va.min() and va.max() <= te.min()
    assert ds.info["split"]["scheme"] == "time"


def test_unknown_items_error_or_drop(tmp_path):
    inter, items = make_pair(tmp_path, seed=3)
    items[items["sku"] != "P001"].to_csv(tmp_path / "partial.csv", index=False)
    n_missing = int((inter["product"] == "P001").sum())
    with pytest.raises(SemrecError, match=rf"1 item id\(s\) \({n_missing} interactions\) are not in .*partial.csv, "
                                          r"e.g. 'P001' \(pass --drop-unknown-items"):
        import_dataset(tmp_path / "log.csv", tmp_path / "partial.csv", ImportConfig(**COLS))
    ds = import_dataset(tmp_path / "log.csv", tmp_path / "partial.csv", ImportConfig(**COLS, unknown_items="drop"))
    assert ds.info["dropped"]["unknown_item_interactions"] == n_missing
    assert "P001" not in set(ds.items["raw_id"])


def test_integer_ids_and_unix_seconds(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n" + "".join(
        f"{u},{(u + k) % 5},{1000 + 10 * k}\n" for u in range(4) for k in range(4)))
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"item_id": k, "title": f"t{k}", "tags": ["a", k]}) + "\n"
                                              for k in range(5)))
    ds = import_dataset(tmp_path / "i.csv", tmp_path / "m.jsonl")
    assert set(ds.items["raw_id"]) == {"0", "1", "2", "3", "4"}
    assert ds.interactions["timestamp"].tolist()[:4] == [1000, 1010, 1020, 1030]
    assert ds.items["tags"].map(lambda v: isinstance(v, str)).all()  # mixed list cells stored as JSON text
    load_dataset(ds.save_pretrained(tmp_path / "o"))
