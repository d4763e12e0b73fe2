"""benchmarks/teacher_repeats.py: the figures against plain per-row references, the table and its errors."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.generative import examples

from semrec.cf import SASRec, SASRecConfig, evaluate_teacher
from semrec.data import load_builtin
from semrec.data.dataset import Examples
from semrec.itemtok.artifact import ItemTokenization
from semrec.tca import CollaborativeTokenizer, exclude_history

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import teacher_repeats as tr  # noqa: E402  (a script of benchmarks/, not a package)

torch.set_num_threads(1)
N = 30


def _teacher():
    torch.manual_seed(0)
    return SASRec(N, SASRecConfig(hidden=16, layers=1, heads=1, ffn=32, max_len=4)).eval()


def _examples():
    ex = examples(50, N, seed=3, max_len=7)
    # repeats: some targets are the last history item, some an earlier one
    hists = [list(h) for h in ex.histories()]
    targets = [h[-1] if i % 5 == 0 else (h[0] if i % 7 == 0 else t) for i, (h, t) in enumerate(zip(hists, ex.targets))]
    return Examples.from_lists(ex.users, hists, targets)


def _first_codes() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 4, (N,), generator=g) + 7  # tokens of 4 first codes behind some offset


def test_figures_match_a_plain_loop_over_rows():
    t, ex, first = _teacher(), _examples(), _first_codes()
    got = tr.split_figures(t, ex, first)
    top1_last = mass = in_hist = is_last = shares = code_mass = code_mass_removed = 0.0
    for h, target in zip(ex.histories(), ex.targets):
        read = [int(i) for i in h[-t.max_len:]]  # the items the teacher reads
        with torch.no_grad():
            logits = t.item_logits(torch.tensor([read]))[0].float()
        p = torch.softmax(logits, 0)
        top1_last += int(logits.argmax()) == read[-1]
        mass += float(p[sorted(set(read))].sum())
        in_hist += int(target) in set(h.tolist())
        is_last += int(target) == int(h[-1])
        same = first == first[int(target)]
        shares += bool(same[read[-1]])
        code_mass += float(p[same].sum())
        unseen = torch.ones(N, dtype=torch.bool)
        unseen[read] = False
        code_mass_removed += float(torch.softmax(logits.masked_fill(~unseen, float("-inf")), 0)[same].sum())
    n = len(ex)
    assert got["top1_is_last"] == pytest.approx(top1_last / n)
    assert got["mass_on_history"] == pytest.approx(mass / n, rel=1e-5)
    assert got["last_shares_first_code"] == pytest.approx(shares / n)
    assert got["first_code_mass"] == pytest.approx(code_mass / n, rel=1e-5)
    assert got["first_code_mass_history_removed"] == pytest.approx(code_mass_removed / n, rel=1e-5)
    assert got["first_code_mass_history_removed"] != pytest.approx(got["first_code_mass"])
    assert got["target_in_history"] == pytest.approx(in_hist / n) and got["target_is_last"] == pytest.approx(is_last / n)
    assert 0 < got["target_is_last"] <= got["target_in_history"]
    kept, removed = evaluate_teacher(t, ex, ks=(10,)), evaluate_teacher(t, ex, ks=(10,), exclude_history=True)
    assert got["hr@10"] == kept["hr@10"] and got["ndcg@10_history_removed"] == removed["ndcg@10"]


def test_table_lists_every_split_with_mean_and_std():
    fig = {f: {"mean": 0.25, "std": 0.01} for f in tr.FIGURES}
    meta = {"commit": "c", "machine": "m", "seeds": [0, 1],
            "datasets": [{"dataset": "office-t", "results": "benchmarks/results/x.json",
                          "splits": {"train": {"rows": 100, **fig, "mostpop": {"hr@10": 0.02, "ndcg@10": 0.01}},
                                     "test": {"rows": 10, **fig, "mostpop": {"hr@10": 0.03, "ndcg@10": 0.015}}}}]}
    md = tr.markdown(meta)
    assert "| train | 100 | " + " | ".join(["0.250 ± 0.010"] * len(tr.FIGURES)) + " |" in md
    assert "| test | 10 |" in md and "--run RUN_DIR x --seeds 0 1" in md
    assert "HR@10 / NDCG@10: train 0.020 / 0.010, test 0.030 / 0.015" in md


def test_a_missing_run_is_one_line_and_exit_2(capsys, tmp_path):
    assert tr.main(["--run", str(tmp_path / "absent"), "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run directory" in err[0]


def test_first_code_mass_is_what_the_collaborative_tokenizer_hands_the_first_position():
    t, ex = _teacher(), _examples()
    g = torch.Generator().manual_seed(2)
    raw = torch.stack([torch.randint(0, 4, (N,), generator=g), torch.arange(N)], 1).numpy()
    tok = ItemTokenization.from_raw_codes(raw, [4, N], scheme="test")
    first = tok.codes[:, 0]
    ct = CollaborativeTokenizer(tok.prefix_index())
    hist = torch.from_numpy(ex.padded_histories(t.history_len(), pad=-1, side="left"))
    with torch.no_grad():
        logits = t.item_logits(hist).float()
    targets = tok.codes[torch.as_tensor(ex.targets)]
    for scores, name in ((logits, "first_code_mass"), (exclude_history(logits, hist), "first_code_mass_history_removed")):
        dist = ct(scores, targets)  # (B, L, V)
        want = float(dist[torch.arange(len(ex)), 0, targets[:, 0]].mean())
        assert tr.first_code_figures(t, ex, first)[name] == pytest.approx(want, rel=1e-5)


def test_mostpop_figures_match_a_plain_count():
    ds = load_builtin("office-t")
    ex = ds.test.subset(np.arange(300))
    counts = np.bincount(np.asarray(ds.train.targets), minlength=ds.num_items)  # protocol T: the rows' targets
    top = sorted(range(ds.num_items), key=lambda i: (-counts[i], i))[:10]
    hits = [top.index(int(t)) + 1 if int(t) in top else 0 for t in ex.targets]
    got = tr.mostpop_figures(ds, ex)
    assert got["hr@10"] == pytest.approx(np.mean([h > 0 for h in hits]))
    assert got["ndcg@10"] == pytest.approx(np.mean([1 / np.log2(h + 1) if h else 0.0 for h in hits]))
