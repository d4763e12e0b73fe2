"""Generative models: batching, teacher forcing vs cached decoding, save/load round trips, tokenization checks."""

import numpy as np
import pytest
import torch
from helpers.generative import GPT2_TINY, LLAMA_GQA, LLAMA_TINY, TIGER_TINY, examples, semantic_ids, titles

from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable, training_examples
from semrec.models import MODELS, build_model, load_model
from semrec.models.batching import compact, history_tokens

torch.set_num_threads(1)

CONFIGS = [("tiger", TIGER_TINY), ("decoder", LLAMA_TINY), ("decoder", LLAMA_GQA), ("decoder", GPT2_TINY)]


def test_compact_and_history_tokens_match_a_python_reference():
    tok = titles(20)
    codes, pad = tok.codes, tok.pad_id
    hist = torch.tensor([[-1, -1, 3, 7], [5, 0, 19, 2], [-1, -1, -1, 11]])
    for side in ("left", "right"):
        ids, mask = history_tokens(codes, pad, hist, side=side)
        for r in range(len(hist)):
            ref = [t for i in hist[r].tolist() if i >= 0 for t in codes[i].tolist() if t != pad]
            got = ids[r][mask[r].bool()].tolist()
            assert got == ref
            assert mask[r].sum() == len(ref)
            width = ids.shape[1]
            if side == "left":
                assert mask[r].tolist() == [0] * (width - len(ref)) + [1] * len(ref)
            else:
                assert mask[r].tolist() == [1] * len(ref) + [0] * (width - len(ref))
            assert (ids[r][~mask[r].bool()] == pad).all()
    t, k = compact(torch.tensor([[1, 2, 3]]), torch.tensor([[False, True, False]]), side="right")
    assert t.tolist() == [[2]] and k.tolist() == [[True]]


def test_collate_tiger_and_decoder_inputs():
    tok = semantic_ids(30)
    ex = Examples.from_lists([4, 9], [[1, 2, 3], [7]], [5, 6])
    tiger = build_model("tiger", tok, dict(TIGER_TINY, max_history=2, user_buckets=8), seed=0)
    table = ExampleTable.from_examples(ex, 6)
    b = tiger.collate(table, torch.arange(2))
    c = tok.codes
    # user token, then codes of the 2 most recent items, right-padded
    assert b.input_ids[0, 0] >= tiger.extra_base and b.input_ids[0, 0] < tiger.vocab_size
    assert b.input_ids[0, 1:].tolist() == c[2].tolist() + c[3].tolist()
    assert b.input_ids[1, 1:5].tolist() == c[7].tolist() and b.attention_mask[1].tolist() == [1] * 5 + [0] * 4
    assert b.labels.tolist() == c[[5, 6]].tolist()  # fixed length: every position trained
    assert b.histories.tolist() == [[-1, -1, -1, 1, 2, 3], [-1] * 5 + [7]]  # full history kept for the teacher
    dec = build_model("decoder", tok, dict(LLAMA_TINY, max_history=2), seed=0)
    d = dec.collate(table, torch.arange(2))
    assert d.input_ids[1].tolist() == [tok.pad_id] * 4 + [dec.start_id] + c[7].tolist()
    assert d.attention_mask[1].tolist() == [0] * 4 + [1] * 5
    # title scheme: padding never trained, EOS optionally not trained
    tt = titles(20)
    m = build_model("tiger", tt, TIGER_TINY, seed=0)
    tab = ExampleTable.from_examples(Examples.from_lists([0] * 20, [[i] for i in range(20)], list(range(20))), 6)
    lab = m.collate(tab, torch.arange(20)).labels
    assert ((lab == -100) == (tt.codes == tt.pad_id)).all()
    lab2 = m.collate(tab, torch.arange(20), train_eos=False).labels
    assert ((lab2 == -100) == ((tt.codes == tt.pad_id) | (tt.codes == tt.eos_id))).all()


