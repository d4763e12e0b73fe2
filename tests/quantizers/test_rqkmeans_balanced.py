"""Balanced RQ-KMeans: the capacity assignment, the cluster-size bound, code/reconstruction consistency
against a naive residual walk, and more even codes than plain RQ-KMeans."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.errors import SemrecError
from semrec.itemtok.quality import code_usage
from semrec.quantizers import QUANTIZERS, Quantizer, collision_stats
from semrec.quantizers.rqkmeans_balanced import capacity_assignment, cluster_means


def clustered(n: int = 241, d: int = 6, seed: int = 0) -> np.ndarray:
    """Uneven clusters: two thirds of the items in one tight blob, the rest spread wide."""
    rng = np.random.default_rng(seed)
    tight = rng.standard_normal((1, d)) + 0.05 * rng.standard_normal((2 * n // 3, d))
    wide = 3 * rng.standard_normal((n - len(tight), d))
    return np.concatenate([tight, wide]).astype(np.float32)


def test_capacity_assignment_bounds_and_agrees_with_argmax_when_free():
    rng = np.random.default_rng(0)
    score = rng.standard_normal((50, 7))
    score[:, 2] += 10  # every row prefers column 2
    for cap in (8, 10, 50):
        codes = capacity_assignment(score, cap)
        assert codes.shape == (50,) and codes.min() >= 0 and codes.max() < 7
        assert np.bincount(codes, minlength=7).max() <= cap
    np.testing.assert_array_equal(capacity_assignment(score, 50), score.argmax(1))  # capacity never binds
    codes = capacity_assignment(score, 8)
    took = np.flatnonzero(codes == 2)  # the full column keeps the rows that score it highest
    assert len(took) == 8 and score[took, 2].min() >= np.delete(score[:, 2], took).max()
    with pytest.raises(SemrecError, match="50 rows do not fit in 7 columns of 7"):
        capacity_assignment(score, 7)


def test_cluster_means_match_naive_and_keep_empty_clusters():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 3)).astype(np.float32)
    codes = rng.integers(0, 3, 20)
    prev = np.full((4, 3), 7.0, dtype=np.float32)
    out = cluster_means(x, codes, prev)
    for j in range(3):
        np.testing.assert_allclose(out[j], x[codes == j].mean(0), atol=1e-6)
    np.testing.assert_array_equal(out[3], prev[3])


@pytest.mark.parametrize("n,sizes", [(241, [8, 8]), (250, [16, 5, 3]), (64, [64])])
def test_every_fitted_cluster_holds_at_most_ceil_n_over_k(n, sizes):
    emb = clustered(n)
    q = QUANTIZERS["rqkmeans_balanced"]({"codebook_sizes": sizes, "niter": 5, "balance_iters": 2})
    codes, last = q.fit_encode(emb, progress=False)
    assert codes.shape == (n, len(sizes)) and last.shape == (n, sizes[-1])
    for level, k in enumerate(sizes):
        counts = np.bincount(codes[:, level], minlength=k)
        assert counts.max() <= -(-n // k), (level, counts)
    assert q.fit_info["largest_cluster"] == [int(np.bincount(c).max()) for c in codes.T]


def test_fitted_codes_decode_consistently_and_encode_is_nearest():
    emb = clustered()
    q = QUANTIZERS["rqkmeans_balanced"]({"codebook_sizes": [8, 8], "niter": 5, "balance_iters": 3})
    codes, last = q.fit_encode(emb, progress=False)
    # naive residual walk along the balanced codes: the last distances are to the last residual
    resid = emb.astype(np.float64) - q.codebooks[0][codes[:, 0]]
    naive_last = ((resid[:, None, :] - q.codebooks[1][None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(last, naive_last, rtol=1e-4, atol=1e-4)
    resid -= q.codebooks[1][codes[:, 1]]
    np.testing.assert_allclose(q.decode(codes), emb - resid, atol=1e-5)
    rel = (resid ** 2).sum() / (emb.astype(np.float64) ** 2).sum()
    assert abs(q.fit_info["relative_residual"] - rel) < 1e-5
    # the balance moved some items off their nearest centroid; encode picks the nearest at every level
    assert q.fit_info["share_not_nearest"][0] > 0
    enc = q.encode(emb)
    resid = emb.astype(np.float64)
    for level, cb in enumerate(q.codebooks):
        d = ((resid[:, None, :] - cb[None].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_array_equal(enc[:, level], d.argmin(1))
        resid -= cb[enc[:, level]]
    np.testing.assert_allclose(q.reconstruct(emb), q.decode(enc), atol=0)
    assert not np.array_equal(enc, codes)


def test_fewer_collisions_and_more_even_codes_than_plain_rqkmeans(tmp_path):
    emb = clustered(300)
    cfg = {"codebook_sizes": [16, 16], "niter": 10}
    plain = QUANTIZERS["rqkmeans"](cfg).fit_encode(emb, progress=False)[0]
    q = QUANTIZERS["rqkmeans_balanced"](cfg)
    balanced = q.fit_encode(emb, progress=False)[0]
    assert collision_stats(balanced)["collisions"] < collision_stats(plain)["collisions"]
    assert collision_stats(balanced)["max_group"] < collision_stats(plain)["max_group"]
    for p, b in zip(code_usage(plain, [16, 16]), code_usage(balanced, [16, 16])):
        assert b["perplexity"] > p["perplexity"] + 5  # the tight blob no longer sits under one code
    q.save_pretrained(tmp_path / "q")
    back = Quantizer.from_pretrained(tmp_path / "q")
    assert type(back) is type(q) and back.config == q.config
    np.testing.assert_array_equal(back.encode(emb), q.encode(emb))


@pytest.mark.parametrize("bad,message", [
    ({"balance_iters": -1}, "balance_iters must be >= 0, got -1"),
    ({"sinkhorn_epsilon": 0.0}, "sinkhorn_epsilon must be positive, got 0.0"),
    ({"sinkhorn_iters": 0}, "sinkhorn_iters must be >= 1, got 0"),
    ({"balance_iter": 3}, "unknown key 'balance_iter'; did you mean 'balance_iters'"),
    ({"codebook_sizes": [8, 0]}, "every codebook needs at least one code"),
])
def test_bad_config_is_one_clear_line(bad, message):
    with pytest.raises(SemrecError, match=message) as e:
        QUANTIZERS["rqkmeans_balanced"]({"codebook_sizes": [8], **bad})
    assert "\n" not in str(e.value)
