"""Work on (B, N) teacher scores is done a few rows at a time for large catalogues: the chunked results equal
the one-shot ones (the chunk sizes are shrunk here so that small inputs take many chunks)."""

import numpy as np
import torch

from semrec.cf import TEACHERS, SASRecConfig
from semrec.cf import evaluate as cf_evaluate
from semrec.data.dataset import Examples
from semrec.tca import CollaborativeTokenizer, collaborative_token_distribution
from semrec.tca import tokenizer as ct_module
from semrec.trie import PrefixIndex


def test_ct_first_position_in_row_chunks_equals_the_functional_form(monkeypatch):
    g = torch.Generator().manual_seed(0)
    n, b, vocab, pad = 300, 9, 40, 0
    tokens = torch.randint(1, vocab, (n, 3), generator=g)
    logits = torch.randn(b, n, generator=g) * 3
    logits[2] = float("-inf")  # a row with no finite score gets an all-zero first position
    logits[4, :150] = float("-inf")
    targets = tokens[torch.randint(0, n, (b,), generator=g)]
    targets[5, 1:] = pad  # a row that is a prefix only
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))
    whole = ct(logits, targets)
    monkeypatch.setitem(ct_module.CT_FIRST_SCORES_PER_CHUNK, "cpu", 2 * n)  # two rows per chunk
    chunked = ct(logits, targets)
    ref = collaborative_token_distribution(logits, tokens, targets, vocab_size=vocab, pad_id=pad)
    torch.testing.assert_close(chunked, whole, atol=0, rtol=0)
    torch.testing.assert_close(chunked, ref, atol=1e-6, rtol=1e-5)
    assert chunked[2, 0].sum() == 0 and abs(float(chunked[0, 0].sum()) - 1) < 1e-5


def test_teacher_ranks_in_row_chunks_equal_one_batch(monkeypatch):
    torch.manual_seed(0)
    n = 50
    teacher = TEACHERS["sasrec"](n, SASRecConfig(max_len=5, hidden=16, layers=1, heads=1, ffn=32)).eval()
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, n, int(rng.integers(1, 6))).tolist() for _ in range(37)]
    ex = Examples.from_lists(np.arange(37), hists, rng.integers(0, n, 37))
    whole = cf_evaluate.teacher_ranks(teacher, ex)
    whole_ex = cf_evaluate.teacher_ranks(teacher, ex, exclude_history=True)
    monkeypatch.setattr(cf_evaluate, "SCORE_ELEMENTS", 3 * n)  # three rows at a time
    assert np.array_equal(cf_evaluate.teacher_ranks(teacher, ex), whole)
    assert np.array_equal(cf_evaluate.teacher_ranks(teacher, ex, exclude_history=True), whole_ex)
    assert ((whole >= 1) & (whole <= n)).all() and (whole_ex == 0).any()
