import json

import numpy as np
import pandas as pd
import pytest
import torch

from semrec.cf import (TEACHERS, BERT4Rec, BERT4RecConfig, CFTeacher, GRU4RecConfig, SASRec,
                       SASRecConfig, evaluate_teacher)
from semrec.cf.sequences import make_windows, merge_user_sequences, training_sequences
from semrec.training.teacher import TeacherTrainConfig, length_batches, train_teacher
from semrec.cli import main
from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError

N = 30
SMALL = {"sasrec": SASRecConfig(hidden=16, heads=2, ffn=32, max_len=8, dropout=0.1),
         "bert4rec": BERT4RecConfig(hidden=16, heads=2, ffn=32, max_len=8, dropout=0.1),
         "gru4rec": GRU4RecConfig(hidden=16, max_len=8, dropout=0.1)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def pattern_examples(n, rng, lo=3, hi=10, user0=0, num_items=N):
    """Sequences where the next item is always item + 1 (mod num_items)."""
    users, hists, targets = [], [], []
    for u in range(n):
        s, length = int(rng.integers(0, num_items)), int(rng.integers(lo, hi))
        seq = [(s + k) % num_items for k in range(length)]
        users.append(user0 + u)
        hists.append(seq[:-1])
        targets.append(seq[-1])
    return Examples.from_lists(users, hists, targets)


def make_dataset(train, valid, test, num_items=N, name="syn"):
    n_users = int(max(e.users.max() for e in (train, valid, test))) + 1
    return SeqDataset(name, pd.DataFrame({"title": [f"item {i}" for i in range(num_items)]}),
                      {"train": train, "valid": valid, "test": test},
                      users=pd.DataFrame({"raw_id": [f"u{i}" for i in range(n_users)]}), protocol="custom")


@pytest.fixture(scope="module")
def pattern_ds():
    rng = np.random.default_rng(0)
    return make_dataset(pattern_examples(240, rng), pattern_examples(60, rng, user0=240),
                        pattern_examples(60, rng, user0=300))


def build(name, seed=0):
    torch.manual_seed(seed)
    return TEACHERS[name](N, SMALL[name]).eval()


def test_registry_names_match_cli():
    from semrec.cli.cf import TEACHER_NAMES

    assert set(TEACHERS) == set(TEACHER_NAMES) == {"sasrec", "bert4rec", "gru4rec"}


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gru4rec"])
def test_logits_shape_padding_invariance_and_roundtrip(name, tmp_path):
    model = build(name)
    ex = Examples.from_lists([0, 1, 2], [[3], [1, 2, 3, 4, 5], [7, 8, 9, 10, 11, 12]], [0, 0, 0])
    h6 = torch.from_numpy(ex.padded_histories(6))
    h20 = torch.from_numpy(ex.padded_histories(20))
    with torch.no_grad():
        a = model.item_logits(h6)
        b = model.item_logits(h20)
        assert a.shape == (3, N) and a.dtype == torch.float32
        assert torch.allclose(a, b, atol=1e-5)  # more left padding changes nothing
        # each row alone (no padding at all) equals the batched row
        for r in range(3):
            alone = torch.tensor([ex.history(r)[-6:].tolist()])
            assert torch.allclose(model.item_logits(alone)[0], a[r], atol=1e-5)
        # lengths: whatever sits before the last lengths[b] columns is ignored
        garbage = h6.clone()
        garbage[0, :-1] = 5
        assert torch.allclose(model.item_logits(garbage, lengths=torch.tensor([1, 5, 6])), a, atol=1e-5)
        # logits are states dotted with the exposed item table
        emb = model.item_embeddings()
        assert emb.shape == (N, model.hidden)
        assert torch.allclose(model.user_states(h6) @ emb.T, a, atol=1e-5)
    model.save_pretrained(tmp_path / "t", extra={"note": "x"})
    loaded = CFTeacher.from_pretrained(tmp_path / "t")
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.item_logits(h6), a)
    assert CFTeacher.read_extra(tmp_path / "t") == {"note": "x"}
    other = SASRec if name != "sasrec" else BERT4Rec
    with pytest.raises(SemrecError, match="holds a"):
        other.from_pretrained(tmp_path / "t")


