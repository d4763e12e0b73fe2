"""Files in the exact formats of other tools' releases, written for tests: Amazon Reviews 2023 dumps and
benchmark splits, and MiniOneRec/BIGRec row files."""

import csv
import gzip
import json

import numpy as np

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


TITLES = ["Digital Caliper 6in", "Safety Glasses Clear", "Nitrile Gloves L", "Soldering Iron Kit", "Multimeter",
          "Wire Stripper", "Heat Shrink Tubing", "Flux Pen", "Lab Notebook", "pH Test Strips"]
HEADER = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid",
          "item_sid"]


def title(i: int) -> str:
    return TITLES[i] if i < len(TITLES) else f"Unknown {i}"


def sid(i: int) -> str:
    return f"<a_{i % 4}><b_{i % 3}><c_{i}>"


def write_minionerec(tmp_path, rows_by_split, stem="Industrial_5_2016-10-2018-11"):
    """MiniOneRec's exact CSV layout (list literals of titles, ids and SIDs) + its item.json."""
    (tmp_path / "Industrial.item.json").write_text(json.dumps(
        {str(i): {"title": t, "description": f"A {t.lower()}."} for i, t in enumerate(TITLES)}, indent=4))
    paths = {}
    for split, rows in rows_by_split.items():
        p = tmp_path / f"{stem}.{split}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            for u, hist, target in rows:
                w.writerow([u, str([title(i) for i in hist]) if isinstance(hist, list) else hist, title(target),
                            str(hist) if isinstance(hist, list) else hist, target,
                            str([sid(i) for i in hist]) if isinstance(hist, list) else hist, sid(target)])
        paths[split] = p
    return paths, tmp_path / "Industrial.item.json"


ROWS = {"train": [(0, [1, 2], 3), (0, [1, 2, 3], 4), (1, [5], 6), (2, [7, 8], 9)],
        "valid": [(0, [1, 2, 3, 4], 5), (1, [5, 6], 0)],
        "test": [(0, [1, 2, 3, 4, 5], 6), (3, [9], 2)]}
