"""A tiny finished `semrec run` directory (real pipeline, synthetic catalogue) for serving/report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from semrec.data.dataset import Examples, SeqDataset

WORDS = ["red", "blue", "green", "stapler", "pen", "paper", "notebook", "marker", "folder", "clip", "tape", "ink"]
TIGER_TINY = dict(num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2, d_kv=16, d_ff=64, max_history=5)


def tiny_titles(n: int) -> list[str]:
    """Distinct two- or three-word titles; 'Blue Pen' and 'Blue Pen Refill' share words (fuzzy ambiguity)."""
    out: list[str] = ["Blue Pen", "Blue Pen Refill", "Red Stapler Deluxe"]
    rng = np.random.default_rng(3)
    while len(out) < n:
        t = " ".join(w.capitalize() for w in rng.choice(WORDS, 3, replace=False)) + f" {len(out)}"
        out.append(t)
    return out


def tiny_dataset(n_items: int = 40, n_users: int = 60, seed: int = 0) -> SeqDataset:
    """Users walk the catalogue in steps of 1 or 2 (learnable); leave-one-out train/valid/test."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        start, length = int(rng.integers(0, n_items)), int(rng.integers(5, 9))
        seqs.append([(start + int(s)) % n_items for s in np.cumsum(rng.integers(1, 3, length))])
    users = np.arange(n_users)
    split = {"train": Examples.from_lists(users, [s[:-3] for s in seqs], [s[-3] for s in seqs]),
             "valid": Examples.from_lists(users, [s[:-2] for s in seqs], [s[-2] for s in seqs]),
             "test": Examples.from_lists(users, [s[:-1] for s in seqs], [s[-1] for s in seqs])}
    titles = tiny_titles(n_items)
    items = pd.DataFrame({"raw_id": [f"A{i:04d}" for i in range(n_items)], "title": titles,
                          "brand": [t.split()[0] for t in titles], "category": [t.split()[1] for t in titles]})
    return SeqDataset("tiny", items, split, users=pd.DataFrame({"raw_id": [f"u{u}" for u in users]}), protocol="T")


def write_tiny_inputs(root: Path) -> Path:
    """The tiny dataset under root/data and an rqkmeans 4x4 scheme at root/scheme.yaml; returns the data dir.
    Attribute vectors (TF-IDF + SVD of brand/category) keep tests free of the text encoder's load time."""
    root.mkdir(parents=True, exist_ok=True)
    data = tiny_dataset().save_pretrained(root / "data")
    scheme = {"scheme": "rqkmeans", "embedding": {"content": "attributes", "attribute_dim": 8,
                                                   "attribute_min_count": 1},
              "quantizer": {"codebook_sizes": [4, 4], "niter": 5, "seed": 0},
              "collisions": {"method": "extra_code"}}
    (root / "scheme.yaml").write_text(yaml.safe_dump(scheme))
    return data


def build_tiny_run(root: Path, *, seeds=(0,), alphas=(0.1, 0.5)) -> Path:
    """Run the real `semrec run` pipeline on the tiny dataset; returns the run directory."""
    from semrec.pipeline import load_recipe, run_recipe

    data = write_tiny_inputs(root)
    recipe = {"name": "tiny", "data": str(data), "seeds": list(seeds), "device": "cpu",
              "tokenizer": str(root / "scheme.yaml"),
              "teacher": {"model": "sasrec", "config": {"max_len": 5, "hidden": 16, "layers": 1, "heads": 1},
                          "train": {"epochs": 2, "batch_size": 64}},
              "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "warmup_steps": 1},
              "models": [{"name": "TIGER", "model": "tiger", "config": TIGER_TINY},
                         {"name": "TIGER+TCA", "model": "tiger", "config": TIGER_TINY, "train": {"loss": "tca"},
                          "sweep": {"alpha": list(alphas)}}],
              "eval": {"num_beams": 10, "batch_size": 64}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = root / "run"
    run_recipe(load_recipe(root / "recipe.yaml"), out, log=lambda s: None, progress=False)
    return out