def test_history_longer_than_max_len_is_truncated():
    for name in ("sasrec", "bert4rec"):
        model = build(name)
        hist = torch.arange(20)[None, :]
        keep = model.history_len()
        with torch.no_grad():
            assert torch.allclose(model.item_logits(hist), model.item_logits(hist[:, -keep:]), atol=1e-5)


def test_sasrec_training_states_equal_inference_on_prefixes():
    model = build("sasrec")
    window = torch.tensor([[-1, -1, 4, 9, 2, 7, 1]])
    with torch.no_grad():
        hidden, targets = model.training_pairs(window)
        assert targets.tolist() == [9, 2, 7, 1]
        for t in range(4):
            prefix = window[:, 2:3 + t]
            assert torch.allclose(hidden[t], model.user_states(prefix)[0], atol=1e-5)


def test_new_items_drops_exactly_the_repeated_targets():
    model = build("sasrec")
    windows = torch.tensor([[-1, 4, 9, 4, 7, 9, 7], [3, 3, 5, 6, 2, 8, 5]])
    with torch.no_grad():
        h_all, t_all = model.training_pairs(windows)
        h_new, t_new = model.training_pairs(windows, new_items=True)
    keep = []  # naive reference: a target is kept unless it occurs among the items before it
    for row in windows.tolist():
        for t in range(1, len(row)):
            if row[t - 1] >= 0:
                keep.append(row[t] not in row[:t])
    keep = torch.tensor(keep)
    assert t_new.tolist() == t_all[keep].tolist() == [9, 7, 5, 6, 2, 8]
    assert torch.equal(h_new, h_all[keep])


def test_new_items_needs_a_next_item_teacher(pattern_ds):
    with pytest.raises(SemrecError, match="new_items needs a next-item teacher"):
        train_teacher(build("bert4rec"), pattern_ds, TeacherTrainConfig(epochs=1, new_items=True, ks=(10,)),
                      progress=False)
    with pytest.raises(SemrecError, match="new_items"):
        build("bert4rec").training_pairs(torch.tensor([[1, 2, 3]]), new_items=True)


def test_new_items_teacher_learns_not_to_repeat():
    """Sequences a, a+1, a+2, a: a plain teacher learns the final repeat; a new-item teacher never sees it as
    a target and ranks the first item read below most items."""
    seqs = [[a, (a + 1) % N, (a + 2) % N, a] for a in range(N) for _ in range(8)]
    ex = Examples.from_lists(list(range(len(seqs))), [s[:-1] for s in seqs], [s[-1] for s in seqs])
    ds = make_dataset(ex, ex, ex)
    hist = torch.tensor([s[:-1] for s in seqs[::8]])
    ranks, targets = {}, {}
    for new_items in (False, True):
        model = build("sasrec")
        res = train_teacher(model, ds, TeacherTrainConfig(epochs=8, batch_size=16, lr=0.005, ks=(10,), patience=10,
                                                          new_items=new_items), progress=False)
        targets[new_items] = res.num_targets
        with torch.no_grad():
            logits = model.eval().item_logits(hist)
        first = logits.gather(1, hist[:, :1])[:, 0]
        ranks[new_items] = float((logits > first[:, None]).sum(1).float().mean())
    assert ranks[False] < 3 < ranks[True] - 2
    assert (targets[False], targets[True]) == (3 * len(seqs), 2 * len(seqs))  # the repeats were not trained on


