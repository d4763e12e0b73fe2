"""Trie-constrained beam search: equal to transformers' generate(), exact when beams cover the catalogue;
exact scoring of the whole catalogue equal to the naive reference."""

import numpy as np
import pytest
import torch
from helpers.generative import (GPT2_TINY, LLAMA_GQA, LLAMA_TINY, TIGER_EDGE, TIGER_PLAIN, TIGER_RICH, TIGER_TINY,
                                examples, score_items, semantic_ids, titles, with_edge_vectors)

from semrec.decoding import beam_search, exact_search, next_token_log_probs, popularity_bias, score_catalogue
from semrec.errors import SemrecError
from semrec.data.examples import ExampleTable
from semrec.itemtok.artifact import ItemTokenization
from semrec.models import build_model
from semrec.runtime import bf16_autocast

torch.set_num_threads(1)
B = 6


def _setup(name, cfg, tok, seed=0):
    model = with_edge_vectors(build_model(name, tok, cfg, seed=seed).eval(), seed=seed)
    table = ExampleTable.from_examples(examples(B, tok.codes.shape[0], seed=seed + 7), 6)
    return model, model.collate(table, torch.arange(B), with_targets=False)


def _hf_top_k(model, batch, k):
    """transformers' beam search with the canonical settings (length_penalty 0, no early stop) and a
    per-beam prefix_allowed_tokens_fn over the same prefix index; returns item ids and scores (B, k)."""
    index = model.prefix_index()
    start = 1 if model.is_encoder_decoder else batch.input_ids.shape[1]
    eos = model.eos_id

    def allowed(_, ids):
        got = index.allowed_tokens_mask(ids[start:][None]).nonzero()[:, 1].tolist()
        return got or [eos if eos is not None else model.pad_id]

    out = model.hf.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, num_beams=k,
                            num_return_sequences=k, length_penalty=0.0, early_stopping=False, do_sample=False,
                            max_new_tokens=index.max_len, prefix_allowed_tokens_fn=allowed,
                            output_scores=True, return_dict_in_generate=True)
    seqs = out.sequences[:, start:]
    if eos is not None:  # generate() fills after EOS with eos/pad; cut every sequence after its first EOS
        is_eos = (seqs == eos).long()
        seqs = seqs.masked_fill((is_eos.cumsum(1) - is_eos) > 0, model.pad_id)
    seqs = torch.nn.functional.pad(seqs, (0, index.max_len - seqs.shape[1]), value=model.pad_id)
    return index.items_of(seqs).view(len(batch), k), out.sequences_scores.view(len(batch), k)


# transformers' generate() feeds token ids only: TIGER's item-recency embeddings are compared with exhaustive
# scoring instead (test_beams_covering_the_catalogue_give_the_exhaustive_ranking)
@pytest.mark.parametrize("name,cfg,k", [("tiger", TIGER_PLAIN, 10), ("decoder", LLAMA_TINY, 5), ("decoder", LLAMA_GQA, 6),
                                        ("decoder", GPT2_TINY, 5)])
