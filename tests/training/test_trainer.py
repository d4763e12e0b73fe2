"""The generative trainer: learning, loss equivalences, teacher sources, accumulation, exact resume."""

import json

import numpy as np
import pytest
import torch
from helpers.generative import LLAMA_TINY, TIGER_TINY, examples, semantic_ids, titles

import semrec.training.trainer as trainer_mod
from semrec.cf import SASRec, SASRecConfig
from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable
from semrec.models import build_model, load_model
from semrec.training import TrainConfig, Trainer, precompute_teacher_logits, token_loss

torch.set_num_threads(1)
N = 50
TOK = semantic_ids(N)
TRAIN = examples(96, N, seed=0)
VALID = examples(32, N, seed=1)
FAST = dict(batch_size=32, lr=5e-3, warmup_steps=2, progress=False, num_beams=10, eval_batch_size=32)


def teacher(seed=0):
    torch.manual_seed(seed)
    return SASRec(N, SASRecConfig(hidden=16, layers=1, heads=1, ffn=32, max_len=8)).eval()


def weights(model):
    return {k: v.detach().clone() for k, v in model.hf.state_dict().items()}


def assert_same_weights(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_training_learns_and_writes_logs_best_model_and_checkpoint(tmp_path):
    model = build_model("tiger", TOK, TIGER_TINY, seed=0)
    cfg = TrainConfig(epochs=3, **FAST, log_every=2, monitor="hr@10")
    res = Trainer(model, cfg, TRAIN, valid=VALID, out_dir=tmp_path).fit()
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0] - 0.5
    assert res.epochs_run == 3 and res.steps == 9 and res.best_epoch is not None
    best = max(h["valid_hr@10"] for h in res.history)
    assert res.best_metric == best
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [0, 1, 2]
    assert any(r["kind"] == "train" for r in recs)
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4
    loaded = load_model(res.best_dir)
    assert loaded.training_info["loss"] == "ntp" and loaded.training_info["best_epoch"] == res.best_epoch
    assert_same_weights(weights(loaded), weights(model))  # the trainer hands back the best epoch's weights
    assert (tmp_path / "checkpoints" / "last" / "optimizer.safetensors").is_file()


def _train(loss, seed=0, **kw):
    model = build_model("tiger", TOK, TIGER_TINY, seed=seed)
    t = kw.pop("teacher_obj", None)
    cfg = TrainConfig(epochs=2, **FAST, loss=loss, seed=seed, **kw)
    Trainer(model, cfg, TRAIN, teacher=t, teacher_logits=kw.get("teacher_logits")).fit()
    return weights(model)


def test_tca_with_alpha_zero_trains_exactly_like_ntp():
    ntp = _train("ntp")
    tca = _train("tca", alpha=0.0, teacher_obj=teacher())
    assert_same_weights(ntp, tca)
    tca_on = _train("tca", alpha=0.5, teacher_obj=teacher())
    assert not torch.equal(ntp["shared.weight"], tca_on["shared.weight"])


def test_precomputed_teacher_logits_equal_on_the_fly():
    t = teacher()
    pre = precompute_teacher_logits(t, TRAIN, batch_size=40)
    with torch.no_grad():
        ref = t.item_logits(ExampleTable.from_examples(TRAIN, 8).histories).numpy()
    np.testing.assert_allclose(pre, ref, rtol=1e-6, atol=1e-6)
    model_a = build_model("tiger", TOK, TIGER_TINY, seed=0)
    model_b = build_model("tiger", TOK, TIGER_TINY, seed=0)
    cfg = TrainConfig(epochs=1, **FAST, loss="tca", alpha=0.3)
    Trainer(model_a, cfg, TRAIN, teacher=t).fit()
    Trainer(model_b, cfg, TRAIN, teacher_logits=pre).fit()
    assert_same_weights(weights(model_a), weights(model_b), exact=False)
    with pytest.raises(SemrecError, match="rows"):
        Trainer(model_b, cfg, TRAIN, teacher_logits=pre[:10])


