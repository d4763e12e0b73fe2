"""Generative models: batching, teacher forcing vs cached decoding, save/load round trips, tokenization checks."""

import numpy as np
import pytest
import torch
from helpers.generative import (GPT2_TINY, LLAMA_GQA, LLAMA_TINY, TIGER_EDGE, TIGER_PLAIN, TIGER_RICH, TIGER_TINY,
                                examples, semantic_ids, titles, with_edge_vectors)

from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable, training_examples
from semrec.models import MODELS, build_model, load_model
from semrec.models.batching import compact, history_tokens

torch.set_num_threads(1)

CONFIGS = [("tiger", TIGER_TINY), ("tiger", TIGER_RICH), ("tiger", TIGER_EDGE), ("decoder", LLAMA_TINY),
           ("decoder", LLAMA_GQA), ("decoder", GPT2_TINY)]


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
    tiger = build_model("tiger", tok, dict(TIGER_PLAIN, max_history=2, user_buckets=8), seed=0)
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
    model = with_edge_vectors(build_model(name, tok, cfg, seed=0).eval())
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


@pytest.mark.parametrize("cfg,kind", [(TIGER_RICH, "sid"), (TIGER_TINY, "sid"), (TIGER_TINY, "title"),
                                      (TIGER_RICH, "title")])
def test_tiger_encoder_input_options_match_a_python_reference(cfg, kind):
    """Separators, anchor, user token and each token's item-recency slot, built by hand. Without separators
    an item starts at its first code level's token (semantic IDs) or after the previous title's EOS."""
    tok = semantic_ids(30) if kind == "sid" else titles(30)
    model = build_model("tiger", tok, cfg, seed=0)
    hist = torch.tensor([[-1, -1, 3, 7], [5, 0, 19, 2], [-1, -1, -1, 11]])
    table = ExampleTable(hist, torch.tensor([4, 9, 2]), torch.tensor([1, 2, 3]))
    batch = model.collate(table, torch.arange(3))
    rec = model.item_recency(batch.input_ids, batch.attention_mask)
    owner = model.token_items(batch.input_ids, batch.attention_mask, batch.histories)
    c, none = model.config, tok.codes.shape[0]
    for r in range(3):
        items = [i for i in hist[r].tolist() if i >= 0]
        toks, slots, owners = [], [], []
        if c.user_buckets:
            toks.append(model.extra_base + int((table.users[r] * 2654435761) % 2**32 % c.user_buckets))
            slots.append(c.max_history + 1)
            owners.append(none)
        for back, i in zip(range(len(items), 0, -1), items):
            row = [t for t in tok.codes[i].tolist() if t != tok.pad_id]
            row += [model.separator_id] if c.item_separator else []
            toks += row
            slots += [back - 1 + int(c.eos_anchor)] * len(row)
            owners += [i] * len(row)
        if c.eos_anchor:
            toks.append(model.anchor_id)
            slots.append(0)
            owners.append(none)
        n = len(toks)
        assert batch.input_ids[r, :n].tolist() == toks and batch.attention_mask[r].sum() == n
        assert rec[r, :n].tolist() == slots
        assert owner[r, :n].tolist() == owners and (owner[r, n:] == none).all()
    assert int(batch.input_ids.max()) < model.vocab_size
    # the recency embedding reaches the encoder: reversing the history changes the encoding
    rev = model.collate(ExampleTable(hist.flip(1), table.users, table.targets), torch.arange(3))
    # token owners follow the items as the encoder reads them, padding on either side dropped
    rev_owner = model.token_items(rev.input_ids, rev.attention_mask, rev.histories)
    for r in range(3):
        seen = [i for i in rev_owner[r].tolist() if i != none]
        assert list(dict.fromkeys(seen)) == [i for i in hist[r].flip(0).tolist() if i >= 0]
    assert (model.token_items(batch.input_ids[:1], batch.attention_mask[:1], torch.full((1, 4), -1)) == none).all()
    with torch.no_grad():
        a = model.hf.get_encoder()(**model._encoder_inputs(batch), attention_mask=batch.attention_mask)
        b = model.hf.get_encoder()(**model._encoder_inputs(rev), attention_mask=rev.attention_mask)
    assert not torch.allclose(a.last_hidden_state[1], b.last_hidden_state[1])