def test_bert4rec_masks_only_real_positions():
    model = build("bert4rec").train()
    g = torch.Generator().manual_seed(0)
    windows = torch.tensor([[-1, -1, -1, 3, 4, 5, 6, 7], [-1, -1, -1, -1, -1, -1, -1, 9]])
    seen = []
    for _ in range(20):
        hidden, targets = model.training_pairs(windows, g)
        assert hidden.shape == (len(targets), model.hidden)
        seen += targets.tolist()
    assert set(seen) <= {3, 4, 5, 6, 7, 9} and 9 in seen  # never padding; 1-item windows still trained


def test_bad_inputs():
    model = build("sasrec")
    with pytest.raises(SemrecError, match="outside"):
        model.item_logits(torch.tensor([[1, N]]))
    with pytest.raises(SemrecError, match=r"\(B, L\)"):
        model.item_logits(torch.tensor([1, 2]))
    with pytest.raises(SemrecError, match="not a CF teacher"):
        CFTeacher.from_pretrained("/nonexistent/teacher")


def test_windows_cover_every_target_once():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 100, size=n) for n in (1, 2, 5, 9, 10, 23)]
    w = make_windows(seqs, 5, 1)  # next-item windows: targets are window[1:] after a real input
    got = sorted(w[:, 1:][(w[:, :-1] >= 0) & (w[:, 1:] >= 0)].tolist())
    assert got == sorted(x for s in seqs for x in s[1:].tolist())
    w0 = make_windows(seqs, 4, 0)  # cloze windows: every item once
    assert sorted(w0[w0 >= 0].tolist()) == sorted(x for s in seqs for x in s.tolist())
    # windows keep order and are left-padded
    assert make_windows([np.array([1, 2, 3])], 5, 1).tolist() == [[-1, -1, 1, 2, 3]]


def test_merge_user_sequences_and_length_batches():
    seqs = [np.array([1, 2]), np.array([1, 2, 3]), np.array([1, 2]), np.array([5, 6]),
            np.array([10, 11, 12, 13, 14, 15, 16]), np.array([13, 14, 15, 16, 17, 18]),  # overlap 4 -> chained
            np.array([20, 21, 22]), np.array([21, 22, 23])]  # overlap 2 < min_overlap -> kept apart
    users = np.array([0, 0, 1, 0, 2, 2, 3, 3])
    kept, ku = merge_user_sequences(seqs, users, min_overlap=3)
    got = sorted(zip(ku.tolist(), [s.tolist() for s in kept]))
    assert got == [(0, [1, 2, 3]), (0, [5, 6]), (1, [1, 2]), (2, list(range(10, 19))),
                   (3, [20, 21, 22]), (3, [21, 22, 23])]
    lengths = np.array([1, 5, 2, 2, 9, 1, 3, 4])
    batches = length_batches(lengths, 2, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))


def test_protocol_p_trains_on_seq_minus_two():
    """Leave-one-out: the teacher's sequences are seq[:-2]; valid adds seq[-2]; seq[-1] never."""
    seqs = {0: [1, 2, 3, 4, 5], 1: [6, 7, 8, 9, 10, 11]}
    split = {k: Examples.from_lists(list(seqs), [s[:-i] for s in seqs.values()], [s[-i] for s in seqs.values()])
             for k, i in (("test", 1), ("valid", 2), ("train", 3))}
    ds = make_dataset(split["train"], split["valid"], split["test"], num_items=12)
    got, _ = training_sequences(ds)
    assert [s.tolist() for s in got] == [s[:-2] for s in seqs.values()]
    got, _ = training_sequences(ds, include_valid=True)
    assert [s.tolist() for s in got] == [s[:-1] for s in seqs.values()]