def test_gradient_accumulation_matches_a_larger_batch():
    cfg_tiny = dict(TIGER_TINY, dropout=0.0)
    a = build_model("tiger", TOK, cfg_tiny, seed=0)
    b = build_model("tiger", TOK, cfg_tiny, seed=0)
    fast = dict(FAST, batch_size=16)
    Trainer(a, TrainConfig(epochs=1, **fast), TRAIN).fit()
    Trainer(b, TrainConfig(epochs=1, **dict(fast, batch_size=8), grad_accum=2), TRAIN).fit()
    assert_same_weights(weights(a), weights(b), exact=False)


def test_resume_after_interruption_ends_with_the_same_model(tmp_path, monkeypatch):
    t = teacher()
    cfg = TrainConfig(epochs=2, **FAST, loss="tca", alpha=0.2, monitor="ndcg@5")
    straight = build_model("tiger", TOK, TIGER_TINY, seed=0)
    res_a = Trainer(straight, cfg, TRAIN, valid=VALID, teacher=t, out_dir=tmp_path / "a").fit()

    calls = {"n": 0}
    real = trainer_mod.token_loss

    def crash_in_second_epoch(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:  # 3 batches per epoch: the 2nd batch of epoch 2
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(trainer_mod, "token_loss", crash_in_second_epoch)
    first = build_model("tiger", TOK, TIGER_TINY, seed=0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(first, cfg, TRAIN, valid=VALID, teacher=t, out_dir=tmp_path / "b").fit()
    monkeypatch.setattr(trainer_mod, "token_loss", real)
    resumed = build_model("tiger", TOK, TIGER_TINY, seed=123)  # different init: everything comes from the checkpoint
    res_b = Trainer(resumed, cfg, TRAIN, valid=VALID, teacher=t, out_dir=tmp_path / "b").fit()

    assert res_b.epochs_run == 2 and res_b.steps == res_a.steps
    assert_same_weights(weights(straight), weights(resumed))
    last_a = load_model(tmp_path / "a" / "checkpoints" / "last" / "model")
    last_b = load_model(tmp_path / "b" / "checkpoints" / "last" / "model")
    assert_same_weights(weights(last_a), weights(last_b))
    strip = lambda h: [{k: v for k, v in r.items() if "wall_time" not in k} for r in h]  # noqa: E731
    assert strip(res_a.history) == strip(res_b.history)
    # a changed config is refused instead of silently mixing two runs
    with pytest.raises(SemrecError, match="cannot resume"):
        Trainer(resumed, TrainConfig(epochs=3, **dict(FAST, lr=1e-3)), TRAIN, out_dir=tmp_path / "b").fit()
    other = build_model("tiger", semantic_ids(N, seed=9), TIGER_TINY, seed=0)
    with pytest.raises(SemrecError, match="another item tokenization"):
        Trainer(other, cfg, TRAIN, teacher=t, out_dir=tmp_path / "b").fit()


@pytest.mark.parametrize("loss,msl", [("aux_kl", False), ("label_smoothing", True), ("tca", True), ("ntp", True)])
def test_other_losses_and_msl_train_a_decoder_on_titles(loss, msl):
    tok = titles(40)
    model = build_model("decoder", tok, LLAMA_TINY, seed=0)
    t = SASRec(40, SASRecConfig(hidden=16, layers=1, heads=1, ffn=32, max_len=8))
    tr = examples(64, 40, seed=0)
    cfg = TrainConfig(epochs=2, **FAST, loss=loss, msl=msl, tau=2.0 if msl else 1.0, train_eos=False)
    res = Trainer(model, cfg, tr, teacher=t).fit()
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_every_item_loss_and_adafactor_train_a_decoder_differently_from_the_defaults():
    """`item_loss: every` adds the history items' loss to the same step (so the weights differ from the
    target-only run), with TCA too; Adafactor is a different optimizer on the same batches."""
    runs = {}
    for name, mcfg, tcfg in (("last", {}, {}), ("every", {"item_loss": "every"}, {}),
                             ("adafactor", {}, {"optimizer": "adafactor", "lr": 1e-2})):
        model = build_model("decoder", TOK, dict(LLAMA_TINY, **mcfg), seed=0)
        res = Trainer(model, TrainConfig(epochs=2, **{**FAST, **tcfg}, loss="tca"), TRAIN, teacher=teacher()).fit()
        assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
        runs[name] = (weights(model), res.history[-1]["train_loss"])
    assert runs["every"][1] > runs["last"][1]  # the extra term is a positive loss on top
    for other in ("every", "adafactor"):
        assert any(not torch.equal(runs["last"][0][k], runs[other][0][k]) for k in runs["last"][0])


def test_msl_loss_only_sees_trie_allowed_tokens():
    model = build_model("tiger", TOK, TIGER_TINY, seed=0)
    table = ExampleTable.from_examples(TRAIN, 8)
    batch = model.collate(table, torch.arange(8))
    logits = model(batch).detach()
    index = model.prefix_index()
    cfg = TrainConfig(msl=True)
    base = token_loss(cfg, logits, batch.labels, batch.target_tokens, index=index)
    allowed = torch.stack([index.allowed_tokens_mask(batch.target_tokens[:, :j]) for j in range(TOK.codes.shape[1])], 1)
    # changing logits of disallowed tokens leaves the MSL loss unchanged; the plain NTP loss moves
    noisy = logits + 5.0 * (~allowed) * torch.randn_like(logits)
    torch.testing.assert_close(token_loss(cfg, noisy, batch.labels, batch.target_tokens, index=index), base)
    plain = TrainConfig()
    assert not torch.isclose(token_loss(plain, noisy, batch.labels, batch.target_tokens),
                             token_loss(plain, logits, batch.labels, batch.target_tokens))


def test_configuration_errors_are_one_line():
    model = build_model("tiger", TOK, TIGER_TINY, seed=0)
    with pytest.raises(SemrecError, match="needs a CF teacher"):
        Trainer(model, TrainConfig(loss="tca"), TRAIN)
    with pytest.raises(SemrecError, match="items"):
        Trainer(model, TrainConfig(loss="tca"), TRAIN, teacher_logits=np.zeros((len(TRAIN), N + 1), np.float32))
    with pytest.raises(SemrecError, match="monitor"):
        Trainer(model, TrainConfig(epochs=1, **FAST, monitor="hr@99"), TRAIN, valid=VALID).fit()
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(alpha=2.0)


def test_cf_exclude_history_gives_the_loss_no_teacher_score_on_history_items(monkeypatch):
    """With the option the loss sees the teacher's scores with -inf exactly at each row's history items
    (every item the trainer keeps for the model or the teacher); without it the scores themselves."""
    real, seen = trainer_mod.token_loss, []

    def capture(cfg, logits, labels, targets, *, item_logits=None, **kw):
        seen.append(item_logits.clone())
        return real(cfg, logits, labels, targets, item_logits=item_logits, **kw)

    monkeypatch.setattr(trainer_mod, "token_loss", capture)
    t = teacher().eval()
    table = ExampleTable.from_examples(TRAIN, max(TIGER_TINY["max_history"], t.max_len))
    with torch.no_grad():
        full = t.item_logits(table.histories).float()
    runs = {}
    for exclude in (False, True):
        seen.clear()
        model = build_model("tiger", TOK, TIGER_TINY, seed=0)
        cfg = TrainConfig(epochs=1, **dict(FAST, batch_size=96), loss="tca", alpha=0.5, cf_exclude_history=exclude)
        Trainer(model, cfg, TRAIN, teacher=t).fit()
        (runs[exclude],) = seen  # one batch of all 96 rows, shuffled the same way in both runs
    # which table row each batch row is: the plain run's scores are the teacher's on that row's history
    order = [int(torch.nonzero(torch.isclose(full, row[None]).all(1)).flatten()[0]) for row in runs[False]]
    torch.testing.assert_close(runs[False], full[order])
    ref = full[order].clone()
    for b, r in enumerate(order):
        for i in table.histories[r].tolist():
            if i >= 0:
                ref[b, i] = float("-inf")
    assert torch.equal(runs[True], ref) and bool(ref.isinf().any())


def test_valid_rows_new_items_validates_on_the_rows_whose_target_is_not_in_the_history():
    from semrec.data.dataset import Examples
    from semrec.evaluation import evaluate
    from semrec.training.trainer import new_item_rows

    off = VALID.hist_offsets
    repeat = np.array([VALID.targets[i] in VALID.hist_items[off[i]:off[i + 1]] for i in range(len(VALID))])
    assert 0 < repeat.sum() < len(VALID)
    sub = new_item_rows(VALID)
    assert np.array_equal(sub.targets, VALID.targets[~repeat]) and np.array_equal(sub.users, VALID.users[~repeat])
    table = new_item_rows(ExampleTable.from_examples(VALID, 8))  # every history fits in 8 columns
    assert torch.equal(table.targets, torch.from_numpy(VALID.targets[~repeat]))

    model = build_model("tiger", TOK, TIGER_TINY, seed=0)
    res = Trainer(model, TrainConfig(epochs=1, **FAST, monitor="hr@10", valid_rows="new_items"), TRAIN,
                  valid=VALID).fit()
    assert res.best_metric == evaluate(model, sub, num_beams=10, batch_size=32)["hr@10"]
    with pytest.raises(SemrecError, match="valid_rows 'new_items': every valid row's target is in its history"):
        new_item_rows(Examples.from_lists([0, 1], [[3, 4], [5]], [4, 5]))


def test_validation_cc_follows_a_teacher_scored_without_the_history():
    """With `teacher_exclude_history` the per-epoch valid CC is the evaluation's: against the teacher's best item
    among those the row has not read, the whole history (longer than the teacher's window here) left out."""
    from semrec.evaluation import generate

    valid = examples(48, N, seed=3, max_len=30)
    cfg = TrainConfig(epochs=1, **FAST, monitor="hr@10")  # NTP: the teacher only scores the validation

    def trained(teacher_=None, exclude=False):
        model = build_model("tiger", TOK, TIGER_TINY, seed=0)
        return model, Trainer(model, cfg, TRAIN, valid=valid, teacher=teacher_, teacher_exclude_history=exclude).fit()

    model, _ = trained()
    table = ExampleTable.from_examples(valid, 30)
    top1 = generate(model, table, num_beams=10)["items"][:, 0]
    fav = int(torch.mode(top1).values)  # the student's most frequent first item
    t = teacher()

    def repeat_then_fav(histories, lengths=None):  # (B, L) left-padded -> the last item read first, then `fav`
        logits = torch.zeros(len(histories), N)
        logits[:, fav] = 1.0
        logits[torch.arange(len(histories)), histories[:, -1]] = 2.0
        return logits

    t.item_logits = repeat_then_fav
    read = [set(table.histories[r][table.histories[r] >= 0].tolist()) for r in range(len(table))]
    last = table.histories[:, -1]
    plain = float((top1 == last).float().mean())
    excluded = np.mean([int(top1[r]) == fav and fav not in read[r] for r in range(len(table))])
    assert plain < excluded
    window = [set(table.histories[r, -t.max_len:].tolist()) for r in range(len(table))]
    assert any(fav in read[r] and fav not in window[r] for r in range(len(table)))  # read before the window
    for exclude, want in ((False, plain), (True, excluded)):
        _, res = trained(t, exclude)
        assert res.history[-1]["valid_cc"] == pytest.approx(want)