@pytest.mark.parametrize("name,cfg", CONFIGS)
def test_teacher_forcing_equals_cached_decoding(name, cfg):
    """forward() logits at position j equal prefill/step logits after feeding the target's first j tokens."""
    tok = titles(40)
    model = build_model(name, tok, cfg, seed=0).eval()
    table = ExampleTable.from_examples(examples(5, 40, seed=3), 6)
    batch = model.collate(table, torch.arange(5))
    with torch.no_grad():
        full = model(batch)
        logits, state = model.prefill(batch)
        steps = [logits]
        state = model.expand_state(state, 1)
        for j in range(batch.target_tokens.shape[1] - 1):
            logits, state = model.step(state, batch.target_tokens[:, j], torch.arange(5))
            steps.append(logits)
    inc = torch.stack(steps, 1)
    real = batch.target_tokens != tok.pad_id
    assert full.shape == (5, tok.codes.shape[1], model.vocab_size)
    torch.testing.assert_close(full[real], inc[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,cfg", CONFIGS)
def test_save_load_round_trip(tmp_path, name, cfg):
    tok = semantic_ids(40)
    model = build_model(name, tok, dict(cfg, user_buckets=4), seed=1).eval()
    model.training_info = {"loss": "tca", "alpha": 0.1}
    table = ExampleTable.from_examples(examples(4, 40), 6)
    batch = model.collate(table, torch.arange(4))
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(SemrecError, match="already exists"):
        model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is MODELS[name] and loaded.config == model.config
    assert loaded.training_info == {"loss": "tca", "alpha": 0.1}
    assert torch.equal(loaded.tokenization.codes, tok.codes)
    with torch.no_grad():
        assert torch.equal(model(batch), loaded(batch))
    # an explicitly given, identical tokenization is accepted
    assert MODELS[name].from_pretrained(tmp_path / "m", tokenization=semantic_ids(40)) is not None


def test_refuses_a_checkpoint_for_another_tokenization(tmp_path):
    model = build_model("tiger", semantic_ids(40, seed=0), TIGER_TINY, seed=0)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(SemrecError, match="trained for item tokenization"):
        load_model(tmp_path / "m", tokenization=semantic_ids(40, seed=5))
    with pytest.raises(SemrecError, match="holds a 'tiger' model"):
        MODELS["decoder"].from_pretrained(tmp_path / "m")
    with pytest.raises(SemrecError, match="unknown model"):
        build_model("nope", semantic_ids(10))
    with pytest.raises(SemrecError, match="unknown key"):
        build_model("tiger", semantic_ids(10), {"d_modle": 8})


def test_training_examples_expand_prefixes_for_protocol_p():
    import pandas as pd

    train = Examples.from_lists([0, 1], [[1, 2, 3], [4]], [5, 6])
    ds = SeqDataset("x", pd.DataFrame({"title": ["t"] * 8}), {"train": train, "valid": Examples.empty(),
                                                              "test": Examples.empty()}, protocol="P")
    ex = training_examples(ds, max_history=2)
    assert [h.tolist() for h in ex.histories()] == [[1], [1, 2], [2, 3], [4]]
    assert ex.targets.tolist() == [2, 3, 5, 6]
    ds.protocol = "T"
    assert training_examples(ds) is train and training_examples(ds, 2, "rows") is train
    assert [h.tolist() for h in training_examples(ds, 2, "prefixes").histories()] == [[1], [1, 2], [2, 3], [4]]
    ds.protocol = "P"
    assert training_examples(ds, 2, "rows") is train
    with pytest.raises(SemrecError, match="training examples 'prefix': expected one of auto, rows, prefixes"):
        training_examples(ds, 2, "prefix")
    assert np.array_equal(ExampleTable.from_examples(ex, 2).histories.numpy(), [[-1, 1], [1, 2], [2, 3], [-1, 4]])
