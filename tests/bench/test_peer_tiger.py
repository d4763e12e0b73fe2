"""benchmarks/peer_tiger.py without cornac: the user/catalogue cut, the matched learning-rate schedule and the
one counting function both sides are scored by."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semrec.data.dataset import Examples, SeqDataset
from semrec.itemtok.artifact import ItemTokenization
from semrec.training.schedule import warmup_cosine

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peer_tiger  # noqa: E402  (a script of benchmarks/, not a package)


def _dataset(n_users: int = 12, n_items: int = 30) -> tuple[SeqDataset, ItemTokenization]:
    rng = np.random.default_rng(0)
    seqs = [rng.choice(n_items, size=int(rng.integers(4, 9)), replace=False) for _ in range(n_users)]
    users = np.arange(n_users)
    split = {"train": Examples.from_lists(users, [s[:-3] for s in seqs], [s[-3] for s in seqs]),
             "valid": Examples.from_lists(users, [s[:-2] for s in seqs], [s[-2] for s in seqs]),
             "test": Examples.from_lists(users, [s[:-1] for s in seqs], [s[-1] for s in seqs])}
    ds = SeqDataset("syn", pd.DataFrame({"title": [f"item {i}" for i in range(n_items)]}), split,
                    users=pd.DataFrame({"raw_id": [f"u{u}" for u in users]}), protocol="P")
    raw = np.stack([np.arange(n_items) % 4, np.arange(n_items) // 4 % 4, np.arange(n_items) // 16], 1)
    return ds, ItemTokenization.from_raw_codes(raw, [4, 4, 4], scheme="rqkmeans")


def test_user_cut_keeps_each_kept_item_its_codes_and_sequences():
    ds, tok = _dataset()
    feats = np.arange(ds.num_items, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    sp = peer_tiger.load_split(ds, tok, feats, 20, users=5, test_users=3, seed=1)
    kept = sp.test.users
    assert len(kept) == 5 and len(sp.eval_test) == 3 and set(sp.eval_test.users) <= set(kept)
    assert len(sp.items) < ds.num_items  # the catalogue is cut to the kept users' items, renumbered 0..n-1
    assert np.array_equal(sp.tok.raw_codes, tok.raw_codes[sp.items]) and np.array_equal(sp.features, feats[sp.items])
    for e, u in enumerate(kept):  # renumbered rows map back to the dataset's rows
        assert np.array_equal(sp.items[sp.test.history(e)], ds.test.history(u))
        assert sp.items[sp.test.targets[e]] == ds.test.targets[u]
        assert np.array_equal(sp.items[sp.train_seqs[e]], np.append(ds.train.history(u), ds.train.targets[u]))
    assert set(sp.train_examples.users) == set(kept)  # every prefix of the kept users' training sequences
    assert len(sp.train_examples) == sum(len(s) - 1 for s in sp.train_seqs)


@pytest.mark.parametrize("recipe,warmup", [("grid", 0), ("paischer", 10000)])
def test_matched_setting_copies_the_cornac_recipes_learning_rate(recipe, warmup):
    rec = peer_tiger.CORNAC_RECIPES[recipe]
    _, cfg = peer_tiger.semrec_configs("matched", rec, seed=0, epochs=3, total_steps=30000)
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.max_grad_norm) == (
        rec["learning_rate"], rec["weight_decay"], rec["batch_size"], 0.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = warmup_cosine(opt, warmup_steps=cfg.warmup_steps, total_steps=30000, min_lr_ratio=cfg.min_lr_ratio)
    lrs = [cfg.lr * sched.lr_lambdas[0](step) for step in range(30000)]
    if rec["lr_schedule"] == "constant":  # cornac: the lr never moves
        assert set(lrs) == {rec["learning_rate"]}
    else:  # cornac: linear warmup over warmup_steps, then a cosine to 0
        assert max(lrs) == pytest.approx(rec["learning_rate"]) and int(np.argmax(lrs)) == warmup
        assert lrs[-1] < 1e-3 * rec["learning_rate"]


def test_count_matches_a_naive_recall_and_ndcg():
    ds, _ = _dataset()
    test = ds.test
    rng = np.random.default_rng(3)
    items = np.stack([rng.permutation(ds.num_items)[:10] for _ in range(len(test))])
    items[0, 4] = test.targets[0]
    items[1, 0] = test.targets[1]
    items[2, -3:] = -1  # fewer than 10 beams
    got = peer_tiger.count(items, None, test, ds.num_items)
    hits = [np.flatnonzero(row == t) for row, t in zip(items, test.targets)]
    for k in (5, 10):
        rec = np.mean([len(h) > 0 and h[0] < k for h in hits])
        ndcg = np.mean([1 / np.log2(h[0] + 2) if len(h) and h[0] < k else 0.0 for h in hits])
        assert got[f"recall@{k}"] == pytest.approx(rec) and got[f"ndcg@{k}"] == pytest.approx(ndcg)
    assert got["rows_with_fewer_than_10_items"] == 1
    assert got["rows_recommending_a_history_item"] == sum(
        bool(np.isin(r[r >= 0], test.history(e)).any()) for e, r in enumerate(items))


def test_semrec_msl_setting_is_the_semrec_setting_with_msl():
    rec = dict(peer_tiger.CORNAC_RECIPES["grid"], **peer_tiger.SMALL)
    model, cfg = peer_tiger.semrec_configs("semrec", rec, seed=0, epochs=2, total_steps=500)
    model_msl, cfg_msl = peer_tiger.semrec_configs("semrec_msl", rec, seed=0, epochs=2, total_steps=500)
    assert model_msl == model and cfg_msl.msl and not cfg.msl
    cfg_msl.msl = False
    assert cfg_msl == cfg
    with pytest.raises(ValueError, match="unknown semrec setting"):
        peer_tiger.semrec_configs("semrec_mls", rec, seed=0, epochs=2, total_steps=500)
