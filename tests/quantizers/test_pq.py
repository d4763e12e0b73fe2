"""PQ and OPQ: codes against faiss and a naive per-sub-vector search, decode = concatenated sub-centroids
(OPQ: rotated back by R^T), what a prefix depends on, save/load, and bad inputs."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from semrec.errors import SemrecError
from semrec.quantizers import QUANTIZERS, Quantizer


@pytest.fixture(scope="module")
def emb():
    """300 items in 12 dims, the variance concentrated in the first 4 (the case OPQ's rotation is for)."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((300, 12)) * np.r_[np.full(4, 3.0), np.full(8, 0.3)]).astype(np.float32)


def naive_codes(y: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    sub = y.shape[1] // len(codebooks)
    out = []
    for l, cb in enumerate(codebooks):
        part = y[:, l * sub:(l + 1) * sub].astype(np.float64)
        out.append(((part[:, None, :] - cb[None].astype(np.float64)) ** 2).sum(-1).argmin(1))
    return np.stack(out, 1)


def test_pq_codes_match_faiss_and_decode_concatenates_sub_centroids(emb):
    q = QUANTIZERS["pq"]({"codebook_sizes": [8, 8, 8]}).fit(emb, progress=False)
    codes, last = q.encode_with_distances(emb)
    assert q.rotation is None and [c.shape for c in q.codebooks] == [(8, 4)] * 3
    np.testing.assert_array_equal(codes, naive_codes(emb, q.codebooks))
    ref = faiss.ProductQuantizer(12, 3, 3)
    faiss.copy_array_to_vector(np.stack(q.codebooks).ravel(), ref.centroids)
    packed = ref.compute_codes(emb).astype(np.int64)  # 3 codes of 3 bits in 2 bytes, least significant first
    word = packed[:, 0] | (packed[:, 1] << 8)
    np.testing.assert_array_equal(np.stack([(word >> (3 * m)) & 7 for m in range(3)], 1), codes)
    concat = np.concatenate([q.codebooks[l][codes[:, l]] for l in range(3)], axis=1)
    np.testing.assert_array_equal(q.decode(codes), concat)
    np.testing.assert_array_equal(q.reconstruct(emb), concat)
    np.testing.assert_allclose(last, ((emb[:, None, 8:] - q.codebooks[2][None]) ** 2).sum(-1), rtol=1e-4, atol=1e-4)


def test_pq_prefix_depends_on_the_first_sub_vectors_only(emb):
    q = QUANTIZERS["pq"]({"codebook_sizes": [8, 8, 8]}).fit(emb, progress=False)
    other = emb.copy()
    other[:, 4:] = np.random.default_rng(1).standard_normal((300, 8))  # change sub-vectors 1 and 2
    a, b = q.encode(emb), q.encode(other)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert (a[:, 1:] != b[:, 1:]).any()


def test_opq_rotation_is_orthogonal_and_reconstruct_rotates_back(emb, tmp_path):
    q = QUANTIZERS["opq"]({"codebook_sizes": [8, 8, 8], "opq_iters": 10}).fit(emb, progress=False)
    r = q.rotation
    assert r.shape == (12, 12)
    np.testing.assert_allclose(r @ r.T, np.eye(12), atol=1e-5)
    codes = q.encode(emb)
    np.testing.assert_array_equal(codes, naive_codes(emb @ r.T, q.codebooks))
    concat = np.concatenate([q.codebooks[l][codes[:, l]] for l in range(3)], axis=1)
    np.testing.assert_allclose(q.reconstruct(emb), (r.T.astype(np.float64) @ concat.T).T, atol=1e-5)
    plain = QUANTIZERS["pq"]({"codebook_sizes": [8, 8, 8]}).fit(emb, progress=False)
    assert q.fit_info["relative_residual"] < 0.5 * plain.fit_info["relative_residual"]
    q.save_pretrained(tmp_path / "opq")
    back = Quantizer.from_pretrained(tmp_path / "opq")
    assert type(back) is type(q) and back.config == q.config
    np.testing.assert_array_equal(back.rotation, r)
    np.testing.assert_array_equal(back.encode(emb), codes)
    np.testing.assert_array_equal(back.reconstruct(emb), q.reconstruct(emb))


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_bad_inputs_are_one_clear_line(name, emb):
    cases = [
        (lambda: QUANTIZERS[name]({"codebook_sizes": [8, 8, 8, 8, 8]}).fit(emb, progress=False),
         f"{name}: embedding dimension 12 is not divisible by the 5 sub-vectors"),
        (lambda: QUANTIZERS[name]({"codebook_sizes": [8, 16]}),
         "same power-of-two size .*got \\[8, 16\\]"),
        (lambda: QUANTIZERS[name]({"codebook_sizes": [6, 6]}), "power-of-two size .*got \\[6, 6\\]"),
        (lambda: QUANTIZERS[name]({"codebook_sizes": [512, 512]}).fit(emb, progress=False),
         "300 items cannot fill a codebook of 512 codes"),
        (lambda: QUANTIZERS[name]({"codebook_sizes": [8, 8]}).fit(emb, progress=False).encode(emb[:, :6]),
         "dimension 6, the quantizer was fitted on dimension 12"),
    ]
    for make, message in cases:
        with pytest.raises(SemrecError, match=message) as e:
            make()
        assert "\n" not in str(e.value)
    with pytest.raises(SemrecError, match="opq_iters must be >= 1"):
        QUANTIZERS["opq"]({"opq_iters": 0})
