"""PQ semantic IDs through the unchanged prefix index and Collaborative Tokenizer: codes of sub-vectors
(not residual levels) form an ordinary fixed-length catalogue, and the CF next-token distribution over
them equals a plain per-position reference."""

import numpy as np
import torch

from semrec.itemtok.artifact import ItemTokenization
from semrec.quantizers import QUANTIZERS, resolve_collisions
from semrec.tca import CollaborativeTokenizer, collaborative_token_distribution


def pq_tokenization(n: int = 150) -> tuple[ItemTokenization, np.ndarray]:
    """PQ (2 sub-vectors x 16 codes) of random vectors with a few duplicates, collisions resolved as the
    schemes do (Sinkhorn on the last sub-vector's code; here two first-code groups exceed 16 items, so the
    leftovers also get TIGER's extra code)."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    emb[10:13] = emb[9]
    q = QUANTIZERS["pq"]({"codebook_sizes": [16, 16]}).fit(emb, progress=False)
    raw, last = q.encode_with_distances(emb)
    codes, sizes, report = resolve_collisions(raw, "sinkhorn", last_dist=last, codebook_sizes=q.codebook_sizes)
    assert report["before"]["collisions"] >= 3 and report["reassigned_items"] > 0
    tok = ItemTokenization.from_raw_codes(codes, sizes, scheme="pq", quantizer=q,
                                          collisions_before=report["before"]["collisions"])
    return tok, emb


def naive_distribution(logits: torch.Tensor, codes: np.ndarray, targets: np.ndarray, vocab: int, pad: int):
    """p[b, j, t]: softmax of the teacher scores over the items whose first j tokens are the target's,
    summed by their j-th token t; zero where the target is padding."""
    out = torch.zeros(targets.shape[0], targets.shape[1], vocab, dtype=torch.float64)
    for b, row in enumerate(targets):
        for j, tok in enumerate(row):
            if tok == pad:
                break
            match = np.flatnonzero((codes[:, :j] == row[:j]).all(1))
            p = torch.softmax(logits[b, match], 0)
            for i, pi in zip(match, p):
                out[b, j, codes[i, j]] += pi
    return out


def test_pq_codes_through_the_prefix_index_and_the_collaborative_tokenizer(tmp_path):
    tok, emb = pq_tokenization()
    n, codes = tok.num_items, tok.codes.numpy()
    assert tok.is_semantic_id and tok.num_levels == 3 and len(tok.token_strings()) == tok.vocab_size
    index = tok.prefix_index()
    assert index.items_of(tok.codes).tolist() == list(range(n))
    raw = tok.raw_codes
    for c in range(16):  # a one-code prefix: the items whose first sub-vector got code c
        assert index.prefix_items([tok.level_offsets[0] + c]) == np.flatnonzero(raw[:, 0] == c).tolist()

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, n, generator=g, dtype=torch.float64) * 2
    targets = codes[[0, 9, 10, 77, 149]].copy()
    targets[3, 1:] = tok.pad_id  # a first-code prefix only
    ref = naive_distribution(logits, codes, targets, tok.vocab_size, tok.pad_id)
    dense = CollaborativeTokenizer(index)(logits, torch.from_numpy(targets))
    fun = collaborative_token_distribution(logits, tok.codes, torch.from_numpy(targets),
                                           vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    torch.testing.assert_close(dense, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(fun, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(dense.sum(-1), torch.from_numpy(targets != tok.pad_id).double(), atol=1e-12, rtol=0)

    tok.save_pretrained(tmp_path / "pq")
    back = ItemTokenization.from_pretrained(tmp_path / "pq")
    assert torch.equal(back.codes, tok.codes) and back.scheme == "pq"
    np.testing.assert_array_equal(back.quantizer.encode(emb), tok.quantizer.encode(emb))