def leak_dataset():
    """Valid and test targets are items that occur nowhere else (ids 30..39 and 40..49)."""
    rng = np.random.default_rng(2)
    train = pattern_examples(60, rng)
    valid = pattern_examples(10, rng, user0=60)
    test = pattern_examples(10, rng, user0=70)
    valid.targets = np.arange(30, 40)
    test.targets = np.arange(40, 50)
    return make_dataset(train, valid, test, num_items=50)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_trainer_never_sees_test_or_selection_targets(name):
    ds = leak_dataset()
    for include_valid in (False, True):
        seen = set()
        model = TEACHERS[name](50, SMALL[name])
        train_teacher(model, ds, TeacherTrainConfig(epochs=2, batch_size=16, include_valid=include_valid, ks=(10,)),
                      progress=False, on_batch=lambda w: seen.update(w[w >= 0].tolist()))
        assert seen and not seen & set(range(40, 50))  # no test target, ever
        assert bool(seen & set(range(30, 40))) == include_valid  # valid targets only when asked


@pytest.mark.parametrize("name,loss,epochs", [("sasrec", "ce", 4), ("sasrec", "bce", 4),
                                             ("bert4rec", "ce", 8), ("gru4rec", "ce", 4)])
def test_training_reduces_loss(pattern_ds, name, loss, epochs):
    model = TEACHERS[name](N, SMALL[name])
    res = train_teacher(model, pattern_ds, TeacherTrainConfig(epochs=epochs, batch_size=16, lr=0.005, loss=loss,
                                                       num_negatives=2, ks=(10,), patience=10), progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.8 * losses[0]


def test_sasrec_learns_next_item_pattern(pattern_ds):
    model = TEACHERS["sasrec"](N, SASRecConfig(hidden=32, heads=2, ffn=64, max_len=8, dropout=0.1))
    res = train_teacher(model, pattern_ds, TeacherTrainConfig(epochs=12, batch_size=16, lr=0.005, ks=(1, 10)),
                        progress=False)
    assert evaluate_teacher(model, pattern_ds.test, ks=(1,))["hr@1"] > 0.9
    assert res.best_valid["hr@1"] > 0.9
    # early stopping restored the best epoch's weights
    assert evaluate_teacher(model, pattern_ds.valid, ks=(1, 10)) == pytest.approx(res.best_valid)


def test_resume_after_interruption_matches_uninterrupted(pattern_ds, tmp_path):
    cfg = TeacherTrainConfig(epochs=3, batch_size=32, lr=0.005, ks=(10,), patience=10)
    ref = build("sasrec", seed=1).train()
    train_teacher(ref, pattern_ds, cfg, progress=False)

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def interrupt(_w):
        calls["n"] += 1
        if calls["n"] == 12:  # in the second epoch
            raise Stop

    first = build("sasrec", seed=1).train()
    with pytest.raises(Stop):
        train_teacher(first, pattern_ds, cfg, progress=False, checkpoint_dir=tmp_path / "ck", on_batch=interrupt)
    resumed = build("sasrec", seed=1).train()
    res = train_teacher(resumed, pattern_ds, cfg, progress=False, checkpoint_dir=tmp_path / "ck")
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    logged = [json.loads(x) for x in (tmp_path / "ck" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2, 3]  # the interrupted epoch's record is not repeated
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    with pytest.raises(SemrecError, match="another model/data/config"):
        train_teacher(build("sasrec"), pattern_ds, TeacherTrainConfig(epochs=4, ks=(10,)), progress=False,
                      checkpoint_dir=tmp_path / "ck")
    # the checkpoint layout before the shared training loop (last/meta.json) is refused in one line
    (tmp_path / "old" / "last").mkdir(parents=True)
    (tmp_path / "old" / "last" / "meta.json").write_text("{}")
    with pytest.raises(SemrecError, match="earlier semrec version") as e:
        train_teacher(build("sasrec"), pattern_ds, cfg, progress=False, checkpoint_dir=tmp_path / "old")
    assert "\n" not in str(e.value)


def test_cli_train_and_eval(pattern_ds, tmp_path, capsys):
    data = pattern_ds.save_pretrained(tmp_path / "data")
    out = tmp_path / "teacher"
    rc = main(["train-cf", "--data", str(data), "--model", "gru4rec", "--out", str(out), "--no-progress",
               "--set", "epochs=2", "--set", "model.hidden=16", "--set", "train.batch_size=32", "--seed", "3"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "metrics.json", "train_log.jsonl"}
    assert not any(p.name.startswith(".teacher") for p in tmp_path.iterdir())  # no temp/partial left
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["epochs_run"] == 2 and "ndcg@10" in metrics["test"]
    capsys.readouterr()
    assert main(["eval-cf", "--teacher", str(out), "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"] == pytest.approx(metrics["test"])
    assert main(["train-cf", "--data", str(data), "--model", "gru4rec", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    # final test-time teacher: same config, train + valid rows, the selection run's best epoch count
    assert main(["train-cf", "--data", str(data), "--refit-from", str(out), "--out", str(tmp_path / "final"),
                 "--no-progress"]) == 0
    final = json.loads((tmp_path / "final" / "metrics.json").read_text())
    assert final["valid_seen_in_training"] and final["epochs_run"] == metrics["best_epoch"]
    assert final["train_data"]["splits_used"] == ["train", "valid"] and final["seed"] == 3
    assert CFTeacher.from_pretrained(tmp_path / "final").config.hidden == 16


@pytest.mark.parametrize("args,message", [
    (["--model", "sasrek"], "unknown CF teacher 'sasrek'"),
    (["--model", "sasrec", "--set", "model.hiden=3"], "unknown key 'hiden'"),
    (["--model", "sasrec", "--set", "epochz=3"], "unknown key 'epochz'"),
    (["--model", "sasrec", "--set", "train.loss=hinge"], "expected one of"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    rc = main(["train-cf", "--data", "toys-t", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_bad_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: 0.01\n  warmup: 3\n")
    rc = main(["train-cf", "--data", "toys-t", "--model", "sasrec", "--config", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown key 'warmup'" in err and len(err.strip().splitlines()) == 1


def test_target_in_history_flags_each_repeat_row():
    from semrec.cf import target_in_history, target_in_history_rate

    ex = Examples.from_lists([0, 1, 2, 3], [[3, 4], [5], [6, 7, 8], []], [4, 6, 6, 1])
    assert target_in_history(ex).tolist() == [True, False, True, False]
    assert target_in_history_rate(ex) == 0.5
    assert target_in_history(ex.subset(np.arange(0))).shape == (0,) and target_in_history_rate(ex.subset(np.arange(0))) == 0.0


def test_top_lists_without_the_history_equal_a_naive_ranking():
    """teacher_top_lists(exclude_history=True): each row's k best items it has not read, whole history removed
    (also items older than the teacher's window), in score order; agrees with teacher_ranks' exclusion."""
    from semrec.cf.evaluate import teacher_ranks, teacher_top_lists

    model = build("sasrec")
    rng = np.random.default_rng(4)
    ex = pattern_examples(25, rng, lo=2, hi=14)  # some histories longer than max_len 8
    kept = teacher_top_lists(model, ex, 5)
    lists = teacher_top_lists(model, ex, 5, exclude_history=True, batch_size=7)
    with torch.no_grad():
        scores = model.item_logits(torch.from_numpy(ex.padded_histories(8)))
    for r in range(len(ex)):
        seen = set(ex.history(r).tolist())
        want = sorted((i for i in range(N) if i not in seen), key=lambda i: -float(scores[r, i]))[:5]
        assert lists[r].tolist() == want
        assert kept[r].tolist() == scores[r].topk(5).indices.tolist()
    assert any(set(kept[r].tolist()) & set(ex.history(r).tolist()) for r in range(len(ex)))
    # a row whose target is its best unread item has rank 1 in the excluded ranking
    ranks = teacher_ranks(model, Examples.from_lists(ex.users, [ex.history(r) for r in range(len(ex))],
                                                     lists[:, 0].numpy()), exclude_history=True)
    assert (ranks == 1).all()
