import math

import numpy as np
import pytest
import torch

from semrec.errors import SemrecError
from semrec.metrics import collaborative_consistency, rank_metrics, rank_of_targets


def naive_rank(scores: np.ndarray, target: int, pessimistic: bool) -> int:
    """Reference: position of the target in a full sort, ties broken against (or for) the target."""
    s = np.nan_to_num(scores, nan=-np.inf)
    others = [j for j in range(len(s)) if j != target]
    # sort key: higher score first; among equal scores the target goes last (pessimistic) or first
    ordered = sorted(others + [target], key=lambda j: (-s[j], (j == target) if pessimistic else (j != target)))
    return ordered.index(target) + 1


def test_rank_hand_cases():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.5],
                           [0.1, 0.5, 0.3, 0.5],
                           [2.0, 1.0, 0.0, -1.0]])
    targets = torch.tensor([2, 1, 0])
    assert rank_of_targets(scores, targets).tolist() == [3, 2, 1]  # tie with item 3 counts against item 1
    assert rank_of_targets(scores, targets, ties="optimistic").tolist() == [3, 1, 1]
    const = torch.zeros(2, 5)
    assert rank_of_targets(const, torch.tensor([0, 4])).tolist() == [5, 5]  # constant model ranks last


def test_rank_matches_sorting_reference_with_many_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (40, 9), generator=g).float()
    scores[3, 2] = float("nan")
    scores[4, 0] = float("nan")
    targets = torch.randint(0, 9, (40,), generator=g)
    targets[3] = 2
    targets[4] = 5
    for ties, pess in (("pessimistic", True), ("optimistic", False)):
        got = rank_of_targets(scores, targets, ties=ties).tolist()
        want = [naive_rank(scores[b].numpy(), int(targets[b]), pess) for b in range(40)]
        want[3] = 0  # a NaN target score is absent (a miss)
        assert got == want


def test_exclude_history_and_mask_agree():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5],
                           [0.9, 0.8, 0.7, 0.6, 0.5]])
    targets = torch.tensor([3, 1])
    hist = torch.tensor([[-1, 0, 1], [-1, -1, 1]])
    r = rank_of_targets(scores, targets, hist)
    assert r.tolist() == [2, 0]  # items 0,1 removed -> item 3 second; target 1 is in history -> absent
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, [0, 1]] = True
    mask[1, 1] = True
    assert rank_of_targets(scores, targets, mask).tolist() == r.tolist()
    assert rank_of_targets(scores, targets).tolist() == [4, 2]


def test_rank_metrics_hand_values():
    m = rank_metrics([1, 3, 11, 0], ks=(1, 3, 10))
    assert m["hr@1"] == 0.25 and m["recall@1"] == 0.25
    assert m["hr@3"] == 0.5 and m["hr@10"] == 0.5
    assert m["ndcg@1"] == 0.25
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)
    # inf and NaN are absent too, tensors accepted
    assert rank_metrics(torch.tensor([2.0, float("inf"), float("nan")]), ks=(5,))["ndcg@5"] == pytest.approx(
        (1 / math.log2(3)) / 3)
    assert list(rank_metrics([1], ks=(1,))) == ["hr@1", "recall@1", "ndcg@1", "mrr"]


def test_rank_errors():
    with pytest.raises(SemrecError, match="no examples"):
        rank_metrics([])
    with pytest.raises(SemrecError, match="positive"):
        rank_metrics([1], ks=(0,))
    with pytest.raises(SemrecError, match="outside 0..2"):
        rank_of_targets(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(SemrecError, match="targets for"):
        rank_of_targets(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(SemrecError, match="exclude mask"):
        rank_of_targets(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.bool))


def test_collaborative_consistency():
    teacher = torch.tensor([[0.1, 0.9, 0.2], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    gen = torch.tensor([1, 0, 2, -1])  # match, tie at the maximum (counts), mismatch, nothing generated
    assert collaborative_consistency(gen, teacher) == 0.5
    assert collaborative_consistency(gen, torch.tensor([1, 0, 0, 2])) == 0.5
    assert collaborative_consistency(np.array([2]), np.array([[0.0, 1.0, 2.0]])) == 1.0
    with pytest.raises(SemrecError):
        collaborative_consistency(gen, teacher[:2])


def test_list_diagnostics_and_paired_gain_match_a_hand_count():
    from semrec.metrics import item_popularity, list_diagnostics, paired_gain

    pop = item_popularity([0, 0, 0, 1, 1, 2], 200)  # the 1% head of 200 items: items 0 and 1
    items = torch.tensor([[0, 5, -1], [0, 1, 7], [3, 5, 9]])
    d = list_diagnostics(items, 200, pop)
    assert d == {"coverage@3": 6 / 200, "distinct_top1": 2.0, "pop1%@3": 3 / 8}
    gain, se = paired_gain(np.array([1, 0, 3]), np.array([0, 0, 3]), 10)
    assert gain == pytest.approx(1 / 3) and se == pytest.approx(np.std([1, 0, 0], ddof=1) / np.sqrt(3))
    with pytest.raises(SemrecError, match="popularity has shape"):
        list_diagnostics(items, 200, pop[:10])
    with pytest.raises(SemrecError, match="paired_gain: rank arrays"):
        paired_gain(np.array([1, 2]), np.array([1]))
    with pytest.raises(SemrecError, match="item_popularity: item id outside"):
        item_popularity([200], 200)