def test_equals_transformers_generate_on_semantic_ids(name, cfg, k):
    model, batch = _setup(name, cfg, semantic_ids(50))
    ours = beam_search(model, batch, num_beams=k)
    items, scores = _hf_top_k(model, batch, k)
    assert (ours.items >= 0).all()
    assert torch.equal(ours.items, items)
    torch.testing.assert_close(ours.scores, scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,cfg,k", [("tiger", TIGER_PLAIN, 4), ("decoder", LLAMA_TINY, 10), ("decoder", LLAMA_GQA, 7)])
def test_equals_transformers_generate_on_variable_length_titles(name, cfg, k):
    model, batch = _setup(name, cfg, titles(60), seed=2)
    ours = beam_search(model, batch, num_beams=k)
    items, scores = _hf_top_k(model, batch, k)
    assert torch.equal(ours.items, items)
    torch.testing.assert_close(ours.scores, scores, atol=1e-5, rtol=1e-5)
    # returned sequences are the items' token rows
    assert torch.equal(ours.sequences, model.codes[ours.items])


@pytest.mark.parametrize("name,cfg,tok", [("tiger", TIGER_TINY, "sid"), ("tiger", TIGER_RICH, "title"),
                                          ("tiger", TIGER_PLAIN, "sid"), ("tiger", TIGER_EDGE, "sid"),
                                          ("tiger", dict(TIGER_EDGE, tie_embeddings=True), "title"),
                                          ("decoder", LLAMA_TINY, "title"), ("decoder", GPT2_TINY, "sid")])
def test_beams_covering_the_catalogue_give_the_exhaustive_ranking(name, cfg, tok):
    tok = semantic_ids(50) if tok == "sid" else titles(40)
    n = tok.codes.shape[0]
    model, batch = _setup(name, cfg, tok, seed=3)
    exact = score_items(model, batch)  # (B, N) log P(item)
    # the trie walk: one forward row per prefix; 13 rows per pass = 2 prefixes per user, so most states are
    # stepped several times (the GPT-2 cache is updated in place: the walk must copy it)
    for chunk_rows in (13, 4096):
        torch.testing.assert_close(score_catalogue(model, batch, chunk_rows=chunk_rows), exact, atol=1e-5, rtol=1e-5)
    out = beam_search(model, batch, num_beams=n)
    assert torch.equal(exact_search(model, batch, top_k=n).items, out.items)
    order = exact.sort(1, descending=True)
    assert torch.equal(out.items[:, 0], exact.argmax(1))
    assert torch.equal(out.items, order.indices)
    torch.testing.assert_close(out.scores, order.values, atol=1e-5, rtol=1e-5)
    # top_k keeps the best ones; a wider beam than the catalogue leaves empty slots at -inf / -1
    top3 = beam_search(model, batch, num_beams=n, top_k=3)
    assert torch.equal(top3.items, order.indices[:, :3])
    wide = beam_search(model, batch, num_beams=n + 5)
    assert torch.equal(wide.items[:, :n], order.indices)
    assert (wide.items[:, n:] == -1).all() and torch.isinf(wide.scores[:, n:]).all()
    assert wide.invalid_rate == 0.0


def test_renormalized_scores_are_a_distribution_over_the_catalogue():
    tok = titles(30)
    model, batch = _setup("tiger", TIGER_TINY, tok, seed=4)
    out = beam_search(model, batch, num_beams=30, renormalize=True)
    torch.testing.assert_close(torch.logsumexp(out.scores, 1), torch.zeros(B), atol=1e-5, rtol=0)
    raw = beam_search(model, batch, num_beams=30)
    assert (torch.logsumexp(raw.scores, 1) < -1e-3).all()  # without renormalising, mass leaks off the trie
    for renormalize, beams in ((True, out), (False, raw)):
        exact = exact_search(model, batch, top_k=30, renormalize=renormalize, temperature=1.0)
        assert torch.equal(exact.items, beams.items)
        torch.testing.assert_close(exact.scores, beams.scores, atol=1e-5, rtol=1e-5)
    # a temperature divides the logits before every token's softmax, in both searches
    hot = exact_search(model, batch, top_k=30, temperature=2.0)
    torch.testing.assert_close(hot.scores, beam_search(model, batch, num_beams=30, temperature=2.0).scores,
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hot.scores, raw.scores)


def test_unconstrained_mode_reports_invalid_hypotheses():
    tok = semantic_ids(50)
    model, batch = _setup("tiger", TIGER_TINY, tok, seed=5)
    out = beam_search(model, batch, num_beams=8, constrained=False)
    index = model.prefix_index()
    flat = out.sequences.view(-1, out.sequences.shape[-1])
    assert torch.equal(out.items.view(-1), index.items_of(flat))
    bad, total = out.invalid_count()
    assert total == B * 8 and bad == int((out.items < 0).sum())
    assert out.invalid_rate == bad / total and bad > 0  # a random model leaves the catalogue
    # each score is the model's teacher-forced log-probability of the returned (possibly invalid) sequence
    for j in range(8):
        batch.target_tokens = out.sequences[:, j]
        with torch.no_grad():
            lp = torch.log_softmax(model(batch).float(), -1)
        ref = lp.gather(2, batch.target_tokens[:, :, None]).sum((1, 2))
        torch.testing.assert_close(out.scores[:, j], ref, atol=1e-5, rtol=1e-5)


def test_next_token_log_probs_and_argument_errors():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    allowed = torch.tensor([[True, False, True], [False, False, False]])
    lp = next_token_log_probs(logits, allowed, renormalize=True)
    torch.testing.assert_close(lp[0].exp().sum(), torch.tensor(1.0))
    assert torch.isinf(lp[1]).all() and not torch.isnan(lp).any()
    lp = next_token_log_probs(logits, allowed)
    torch.testing.assert_close(lp[0, 2], torch.log_softmax(logits[0], 0)[2])
    model, batch = _setup("tiger", TIGER_TINY, semantic_ids(20))
    with pytest.raises(SemrecError, match="top_k"):
        beam_search(model, batch, num_beams=3, top_k=4)
    with pytest.raises(SemrecError, match="num_beams"):
        beam_search(model, batch, num_beams=0)
    with pytest.raises(SemrecError, match="top_k must be >= 1"):
        exact_search(model, batch, top_k=0)
    with pytest.raises(SemrecError, match="chunk_rows must be >= 1"):
        score_catalogue(model, batch, chunk_rows=0)


def test_more_beams_than_distinct_sequences_leave_empty_slots_in_both_searches():
    raw = np.random.default_rng(0).integers(0, 3, (20, 2))
    raw[7] = raw[2]  # items 2 and 7 share one code (and maybe others: a 3 x 3 grid for 20 items)
    model, batch = _setup("tiger", TIGER_TINY, ItemTokenization.from_raw_codes(raw, [3, 3], scheme="rqkmeans"), seed=6)
    distinct = torch.unique(model.canonical_items())
    m = len(distinct)
    assert model.canonical_items()[7] == 2 and m < 20
    scores = score_catalogue(model, batch)
    torch.testing.assert_close(scores, score_items(model, batch), atol=1e-5, rtol=1e-5)
    assert torch.equal(scores[:, 7], scores[:, 2])
    order = scores[:, distinct].sort(1, descending=True)
    for out in (beam_search(model, batch, num_beams=22), exact_search(model, batch, top_k=22)):
        # each distinct code once, as its smallest item id, best first; then empty slots
        assert torch.equal(out.items[:, :m], distinct[order.indices])
        assert (out.items[:, m:] == -1).all() and torch.isinf(out.scores[:, m:]).all()
        assert (out.sequences[:, m:] == model.pad_id).all()
        assert torch.equal(out.sequences[:, :m], model.codes[out.items[:, :m]])


@pytest.mark.parametrize("cfg,shared", [(LLAMA_TINY, True), (LLAMA_GQA, True), (GPT2_TINY, False)])
def test_llama_beams_share_one_copy_of_the_prompt(cfg, shared):
    """Llama-family models keep the prompt's keys/values once per user, not once per beam; others use HF's cache."""
    model, batch = _setup("decoder", cfg, semantic_ids(50))
    with torch.no_grad():
        _, state = model.prefill(batch)
        state = model.expand_state(state, 4)
        logits, state = model.step(state, torch.full((B * 4,), model.codes[0, 0].item()), torch.arange(B * 4))
    assert ("prompt" in state) == shared
    assert logits.shape == (B * 4, model.vocab_size)
    if shared:
        assert all(k.shape[0] == B for k, _ in state["prompt"])
        assert all(k.shape[0] == B * 4 and k.shape[2] == 1 for k, _ in state["gen"])


TIGER_2L = dict(TIGER_PLAIN, num_layers=2, num_decoder_layers=2, num_heads=3)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_tiger_encoder_pass_equals_transformers_encoder(impl):
    """TIGER's prefill runs its own T5 encoder pass (one q/k/v projection, the ReLU in place; other
    feed-forwards through transformers' module): on padded batches its first-token logits are transformers'
    forward pass's (either attention implementation), and its top-K is generate()'s, which runs
    transformers' encoder module."""
    for cfg in (TIGER_2L, dict(TIGER_RICH, num_layers=2), dict(TIGER_2L, feed_forward_proj="gated-gelu")):
        model, batch = _setup("tiger", cfg, semantic_ids(50))
        model.hf.set_attn_implementation(impl)
        assert (batch.attention_mask == 0).any()  # histories of 1..8 items: padded rows
        with torch.no_grad():
            first, _ = model.prefill(batch)
            batch.target_tokens = model.codes[:B]  # position 0 reads the start token only
            torch.testing.assert_close(first, model(batch)[:, 0], atol=1e-5, rtol=1e-5)
    model, batch = _setup("tiger", TIGER_2L, semantic_ids(50))
    model.hf.set_attn_implementation(impl)
    items, scores = _hf_top_k(model, batch, 10)
    ours = beam_search(model, batch, num_beams=10)
    assert torch.equal(ours.items, items)
    torch.testing.assert_close(ours.scores, scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,cfg", [("tiger", TIGER_RICH), ("decoder", LLAMA_TINY)])
def test_bf16_decoding_stays_close_to_float32(name, cfg):
    """bf16=True autocasts on a CPU with native bf16 (float32 elsewhere): catalogue items, mostly float32's,
    each scored within bf16 rounding of its float32 score (a near-tie may be pruned differently)."""
    model, batch = _setup(name, cfg, semantic_ids(50))
    ref = beam_search(model, batch, num_beams=5)
    got = beam_search(model, batch, num_beams=5, bf16=True)
    assert (got.items >= 0).all() and got.scores.dtype == torch.float32
    if not bf16_autocast(torch.device("cpu"), True):
        assert torch.equal(got.items, ref.items)
    same = got.items[:, :, None] == ref.items[:, None, :]  # (B, K, K): item j of ours is item l of float32's
    assert same.sum() >= 0.8 * same.shape[0] * same.shape[1]
    pairs = same.nonzero()
    torch.testing.assert_close(got.scores[pairs[:, 0], pairs[:, 1]], ref.scores[pairs[:, 0], pairs[:, 2]],
                               atol=0.05, rtol=0)


def test_tiger_decodes_the_same_a_few_token_rows_at_a_time(monkeypatch):
    """TIGER's encoder and feed-forwards work CACHE_ROWS token rows at a time: any block size gives the same
    top-K and scores."""
    import semrec.models.tiger as tiger

    model, batch = _setup("tiger", TIGER_RICH, semantic_ids(50))
    ref = beam_search(model, batch, num_beams=5)
    monkeypatch.setattr(tiger, "CACHE_ROWS", 7)  # one user per encoder block, 7 rows per feed-forward block
    got = beam_search(model, batch, num_beams=5)
    assert batch.input_ids.shape[1] > 7 and torch.equal(got.items, ref.items)
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tok", ["sid", "title"])
def test_popularity_bias_lowers_every_item_by_its_log_prior_in_both_searches(tok):
    tok = semantic_ids(50) if tok == "sid" else titles(40)
    n = tok.codes.shape[0]
    model, batch = _setup("tiger", TIGER_TINY, tok, seed=6)
    index = model.prefix_index()
    counts = np.random.default_rng(0).integers(0, 30, n)
    counts[:5] = 0  # unseen items: add-one smoothing keeps them finite
    plain = score_catalogue(model, batch)
    prior = np.log((counts + 1) / (counts + 1).sum())
    for s in (0.0, 0.7):
        bias = popularity_bias(index, counts, s)
        want = plain - s * torch.as_tensor(prior, dtype=torch.float32)
        torch.testing.assert_close(score_catalogue(model, batch, edge_bias=bias), want, atol=1e-5, rtol=1e-5)
        beams = beam_search(model, batch, num_beams=n, edge_bias=bias)
        order = want.sort(1, descending=True)
        assert torch.equal(beams.items, order.indices)
        torch.testing.assert_close(beams.scores, order.values, atol=1e-5, rtol=1e-5)
        assert torch.equal(exact_search(model, batch, top_k=n, edge_bias=bias).items, beams.items)
    # a strong correction moves the lists towards rare items
    top = beam_search(model, batch, num_beams=5).items
    debiased = beam_search(model, batch, num_beams=5, edge_bias=popularity_bias(index, counts, 3.0)).items
    assert counts[debiased.numpy()].mean() < counts[top.numpy()].mean()


def test_popularity_bias_argument_errors():
    model, batch = _setup("tiger", TIGER_TINY, semantic_ids(50), seed=6)
    index = model.prefix_index()
    bias = popularity_bias(index, np.ones(50), 0.5)
    with pytest.raises(SemrecError, match="needs constrained=True"):
        beam_search(model, batch, num_beams=4, constrained=False, edge_bias=bias)
    with pytest.raises(SemrecError, match="one value per trie edge"):
        beam_search(model, batch, num_beams=4, edge_bias=bias[:-1])
    with pytest.raises(SemrecError, match="one value per trie edge"):
        score_catalogue(model, batch, edge_bias=bias[:-1])
    with pytest.raises(SemrecError, match="non-negative counts"):
        popularity_bias(index, -np.ones(50), 0.5)
    with pytest.raises(SemrecError, match="non-negative counts"):
        popularity_bias(index, np.ones(49), 0.5)