def test_tiger_options_build_what_they_say():
    tok = semantic_ids(30)
    untied = build_model("tiger", tok, TIGER_RICH, seed=0)
    assert untied.hf.lm_head.weight.data_ptr() != untied.hf.shared.weight.data_ptr()
    assert untied.hf.shared.weight.std().item() == pytest.approx(0.1, rel=0.2)
    tied = build_model("tiger", tok, TIGER_TINY, seed=0)
    assert tied.hf.lm_head.weight.data_ptr() == tied.hf.shared.weight.data_ptr()
    assert not hasattr(tied.hf.encoder, "item_embedding")
    # item-id embeddings: one row per item and one for other tokens, all zero at the start (the encoder input
    # is then the one without them); training moves exactly the history items' rows
    table = untied.hf.encoder.item_embedding.weight
    assert table.shape == (31, 32) and not table.any()
    plain = build_model("tiger", tok, dict(TIGER_RICH, item_embeddings=False), seed=0)
    probe = plain.collate(ExampleTable(torch.tensor([[2, 4]]), torch.tensor([0]), torch.tensor([1])), torch.arange(1))
    with torch.no_grad():
        assert torch.equal(plain(probe), untied(probe))
    hist = torch.tensor([[-1, 3, 7], [5, 3, 29]])
    batch = untied.collate(ExampleTable(hist, torch.tensor([0, 1]), torch.tensor([1, 2])), torch.arange(2))
    untied(batch).logsumexp(-1).sum().backward()
    moved = (table.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert moved == [3, 5, 7, 29]
    # nothing marks where an item starts: no separator, no EOS, one shared token range for every position
    from semrec.itemtok.artifact import ItemTokenization

    flat = ItemTokenization(torch.tensor([[3, 4], [5, 3]]), vocab_size=8, pad_id=0, bos_id=None, eos_id=None,
                            level_offsets=[0, 0], codebook_sizes=[8, 8], scheme="title")
    for cfg in (TIGER_TINY, dict(TIGER_TINY, item_positions=False, item_embeddings=True)):
        with pytest.raises(ValueError, match="item_positions and item_embeddings need item_separator"):
            build_model("tiger", flat, cfg, seed=0)
    assert build_model("tiger", flat, dict(TIGER_TINY, item_positions=False), seed=0) is not None
    assert build_model("tiger", flat, dict(TIGER_TINY, item_separator=True), seed=0).separator_id is not None


@pytest.mark.parametrize("kind", ["sid", "title"])
def test_edge_head_adds_each_prefix_own_output_vectors(kind):
    """With `edge_head`, the logit of token c after prefix p gains (scaled decoder state) . vector of the trie
    edge (p, c), found here from the edge table's documented key; tokens that do not continue p gain
    nothing. At the start the vectors are zero: the model is the one without them. Training moves only the
    vectors of the edges leaving the targets' prefixes, the targets' own among them."""
    tok = semantic_ids(40) if kind == "sid" else titles(40)
    table = ExampleTable.from_examples(examples(5, 40, seed=3), 6)
    plain = build_model("tiger", tok, TIGER_RICH, seed=0)
    model = build_model("tiger", tok, TIGER_EDGE, seed=0)
    batch = model.collate(table, torch.arange(5))
    with torch.no_grad():
        assert torch.equal(model(batch), plain(batch))
    index = model.prefix_index()
    w = model.hf.decoder.edge_vectors.weight
    assert w.shape == (index.num_edges, TIGER_EDGE["d_model"]) and not w.any()
    model(batch).logsumexp(-1).sum().backward()
    moved = set((w.grad.abs().sum(1) > 0).nonzero().flatten().tolist())
    n, v, tgt = index.num_items, index.vocab_size, batch.target_tokens
    leaving, taken = set(), set()
    for b in range(tgt.shape[0]):
        for t in range(tgt.shape[1]):
            if tgt[b, t] == tok.pad_id:
                break
            lo, _, _ = index.walk(tgt[b:b + 1, :t])
            key = (t * (n + 1) + int(lo[0])) * v
            leaving |= set(((index.edge_key >= key) & (index.edge_key < key + v)).nonzero().flatten().tolist())
            taken.add(int((index.edge_key == key + tgt[b, t]).nonzero()[0, 0]))
    assert taken <= moved <= leaving and len(leaving) > len(taken)

    model = with_edge_vectors(model.eval())
    with torch.no_grad():
        out = model.hf(**model._encoder_inputs(batch), attention_mask=batch.attention_mask,
                       decoder_input_ids=model._decoder_inputs(tgt), output_hidden_states=True)
        hidden = out.decoder_hidden_states[-1]  # the untied head reads it unscaled (T5 scales a tied one)
        added = model(batch) - out.logits
    for b in range(tgt.shape[0]):
        for t in range(tgt.shape[1]):
            lo, _, _ = index.walk(tgt[b:b + 1, :t])
            key = (t * (n + 1) + int(lo[0])) * v
            want = torch.zeros(v)
            for e in ((index.edge_key >= key) & (index.edge_key < key + v)).nonzero().flatten().tolist():
                want[int(index.edge_key[e]) - key] = hidden[b, t] @ w[e]
            torch.testing.assert_close(added[b, t], want, atol=1e-5, rtol=1e-5)


def test_model_saved_before_new_options_loads_with_their_old_values(tmp_path):
    import json

    model = build_model("tiger", semantic_ids(20), TIGER_PLAIN, seed=0)  # built as before the options
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("item_positions", "item_separator", "eos_anchor", "tie_embeddings", "embedding_init_std",
                "item_embeddings", "edge_head"):
        del meta["config"][key]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    assert load_model(tmp_path / "m").config == model.config


@pytest.mark.parametrize("name,cfg", [*CONFIGS, ("tiger", TIGER_PLAIN)])
def test_save_load_round_trip(tmp_path, name, cfg):
    tok = semantic_ids(40)
    model = with_edge_vectors(build_model(name, tok, dict(cfg, user_buckets=4), seed=1).eval())
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


def test_training_examples_auto_is_every_prefix_unless_the_model_learns_every_item():
    import pandas as pd

    train = Examples.from_lists([0, 1], [[1, 2, 3], [4]], [5, 6])
    ds = SeqDataset("x", pd.DataFrame({"title": ["t"] * 8}), {"train": train, "valid": Examples.empty(),
                                                              "test": Examples.empty()}, protocol="P")
    ex = training_examples(ds, max_history=2)
    assert [h.tolist() for h in ex.histories()] == [[1], [1, 2], [2, 3], [4]]
    assert ex.targets.tolist() == [2, 3, 5, 6]
    # "auto": every prefix whatever the protocol, unless the model learns every item in one pass
    ds.protocol = "T"
    assert training_examples(ds).targets.tolist() == [2, 3, 5, 6]
    assert training_examples(ds, every_item=True) is train
    assert training_examples(ds, 2, "rows") is train
    assert [h.tolist() for h in training_examples(ds, 2, "prefixes").histories()] == [[1], [1, 2], [2, 3], [4]]
    ds.protocol = "P"
    assert training_examples(ds, 2, "rows") is train
    with pytest.raises(SemrecError, match="training examples 'prefix': expected one of auto, rows, prefixes"):
        training_examples(ds, 2, "prefix")
    assert np.array_equal(ExampleTable.from_examples(ex, 2).histories.numpy(), [[-1, 1], [1, 2], [2, 3], [-1, 4]])


def test_decoder_loss_on_every_item_matches_a_token_by_token_reference():
    tok = semantic_ids(30)
    model = build_model("decoder", tok, dict(LLAMA_TINY, item_loss="every", dropout=0.0), seed=0)
    table = ExampleTable.from_examples(examples(4, 30, seed=2), 6)
    batch = model.collate(table, torch.arange(4))
    model.eval()
    with torch.no_grad():
        plain = model(batch)  # evaluation: target logits only
    model.train()
    logits, hist_loss = model(batch)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    # reference: each history code token scored alone from the teacher-forced logits of the prompt
    mask = batch.attention_mask
    with torch.no_grad():
        full = model.hf(input_ids=batch.input_ids, attention_mask=mask,
                        position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    terms = []
    for r in range(4):
        for t in range(1, batch.input_ids.shape[1]):
            tid = int(batch.input_ids[r, t])
            if mask[r, t] and tid != model.start_id and tid < model.item_vocab_size and tid != model.pad_id:
                terms.append(-torch.log_softmax(full[r, t - 1], -1)[tid])
    assert len(terms) > 10
    torch.testing.assert_close(hist_loss.detach(), torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
    hist_loss.backward()
    assert model.hf.get_input_embeddings().weight.grad.abs().sum() > 0
