"""Random token catalogues with shared prefixes, duplicates, variable lengths and single-item paths,
shared by the prefix-index and Collaborative Tokenizer tests."""

import random

import torch


def semantic_ids(n, levels, codes, seed):
    """Fixed-length semantic IDs with level offsets; few codes -> many shared prefixes and duplicates."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, codes, (n, levels), generator=g)
    raw[:-1, 0] %= codes - 1  # the last item alone starts with the last code: a single-item path
    raw[-1] = codes - 1
    return raw + torch.arange(levels) * codes


def variable_seqs(n, max_len, tokens, pad, eos, seed):
    """Right-padded variable-length rows over the token list `tokens`; with `eos` every row ends in it
    (title-like), without it some rows are prefixes of others. Has duplicates and a single-item path."""
    rng = random.Random(seed)
    body = max_len - (eos is not None)
    seqs = []
    for _ in range(n):
        ln = rng.randint(1, body)
        seqs.append([rng.choice(tokens[:3]) if k < 2 else rng.choice(tokens) for k in range(ln)])  # shared heads
    seqs[1] = list(seqs[0])  # duplicates
    seqs[5] = list(seqs[0])
    seqs[2] = [tokens[0], tokens[1], tokens[2]][:body]
    seqs[3] = seqs[2][:-1] or [tokens[1]]  # a prefix of another item (distinct only without eos)
    seqs[-1] = [tokens[-1]] * body  # single-item path
    rows = [s + ([eos] if eos is not None else []) for s in seqs]
    return torch.tensor([r + [pad] * (max_len - len(r)) for r in rows])


# name -> (item_tokens, vocab_size, pad_id)
CATALOGUES = {
    "semantic_ids": lambda: (semantic_ids(60, 3, 4, 0), 12, -1),
    "semantic_ids_pad_in_vocab": lambda: (semantic_ids(40, 4, 2, 1), 9, 8),
    "titles_eos": lambda: (variable_seqs(50, 6, list(range(6)), pad=7, eos=6, seed=2), 8, 7),
    "variable_no_eos_pad0": lambda: (variable_seqs(45, 5, list(range(1, 7)), pad=0, eos=None, seed=3), 7, 0),
}


def seqs_of(tokens, pad):
    return [[t for t in row if t != pad] for row in tokens.tolist()]
