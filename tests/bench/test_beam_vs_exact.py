"""benchmarks/beam_vs_exact.py on tiny models: the list overlap by hand, and beam and exact lists scored alike."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.generative import TIGER_TINY, examples, semantic_ids

from semrec.data.examples import ExampleTable
from semrec.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import beam_vs_exact  # noqa: E402  (a script of benchmarks/, not a package)

torch.set_num_threads(1)


def test_overlap_counts_common_items_and_ignores_empty_slots():
    a = torch.tensor([[1, 2, 3, -1], [5, 6, 7, 8]])
    b = torch.tensor([[3, 1, 9, -1], [8, 7, 6, 5]])
    assert beam_vs_exact.overlap(a, b) == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert beam_vs_exact.overlap(b, b) == pytest.approx((3 / 4 + 1) / 2)


@pytest.mark.parametrize("n", [10, 60])
def test_beam_and_exact_lists_are_scored_alike(n):
    model = build_model("tiger", semantic_ids(n, sizes=(4, 4)), TIGER_TINY, seed=0).eval()
    ex = examples(30, n, seed=1)
    table = ExampleTable.from_examples(ex, 6)
    pop = np.bincount(ex.targets, minlength=n)
    got = beam_vs_exact.compare(model, table, pop)
    d = got["diff"]
    # the HR@10 difference is the rows only the exact list hits minus those only the beam hits
    assert d["hr@10"] == pytest.approx((d["exact_only_hits"] - d["beam_only_hits"]) / 30)
    assert 0 <= got["overlap@10"] <= 1 and got["n_rows"] == 30 and got["exact"]["users_per_cpu_s"] > 0
    if n == 10:  # 10 beams cover the catalogue: the same lists
        assert got["overlap@10"] == 1.0 and got["top1_agree"] == 1.0
        assert d["hr@10"] == 0 and d["ndcg@10"] == pytest.approx(0) and got["beam"] == {
            **got["exact"], **{k: got["beam"][k] for k in ("wall_s", "cpu_s", "users_per_cpu_s")}}
