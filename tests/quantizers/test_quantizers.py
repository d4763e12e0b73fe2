"""Quantizers (RQ-KMeans, balanced RQ-KMeans, PQ, OPQ, RQ-VAE, LETTER) and collision resolution, on tiny
synthetic embeddings (the balanced and product quantizers' own properties: test_rqkmeans_balanced.py,
test_pq.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from semrec.errors import SemrecError
from semrec.quantizers import QUANTIZERS, Quantizer, collision_stats, resolve_collisions
from semrec.quantizers.collisions import extra_code, sinkhorn, sinkhorn_last_level
from semrec.quantizers.letter import pca_projection, sample_cluster_positives
from semrec.quantizers.rqvae import rotation_trick

TINY = {
    "rqkmeans": {"codebook_sizes": [8, 8], "niter": 10},
    "rqkmeans_balanced": {"codebook_sizes": [8, 8], "niter": 10, "balance_iters": 3},
    "pq": {"codebook_sizes": [8, 8], "niter": 10},
    "opq": {"codebook_sizes": [8, 8], "niter": 10, "opq_iters": 5},
    "rqvae": {"codebook_sizes": [8, 8], "hidden_dims": [16], "latent_dim": 4, "epochs": 3, "batch_size": 64},
    "letter": {"codebook_sizes": [8, 8], "hidden_dims": [16], "latent_dim": 4, "epochs": 3, "batch_size": 64,
               "div_every": 1},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 12)) * 3
    lab = rng.integers(0, 6, 240)
    emb = (centers[lab] + rng.standard_normal((240, 12))).astype(np.float32)
    cf = (rng.standard_normal((6, 5))[lab] + 0.3 * rng.standard_normal((240, 5))).astype(np.float32)
    return emb, cf


def test_every_registered_quantizer_is_covered():
    assert set(TINY) == set(QUANTIZERS)


@pytest.mark.parametrize("name", list(TINY))
def test_determinism_round_trip_and_shapes(name, data, tmp_path):
    emb, cf = data
    q1 = QUANTIZERS[name](TINY[name]).fit(emb, cf)
    q2 = QUANTIZERS[name](TINY[name]).fit(emb, cf)
    c1, c2 = q1.encode(emb), q2.encode(emb)
    assert c1.shape == (240, 2) and c1.dtype == np.int64
    assert (c1 >= 0).all() and (c1 < 8).all()
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(q1.reconstruct(emb), q2.reconstruct(emb))
    q1.save_pretrained(tmp_path / name)
    back = Quantizer.from_pretrained(tmp_path / name)
    assert type(back) is type(q1) and back.config == q1.config
    np.testing.assert_array_equal(back.encode(emb), c1)
    np.testing.assert_allclose(back.reconstruct(emb), q1.reconstruct(emb), atol=1e-6)
    np.testing.assert_allclose(back.encode_with_distances(emb)[1], q1.encode_with_distances(emb)[1], atol=1e-5)
    # last-level distances are consistent with the chosen last code
    np.testing.assert_array_equal(q1.encode_with_distances(emb)[1].argmin(1), c1[:, -1])
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / name / "weights.safetensors").is_file()
    if name in ("rqvae", "letter"):  # loss curve: logged per epoch, saved with the weights, plotted
        assert len(back.fit_info["history"]) == TINY[name]["epochs"]
        assert (tmp_path / name / "loss_curve.png").is_file()
    # a different seed gives different codebooks
    other = QUANTIZERS[name]({**TINY[name], "seed": 7}).fit(emb, cf)
    assert not np.array_equal(other.reconstruct(emb), q1.reconstruct(emb))


def test_rqkmeans_matches_naive_residual_assignment(data):
    emb, _ = data
    q = QUANTIZERS["rqkmeans"](TINY["rqkmeans"]).fit(emb)
    codes = q.encode(emb)
    resid = emb.astype(np.float64)
    for l, cb in enumerate(q.codebooks):
        d = ((resid[:, None, :] - cb[None].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_array_equal(d.argmin(1), codes[:, l])
        resid = resid - cb[codes[:, l]]
    np.testing.assert_allclose(q.reconstruct(emb), emb - resid, atol=1e-4)
    # two levels reconstruct better than the first level alone
    assert ((emb - q.reconstruct(emb)) ** 2).sum() < ((emb - q.codebooks[0][codes[:, 0]]) ** 2).sum()


def test_bad_input_errors(data, tmp_path):
    emb, _ = data
    with pytest.raises(SemrecError, match="unknown key 'codebook_size'; did you mean 'codebook_sizes'"):
        QUANTIZERS["rqvae"]({"codebook_size": 8})
    with pytest.raises(SemrecError, match="cannot fill a codebook of 512"):
        QUANTIZERS["rqkmeans"]({"codebook_sizes": [512]}).fit(emb)
    q = QUANTIZERS["rqkmeans"](TINY["rqkmeans"])
    with pytest.raises(SemrecError, match="not fitted"):
        q.encode(emb)
    q.fit(emb)
    with pytest.raises(SemrecError, match="dimension 5"):
        q.encode(emb[:, :5])
    with pytest.raises(SemrecError, match="has 10 rows but the catalogue has 240"):
        QUANTIZERS["rqkmeans"](TINY["rqkmeans"]).fit(emb, np.zeros((10, 3), np.float32))
    with pytest.raises(SemrecError, match="needs CF item embeddings"):
        QUANTIZERS["letter"](TINY["letter"]).fit(emb)
    bad = emb.copy()
    bad[3, 1] = np.inf
    with pytest.raises(SemrecError, match="row 3"):
        q.encode(bad)
    with pytest.raises(SemrecError, match="not a semrec quantizer|no such file"):
        Quantizer.from_pretrained(tmp_path)


def test_rotation_trick_value_and_gradient():
    torch.manual_seed(0)
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    q = torch.randn(5, 4, dtype=torch.float64)
    out = rotation_trick(z, q)
    torch.testing.assert_close(out, q)
    g = torch.randn(5, 4, dtype=torch.float64)
    (out * g).sum().backward()
    for i in range(5):  # explicit matrix: d out / d z = (|q|/|z|) R, R = I - 2 w w^T + 2 v u^T
        zi, qi = z[i].detach(), q[i]
        u, v = zi / zi.norm(), qi / qi.norm()
        w = (u + v) / (u + v).norm()
        r = torch.eye(4, dtype=torch.float64) - 2 * torch.outer(w, w) + 2 * torch.outer(v, u)
        torch.testing.assert_close(r @ u, v)
        torch.testing.assert_close(r.T @ r, torch.eye(4, dtype=torch.float64))  # a rotation
        torch.testing.assert_close(z.grad[i], (qi.norm() / zi.norm()) * (r.T @ g[i]))


def test_rotation_estimator_trains(data):
    emb, _ = data
    q = QUANTIZERS["rqvae"]({**TINY["rqvae"], "estimator": "rotation"}).fit(emb)
    hist = q.fit_info["history"]
    assert hist[-1]["recon"] < hist[0]["recon"]


def test_dead_code_restarts_revive_codes(data):
    emb, _ = data
    cfg = {**TINY["rqvae"], "codebook_sizes": [32], "kmeans_init": "none", "epochs": 3, "restart_until": 1.0}
    off = QUANTIZERS["rqvae"]({**cfg, "dead_code_restart": False}).fit(emb)
    on = QUANTIZERS["rqvae"](cfg).fit(emb)
    assert sum(on.fit_info["history"][0]["restarted"]) > 0
    assert on.fit_info["history"][-1]["codes_used"][0] > off.fit_info["history"][-1]["codes_used"][0]
    assert len(np.unique(on.encode(emb)[:, 0])) > len(np.unique(off.encode(emb)[:, 0]))


def test_letter_losses_recorded_and_cf_term_aligns_codes():
    """Text embeddings hold two cluster structures: a strong one unrelated to CF and a weaker one equal
    to the CF clusters. Plain RQ-VAE's first level follows the strong one; LETTER's collaborative term
    must make first codes follow the CF clusters."""
    rng = np.random.default_rng(3)
    n = 400
    la, lab = rng.integers(0, 4, n), rng.integers(0, 4, n)
    emb = (3 * rng.standard_normal((4, 16))[la] + rng.standard_normal((4, 16))[lab]
           + 0.3 * rng.standard_normal((n, 16))).astype(np.float32)
    cf = (rng.standard_normal((4, 8))[lab] + 0.1 * rng.standard_normal((n, 8))).astype(np.float32)
    base = {"codebook_sizes": [4, 4], "hidden_dims": [32], "latent_dim": 8, "epochs": 20, "batch_size": 100,
            "lr": 3e-3}

    def purity(codes):  # share of item pairs with the same first code that share the CF cluster
        same = codes[:, 0][:, None] == codes[:, 0][None, :]
        np.fill_diagonal(same, False)
        return (lab[:, None] == lab[None, :])[same].mean()

    plain = QUANTIZERS["rqvae"](base).fit(emb)
    letter = QUANTIZERS["letter"]({**base, "cf_weight": 1.0, "div_weight": 0.01, "div_clusters": 2}).fit(emb, cf)
    h = letter.fit_info["history"]
    assert {"cf", "div", "recon", "quant"} <= set(h[0]) and h[0]["div"] > 0
    assert h[-1]["cf"] < h[0]["cf"]
    assert purity(plain.encode(emb)) < 0.3
    assert purity(letter.encode(emb)) > purity(plain.encode(emb)) + 0.15


def test_cluster_positives_and_pca_projection():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 3])
    codes = torch.arange(8).repeat(50)
    pos, valid = sample_cluster_positives(codes, labels, torch.Generator().manual_seed(0))
    assert valid.tolist() == [True, True, True, False, True, True, True, True] * 50
    assert (labels[pos[valid]] == labels[codes[valid]]).all() and (pos[valid] != codes[valid]).all()
    seen = Counter(pos[codes == 0].tolist())
    assert set(seen) == {2, 5}  # both other members of cluster 0 get drawn
    x = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    p = pca_projection(x, 3)
    assert p.shape == (6, 3)
    np.testing.assert_allclose(p.T @ p, np.eye(3), atol=1e-5)
    np.testing.assert_array_equal(pca_projection(x, 6), np.eye(6))


def _naive_collisions(codes):
    counts = Counter(map(tuple, codes.tolist()))
    return len(codes) - len(counts), sum(c for c in counts.values() if c > 1)


def test_collision_stats_and_extra_code_against_naive():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, (300, 2))
    st = collision_stats(codes)
    assert (st["collisions"], st["items_in_collisions"]) == _naive_collisions(codes)
    out, size = extra_code(codes)
    seen: dict = {}
    for i, row in enumerate(codes.tolist()):  # naive: rank by item id inside each group
        r = seen.setdefault(tuple(row), [])
        assert out[i, -1] == len(r)
        r.append(i)
    assert size == max(len(v) for v in seen.values())
    assert len(np.unique(out, axis=0)) == 300


def test_sinkhorn_plan_marginals():
    cost = np.random.default_rng(1).random((5, 9))
    plan = sinkhorn(cost, epsilon=0.1, iters=500)
    np.testing.assert_allclose(plan.sum(1), 1 / 5, atol=1e-6)
    np.testing.assert_allclose(plan.sum(0), 1 / 9, atol=1e-6)


@pytest.mark.parametrize("method", ["sinkhorn", "extra_code"])
def test_adversarial_duplicates_get_unique_ids(method):
    """150 identical embeddings (one group larger than any codebook) + 20 pairs + random items."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((400, 8)).astype(np.float32)
    emb[:150] = emb[0]
    emb[200:240:2] = emb[201:241:2]
    q = QUANTIZERS["rqkmeans"]({"codebook_sizes": [4, 16]}).fit(emb)
    raw, dist = q._encode(emb)
    before = collision_stats(raw)
    assert before["collisions"] >= 149 + 20
    codes, sizes, rep = resolve_collisions(raw, method, last_dist=dist, codebook_sizes=q.codebook_sizes)
    assert len(np.unique(codes, axis=0)) == 400 and rep["after"]["collisions"] == 0
    assert rep["before"] == before
    for l, k in enumerate(sizes):
        assert codes[:, l].max() < k
    if method == "sinkhorn":
        assert rep.get("fallback_extra_code") is True  # 150 > 16 last-level codes
    fixed = np.array([c == 1 for c in Counter(map(tuple, raw.tolist())).values()])
    assert fixed.any()
    uniq = collision_stats(raw)  # items unique before resolution keep their prefix and last code
    counts = Counter(map(tuple, raw.tolist()))
    keep = np.array([counts[tuple(r)] == 1 for r in raw.tolist()])
    np.testing.assert_array_equal(codes[keep, : raw.shape[1]], raw[keep])
    assert uniq["collisions"] == before["collisions"]


def test_sinkhorn_resolves_small_groups_without_extra_level():
    rng = np.random.default_rng(0)
    raw = np.stack([rng.integers(0, 15, 60), rng.integers(0, 8, 60)], 1)
    dist = rng.random((60, 8))
    out, changed = sinkhorn_last_level(raw, dist)
    assert len(np.unique(out, axis=0)) == 60 and changed > 0
    np.testing.assert_array_equal(out[:, 0], raw[:, 0])  # prefixes never change
    codes, sizes, rep = resolve_collisions(raw, "sinkhorn", last_dist=dist, codebook_sizes=[15, 8])
    assert rep["extra_level"] is False and codes.shape == (60, 2) and sizes == [15, 8]
    with pytest.raises(SemrecError, match="method"):
        resolve_collisions(raw, "magic")
