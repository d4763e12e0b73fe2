"""Raw Amazon 2014/2018 dumps from tiny fixtures in the exact formats (tests/fixtures/amazon{2014,2018})."""

import ast
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semrec.data import AmazonConfig, load_amazon
from semrec.errors import SemrecError

FIX = Path(__file__).resolve().parents[1] / "fixtures"
R14, M14 = FIX / "amazon2014" / "reviews_Toys_5.json.gz", FIX / "amazon2014" / "meta_Toys.json.gz"
R18, M18 = FIX / "amazon2018" / "Toys_5.json.gz", FIX / "amazon2018" / "meta_Toys.json.gz"


def raw_reviews(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def naive_sequences(reviews, min_rating=None, k=5):
    """Reference: drop exact duplicates, iterate 5-core by hand, sort each user's events by (time, line)."""
    seen, ev = set(), []
    for n, r in enumerate(reviews):
        key = (r["reviewerID"], r["asin"], r["unixReviewTime"])
        if (min_rating is not None and r["overall"] < min_rating) or key in seen:
            continue
        seen.add(key)
        ev.append((r["reviewerID"], r["asin"], r["unixReviewTime"], n))
    while True:
        cu = pd.Series([e[0] for e in ev]).value_counts()
        ci = pd.Series([e[1] for e in ev]).value_counts()
        new = [e for e in ev if cu[e[0]] >= k and ci[e[1]] >= k]
        if len(new) == len(ev):
            break
        ev = new
    seqs = {}
    for u, i, t, n in sorted(ev, key=lambda e: (e[2], e[3])):
        seqs.setdefault(u, []).append(i)
    return seqs


def sequences_of(ds):
    inter = ds.interactions
    raw_u = ds.users["raw_id"].to_numpy()[inter["user_id"].to_numpy()]
    raw_i = ds.items["raw_id"].to_numpy()[inter["item_id"].to_numpy()]
    seqs = {}
    for u, i in zip(raw_u, raw_i):
        seqs.setdefault(u, []).append(i)
    return seqs


@pytest.mark.parametrize("year,reviews,meta", [(2014, R14, M14), (2018, R18, M18)])
def test_default_build_matches_naive_reference(year, reviews, meta):
    ds = load_amazon(reviews, meta, year)
    want = naive_sequences(raw_reviews(reviews))
    assert sequences_of(ds) == want
    assert (ds.num_users, ds.num_items, len(ds.interactions)) == (6, 6, 35)
    assert ds.info["dropped"]["duplicate_interactions"] == 1
    assert ds.info["kcore"]["rounds"] >= 3  # I7 goes first, then U8 in the next round
    # leave-one-out on the rebuilt sequences
    for e, u in enumerate(ds.test.users):
        seq = want[ds.users.loc[u, "raw_id"]]
        assert ds.items.loc[ds.test.targets[e], "raw_id"] == seq[-1]
        assert ds.items.loc[ds.valid.targets[e], "raw_id"] == seq[-2]
        assert ds.items["raw_id"].to_numpy()[ds.train.history(e)].tolist() == seq[:-3]
    assert "rating" in ds.interactions.columns


def test_2014_meta_fields_and_title_cleaning():
    ds = load_amazon(R14, M14, 2014)
    items = ds.items.set_index("raw_id")
    assert items.loc["B000000002", "title"] == "Toy & Car Set"  # html unescaped, whitespace collapsed
    assert items.loc["B000000003", "title"] == "Children's Book"
    assert items.loc["B000000002", "categories"] == [["Toys & Games"], ["Cars"]]
    assert items.loc["B000000001", "brand"] == "Acme"
    assert items.loc["B000000005", "title"] is None  # no meta line: kept untitled by default
    assert items.loc["B000000006", "title"] is None  # meta line without a title
    assert ds.info["items_added_without_metadata"] == 1


def test_2018_meta_duplicates_and_lists():
    ds = load_amazon(R18, M18, 2018)
    items = ds.items.set_index("raw_id")
    assert items.loc["B000000001", "title"] == "Race Car"  # first of the duplicated meta lines
    assert ds.info["duplicate_meta_products"] == 1
    assert items.loc["B000000002", "title"] == 'Toy "Car" Set'
    assert items.loc["B000000006", "title"] is None  # empty title
    assert items.loc["B000000003", "category"] == ["Toys & Games", "Sub2"]
    assert items.loc["B000000003", "description"] == ["Item 2."]


def test_options_rating_ascii_title_length_untitled():
    ds = load_amazon(R14, M14, 2014, AmazonConfig(min_rating=3))
    assert ds.info["dropped"]["rating_below_min"] == 1
    assert sequences_of(ds) == naive_sequences(raw_reviews(R14), min_rating=3)
    ds = load_amazon(R14, M14, 2014, AmazonConfig(min_user_interactions=2, min_item_interactions=2,
                                                  title_ascii_only=True, title_max_len=8))
    assert "B000000004" not in set(ds.items["raw_id"]) and ds.info["dropped"]["non_ascii_title_items"] == 1
    assert max(len(t) for t in ds.titles if t) <= 8
    ds = load_amazon(R14, M14, 2014, AmazonConfig(min_user_interactions=2, min_item_interactions=2,
                                                  drop_untitled=True))
    assert ds.items["title"].notna().all() and ds.info["dropped"]["untitled_items"] == 2
    capped = load_amazon(R14, M14, 2014, AmazonConfig(max_history=2))
    full = load_amazon(R14, M14, 2014)
    assert capped.test.lengths.max() == 2
    for e in range(len(full.test)):
        assert capped.test.history(e).tolist() == full.test.history(e)[-2:].tolist()
    # untitled I5/I6 gone: the 5-core collapses to nothing -> a clear error
    with pytest.raises(SemrecError, match="no interactions left after k-core filtering"):
        load_amazon(R14, M14, 2014, AmazonConfig(drop_untitled=True))


def test_time_window_and_time_split():
    reviews = raw_reviews(R18)
    newest = max(r["unixReviewTime"] for r in reviews)
    cutoff = int((pd.Timestamp(newest, unit="s") - pd.DateOffset(months=6)).timestamp())
    cfg = AmazonConfig(min_user_interactions=1, min_item_interactions=1, window_months=6, split="time",
                       ratios=[0.6, 0.2, 0.2], min_history=2)
    ds = load_amazon(R18, M18, 2018, cfg)
    assert ds.info["dropped"]["outside_time_window"] == sum(r["unixReviewTime"] < cutoff for r in reviews)
    assert ds.interactions["timestamp"].min() >= cutoff
    tr, va, te = ds.train.timestamps, ds.valid.timestamps, ds.test.timestamps
    assert tr.max() <= va.min() and va.max() <= te.min()
    per_user = ds.interactions.groupby("user_id").size().to_numpy()
    assert len(tr) + len(va) + len(te) == int(np.maximum(per_user - 2, 0).sum())
    assert ds.info["split"]["samples_per_split"] == {"train": len(tr), "valid": len(va), "test": len(te)}


def write_gz(path, lines):
    with gzip.open(path, "wt") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def test_bad_dump_lines(tmp_path):
    good = raw_reviews(R14)[:3]
    lines = [json.dumps(r) for r in good]
    bad = write_gz(tmp_path / "reviews_X.json.gz", lines[:2] + ['{"reviewerID": "A", "asin": '] + lines[2:])
    with pytest.raises(SemrecError, match=r"reviews_X.json.gz: line 3: not valid JSON"):
        load_amazon(bad, M14, 2014)
    miss = write_gz(tmp_path / "reviews_Y.json.gz", lines[:1] + [json.dumps({"reviewerID": "A", "asin": "B"})])
    with pytest.raises(SemrecError, match=r"line 2: missing field\(s\) unixReviewTime"):
        load_amazon(miss, M14, 2014)
    empty = write_gz(tmp_path / "reviews_Z.json.gz", [])
    with pytest.raises(SemrecError, match="empty file"):
        load_amazon(empty, M14, 2014)
    # 2014 meta lines are parsed with ast.literal_eval: code is rejected, never run
    with gzip.open(M14, "rt") as f:
        meta = f.read().splitlines()
    marker = tmp_path / "pwned"
    evil = f"{{'asin': 'B000000001', 'title': __import__('pathlib').Path({str(marker)!r}).touch()}}"
    m = write_gz(tmp_path / "meta_X.json.gz", [evil] + meta[1:])
    with pytest.raises(SemrecError, match=r"meta_X.json.gz: line 1: not a Python dict literal"):
        load_amazon(R14, m, 2014)
    assert not marker.exists()
    assert ast.literal_eval(meta[0])["asin"] == "B000000001"
    with pytest.raises(SemrecError, match="year must be 2014 or 2018"):
        load_amazon(R14, M14, 2015)


def test_interaction_table_split_labels():
    ds = load_amazon(R14, M14, 2014)
    inter = ds.interactions
    last = inter.groupby("user_id").tail(1)
    assert (last["split"] == "test").all()
    np.testing.assert_array_equal(np.sort(last["item_id"].to_numpy()), np.sort(ds.test.targets))
    assert set(inter["split"]) == {"train", "valid", "test"}
