"""Generative recommenders: TIGER (T5 encoder-decoder) and decoder-only causal LMs over item tokens.

    model = build_model("tiger", tokenization, {"d_model": 128}, seed=0)
    model.save_pretrained("out/model");  model = load_model("out/model", tokenization=tok)
"""

from __future__ import annotations

from typing import Any

from semrec.errors import SemrecError
from semrec.models.base import MODELS, GenerativeRecommender, register_model, tokenization_fingerprint
from semrec.models.batching import Batch
from semrec.models.tiger import TigerConfig, TigerRecommender  # registered first: MODELS lists tiger, decoder, llm
from semrec.models.decoder import DecoderConfig, DecoderRecommender  # noqa: I001
from semrec.models.llm import LLMConfig, LLMRecommender


def build_model(name: str, tokenization: Any, config: Any = None, *, seed: int | None = None) -> GenerativeRecommender:
    """A freshly initialised model `name` (a MODELS key) for `tokenization`; config: dataclass, dict, YAML or None."""
    if name not in MODELS:
        raise SemrecError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    return MODELS[name].from_tokenization(tokenization, config, seed=seed)


def load_model(path, *, tokenization: Any = None, device="cpu") -> GenerativeRecommender:
    """Load any saved generative model (class chosen by the arch stored in its config.json)."""
    return GenerativeRecommender.from_pretrained(path, tokenization=tokenization, device=device)


__all__ = ["MODELS", "Batch", "DecoderConfig", "DecoderRecommender", "GenerativeRecommender",
           "TigerConfig", "TigerRecommender", "build_model", "load_model", "register_model", "tokenization_fingerprint"]
