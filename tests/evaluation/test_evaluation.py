"""Evaluation of generative recommenders against an exhaustive reference ranking."""

import math

import numpy as np
import pytest
import torch
from helpers.generative import TIGER_TINY, examples, score_items, semantic_ids, titles

from semrec.cf import SASRec, SASRecConfig
from semrec.data.dataset import Examples
from semrec.errors import SemrecError
from semrec.decoding import beam_search
from semrec.evaluation import evaluate, generate, result_row
from semrec.itemtok.artifact import ItemTokenization
from semrec.data.examples import ExampleTable
from semrec.models import build_model

torch.set_num_threads(1)


def test_metrics_equal_the_exhaustive_ranking_when_beams_cover_the_catalogue():
    n = 20
    tok = semantic_ids(n, sizes=(3, 3))
    model = build_model("tiger", tok, TIGER_TINY, seed=0).eval()
    torch.manual_seed(0)
    teacher = SASRec(n, SASRecConfig(hidden=16, layers=1, heads=1, ffn=32, max_len=8)).eval()
    ex = examples(40, n, seed=3)
    m = evaluate(model, ex, teacher=teacher, num_beams=n, ks=(1, 5, 10, 20))
    table = ExampleTable.from_examples(ex, 8)
    batch = model.collate(table, torch.arange(len(ex)), with_targets=False)
    exact = score_items(model, batch)
    ranks = (exact > exact.gather(1, table.targets[:, None])).sum(1) + 1
    for k in (1, 5, 10, 20):
        assert m[f"hr@{k}"] == pytest.approx(float((ranks <= k).float().mean()))
        ndcg = torch.where(ranks <= k, 1 / torch.log2(ranks.double() + 1), torch.zeros(len(ex), dtype=torch.double))
        assert m[f"ndcg@{k}"] == pytest.approx(float(ndcg.mean()))
    with torch.no_grad():
        t_top1 = teacher.item_logits(table.histories).argmax(1)
    assert m["cc"] == pytest.approx(float((exact.argmax(1) == t_top1).float().mean()))
    # against a teacher scored without the history: its top-1 among the items each row has not read (naive loop
    # over every row's whole history, here up to 8 items as the table holds)
    with torch.no_grad():
        t_logits = teacher.item_logits(table.histories)
    new_top1 = torch.tensor([max((i for i in range(n) if i not in set(ex.history(r).tolist())),
                                 key=lambda i: t_logits[r, i]) for r in range(len(ex))])
    assert not torch.equal(new_top1, t_top1)  # some rows' teacher top-1 is an item they have read
    m_new = evaluate(model, ex, teacher=teacher, num_beams=n, ks=(1, 5, 10, 20), teacher_exclude_history=True)
    assert m_new["cc"] == pytest.approx(float((exact.argmax(1) == new_top1).float().mean()))
    assert m_new["hr@10"] == m["hr@10"]  # only CC changes
    assert m["coverage@20"] == 1.0 and m["invalid_rate"] == 0.0 and m["n_rows"] == 40
    # exact decoding ranks the same catalogue by the same scores: every metric agrees with the covering beam
    me = evaluate(model, ex, teacher=teacher, decode="exact", ks=(1, 5, 10, 20))
    assert me.pop("decode") == "exact" and m.pop("num_beams") == n
    assert set(me) == set(m) and all(me[k] == pytest.approx(m[k]) for k in m if k != "wall_time_s")
    m10 = evaluate(model, ex, num_beams=10, ks=(1, 10), max_rows=25)
    top10 = exact[:25].topk(10, dim=1).indices
    assert m10["coverage@10"] == pytest.approx(torch.unique(top10).numel() / n)
    assert m10["hr@1"] == pytest.approx(float((exact[:25].argmax(1) == table.targets[:25]).float().mean()))
    me10, exact_ranks = evaluate(model, ex, decode="exact", ks=(1, 10), max_rows=25, return_ranks=True)
    assert me10["coverage@10"] == pytest.approx(torch.unique(top10).numel() / n)
    assert np.array_equal(exact_ranks, torch.where(ranks[:25] <= 10, ranks[:25], 0).numpy())
    row = result_row(model, m10, dataset="toy", protocol="T", split="test", seed=3)
    for key in ("model", "tokenizer", "loss", "alpha", "tau", "dataset", "protocol", "split", "seed",
                "hr@10", "ndcg@10", "wall_time_s", "device"):
        assert key in row
    assert row["model"] == "tiger" and row["tokenizer"] == "rqkmeans"
    with pytest.raises(SemrecError, match="beams"):
        evaluate(model, ex, num_beams=5, ks=(10,))
    assert evaluate(model, ex, num_beams=5, ks=(10,), decode="exact")["hr@10"] == pytest.approx(float((ranks <= 10).float().mean()))
    with pytest.raises(SemrecError, match="decode 'greedy': expected one of beam, exact"):
        evaluate(model, ex, decode="greedy")
    with pytest.raises(SemrecError, match="constrained=False"):
        evaluate(model, ex, decode="exact", constrained=False)


def test_items_sharing_a_title_count_as_one_entry():
    base = titles(12)
    codes = base.codes.clone()
    codes[11] = codes[3]  # items 3 and 11 have identical titles
    tok = ItemTokenization(codes, vocab_size=base.vocab_size, pad_id=0, bos_id=1, eos_id=2,
                           level_offsets=base.level_offsets, codebook_sizes=base.codebook_sizes, scheme="title")
    model = build_model("tiger", tok, TIGER_TINY, seed=0)
    assert model.canonical_items()[11] == 3 and model.canonical_items()[4] == 4
    ex = Examples.from_lists([0, 1], [[1, 2], [5]], [11, 3])
    m = evaluate(model, ex, num_beams=12, ks=(11,))
    assert m["hr@11"] == 1.0  # all 11 distinct entries are returned and item 11 is found as entry 3
    assert math.isclose(m["coverage@12"], 11 / 12)
    assert np.isfinite(m["mrr"])
    me = evaluate(model, ex, decode="exact", ks=(11, 12))  # the same entries: a twelfth slot stays empty
    assert me["hr@11"] == 1.0 and me["ndcg@11"] == pytest.approx(m["ndcg@11"])
    assert math.isclose(me["coverage@12"], 11 / 12) and me["mrr"] == pytest.approx(m["mrr"])


def test_rows_are_decoded_in_batches_of_similar_length_and_returned_in_row_order():
    """generate() groups rows by history length (less padding); every row's beam is the one it gets in a batch
    of all rows, at its own position."""
    tok = semantic_ids(50)
    model = build_model("tiger", tok, TIGER_TINY, seed=0).eval()
    table = ExampleTable.from_examples(examples(30, 50, seed=5), 8)
    lengths = (table.histories >= 0).sum(1)
    assert len(set(lengths.tolist())) > 3
    whole = beam_search(model, model.collate(table, torch.arange(30), with_targets=False), num_beams=6)
    got = generate(model, table, num_beams=6, batch_size=4)
    assert torch.equal(got["items"], whole.items)
    torch.testing.assert_close(got["scores"], whole.scores, atol=1e-5, rtol=1e-5)
