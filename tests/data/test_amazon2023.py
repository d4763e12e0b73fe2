"""Amazon Reviews 2023: `<Cat>.jsonl[.gz]` + `meta_<Cat>.jsonl[.gz]` and the official benchmark CSVs,
on fixtures written here in exactly those formats (field names, millisecond timestamps, parent_asin keys,
`history` as space-separated parent_asins in the `_w_his` splits)."""

import gzip
import json

import numpy as np
import pytest

from semrec.cli import main
from semrec.data import load_dataset
from semrec.data.amazon_raw import AmazonConfig, load_amazon2023
from semrec.errors import SemrecError

USERS = [f"AGKHLEW2SOWHNMFQIJGBECAF{k}INQ" for k in range(6)]
ITEMS = [f"B0{k}YQ6X8EO" for k in range(7)]
T0 = 1_588_687_728_923  # ms


def interactions():
    """(user, parent_asin, asin, rating, timestamp ms): each user reviews 5 or 6 products in a walk."""
    rng = np.random.default_rng(3)
    out = []
    for u, user in enumerate(USERS):
        t = T0 + u * 1_000
        for k in range(5 + u % 2):
            item = ITEMS[(u + 2 * k) % len(ITEMS)]
            t += int(rng.integers(1, 10)) * 86_400_000
            out.append((user, item, item + ("V" if k % 2 else ""), float(rng.integers(1, 6)), t))
    return out


def write_jsonl(path, rows, gz):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def write_dumps(tmp_path, gz=True):
    ext = ".jsonl.gz" if gz else ".jsonl"
    reviews = [{"rating": r, "title": "Such a lovely scent but not overpowering.", "text": "Nice & fresh.",
                "images": [], "asin": a, "parent_asin": p, "user_id": u, "timestamp": t, "helpful_vote": 0,
                "verified_purchase": True} for u, p, a, r, t in interactions()]
    meta = [{"main_category": "All Beauty", "title": f"Howard LC000{k} Leather Conditioner, 8-Ounce",
             "average_rating": 4.8, "rating_number": 10, "features": [f"feature {k}"], "description": [],
             "price": None if k % 2 else 12.5, "images": [{"thumb": "t.jpg", "large": "l.jpg", "variant": "MAIN",
                                                          "hi_res": None}], "videos": [], "store": "Howard Products",
             "categories": ["Beauty", "Skin Care"], "details": {"UPC": f"61739088278{k}"}, "parent_asin": item,
             "bought_together": None} for k, item in enumerate(ITEMS)]
    write_jsonl(tmp_path / f"All_Beauty{ext}", reviews, gz)
    write_jsonl(tmp_path / f"meta_All_Beauty{ext}", meta, gz)
    return tmp_path / f"All_Beauty{ext}", tmp_path / f"meta_All_Beauty{ext}"


def write_benchmark(tmp_path, with_history=True):
    """last_out[_w_his]: each user's last review in test, the one before in valid, the rest in train."""
    by_user = {}
    for u, p, _, r, t in interactions():
        by_user.setdefault(u, []).append((p, r, t))
    files = {}
    for split, pick in (("train", lambda s: s[:-2]), ("valid", lambda s: s[-2:-1]), ("test", lambda s: s[-1:])):
        lines = ["user_id,parent_asin,rating,timestamp" + (",history" if with_history else "")]
        for u, seq in by_user.items():
            start = {"train": 0, "valid": len(seq) - 2, "test": len(seq) - 1}[split]
            for k, (p, r, t) in enumerate(pick(seq)):
                hist = " ".join(x[0] for x in seq[: start + k])
                lines.append(f"{u},{p},{r},{t}" + (f",{hist}" if with_history else ""))
        files[split] = tmp_path / f"All_Beauty.{split}.csv"
        files[split].write_text("\n".join(lines) + "\n")
    return files


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
