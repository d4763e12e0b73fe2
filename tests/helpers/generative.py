"""Tiny catalogues, examples and model configs shared by the generative-model tests."""

from __future__ import annotations

import numpy as np
import torch

from semrec.data.dataset import Examples
from semrec.itemtok.artifact import ItemTokenization

TIGER_TINY = dict(num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2, d_kv=16, d_ff=64, max_history=6)
# every encoder-input option on: separators, anchor, recency and item-id embeddings, user token, untied head
TIGER_RICH = dict(TIGER_TINY, item_positions=True, item_separator=True, eos_anchor=True, user_buckets=3,
                  tie_embeddings=False, embedding_init_std=0.1, item_embeddings=True)
# every option on, and a learned output vector per trie edge (zero at the start: `with_edge_vectors` fills them)
TIGER_EDGE = dict(TIGER_RICH, edge_head=True)
# the encoder input of the original TIGER: the history's codes only (the defaults add recency + an anchor)
TIGER_PLAIN = dict(TIGER_TINY, item_positions=False, eos_anchor=False, dropout=0.1)
LLAMA_TINY = dict(style="llama", num_layers=2, d_model=32, num_heads=2, d_ff=64, max_history=6)
# grouped-query attention (2 key/value heads for 4 query heads)
LLAMA_GQA = dict(style="llama", num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=64, max_history=6)
GPT2_TINY = dict(style="gpt2", num_layers=1, d_model=32, num_heads=2, d_ff=64, max_history=6)


def semantic_ids(n: int = 50, sizes=(4, 4, 4), seed: int = 0) -> ItemTokenization:
    """Random semantic IDs with a TIGER collision digit, so every item has a distinct code."""
    rng = np.random.default_rng(seed)
    raw = np.stack([rng.integers(0, k, n) for k in sizes], 1)
    seen: dict[tuple, int] = {}
    digit = np.zeros(n, dtype=np.int64)
    for i, row in enumerate(map(tuple, raw)):
        digit[i] = seen.get(row, 0)
        seen[row] = digit[i] + 1
    raw = np.concatenate([raw, digit[:, None]], 1)
    return ItemTokenization.from_raw_codes(raw, list(sizes) + [int(digit.max()) + 1], scheme="rqkmeans")


def titles(n: int = 60, seed: int = 1, words: int = 7, max_words: int = 4) -> ItemTokenization:
    """Title-like token sequences of 1..max_words words then EOS (pad 0, bos 1, eos 2), all distinct."""
    rng = np.random.default_rng(seed)
    rows: set[tuple] = set()
    while len(rows) < n:
        length = int(rng.integers(1, max_words + 1))
        rows.add(tuple(int(t) for t in rng.integers(3, 3 + words, length)) + (2,))
    seqs = [list(r) for r in sorted(rows)]
    rng.shuffle(seqs)
    codes = np.zeros((n, max_words + 1), dtype=np.int64)
    for i, r in enumerate(seqs):
        codes[i, :len(r)] = r
    vocab = 3 + words
    return ItemTokenization(torch.from_numpy(codes), vocab_size=vocab, pad_id=0, bos_id=1, eos_id=2,
                            level_offsets=[0] * codes.shape[1], codebook_sizes=[vocab] * codes.shape[1],
                            scheme="title")


def examples(rows: int, n_items: int, seed: int = 0, max_len: int = 8) -> Examples:
    """Random histories of 1..max_len items. Targets follow a learnable rule (next id after the last item)."""
    rng = np.random.default_rng(seed)
    hists = [rng.integers(0, n_items, rng.integers(1, max_len + 1)).tolist() for _ in range(rows)]
    targets = [(h[-1] + 1) % n_items for h in hists]
    return Examples.from_lists(rng.integers(0, 100, rows), hists, targets)


@torch.no_grad()
def score_items(model, batch, items: torch.Tensor | None = None, *, chunk: int = 256) -> torch.Tensor:
    """Exhaustive reference: log P(item's whole token sequence | user) for every user x item, (B, M).

    items: (M,) item ids (default: the whole catalogue). Teacher-forced, one forward per item chunk."""
    was_training = model.training
    model.eval()
    n = model.codes.shape[0]
    items = torch.arange(n, device=batch.input_ids.device) if items is None else items.to(batch.input_ids.device)
    b = len(batch)
    out = []
    for lo in range(0, len(items), chunk):
        it = items[lo:lo + chunk]
        m = len(it)
        rep = batch.__class__(
            input_ids=batch.input_ids.repeat_interleave(m, 0),
            attention_mask=batch.attention_mask.repeat_interleave(m, 0),
            histories=batch.histories.repeat_interleave(m, 0), users=batch.users.repeat_interleave(m, 0),
            rows=batch.rows.repeat_interleave(m, 0), target_tokens=model.codes[it].repeat(b, 1))
        logp = torch.log_softmax(model(rep).float(), -1)
        tgt = rep.target_tokens
        real = tgt != model.pad_id
        tok_lp = logp.gather(2, tgt.clamp(min=0)[:, :, None])[:, :, 0]
        out.append((tok_lp * real).sum(1).view(b, m))
    if was_training:
        model.train()
    return torch.cat(out, 1)


def with_edge_vectors(model, seed: int = 0, std: float = 1.0):
    """`model` with random trie-edge output vectors when it has an edge head (they start at zero, which would
    leave the edge logits untested)."""
    if getattr(model.config, "edge_head", False):
        g = torch.Generator().manual_seed(seed)
        w = model.hf.decoder.edge_vectors.weight
        with torch.no_grad():
            w.copy_(torch.randn(w.shape, generator=g) * std)
    return model
