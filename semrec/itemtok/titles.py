"""Title-token item tokenizations: each item is its normalised title in an LLM tokenizer + EOS;
items with identical token sequences share one entry (see semrec.itemtok.artifact for the layout)."""

from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from semrec.config import load_config
from semrec.errors import SemrecError
from semrec.itemtok.artifact import ItemTokenization, load_tokenizer
from semrec.llm_assets import resolve_backbone


@dataclass
class TitleConfig:
    """The `title:` section of a title scheme YAML."""

    tokenizer_path: str | None = None  # local HF tokenizer/model dir; None = the bundled MiniLM tokenizer
    prefix: str = ""  # prepended before tokenizing (e.g. " " so BPE tokens match a title inside a prompt)
    max_tokens: int | None = None  # title tokens kept before EOS (None = all)
    lowercase: bool = False


_CTRL = re.compile(r"[\x00-\x1f\x7f]")
_WS = re.compile(r"\s+")


def title_for_tokens(title: str | None, *, lowercase: bool = False) -> str:
    """The text a title is tokenized from: HTML-unescaped, control characters removed, whitespace
    collapsed, stripped ('' for None). Datasets clean their titles on import (semrec.data.clean_title);
    this is the tokenizer-side normalisation (lowercasing is a scheme option)."""
    if title is None:
        return ""
    s = _WS.sub(" ", _CTRL.sub(" ", html.unescape(str(title)))).strip()
    return s.lower() if lowercase else s


def _special_ids(tok) -> tuple[int, int | None]:
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
    if eos is None:
        raise SemrecError("title tokenizer: has neither an EOS nor a SEP token to end titles with")
    return int(eos), (None if bos is None else int(bos))


def title_tokenization(titles: Sequence[str | None], config: TitleConfig | dict | None = None, *,
                       tokenizer: Any = None, dataset_name: str = "") -> ItemTokenization:
    """Title-token scheme: each item is its cleaned title in the LLM tokenizer + EOS; items with
    identical token sequences share one entry."""
    cfg = config if isinstance(config, TitleConfig) else load_config(TitleConfig, config or {}, name="title")
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer_path)
    cleaned = [title_for_tokens(t, lowercase=cfg.lowercase) for t in titles]
    missing = [i for i, t in enumerate(cleaned) if not t]
    if missing:
        raise SemrecError(f"{dataset_name or 'catalogue'}: {len(missing)} item(s) have no title (first: item "
                          f"{missing[0]}); the title scheme needs one per item, use a semantic-ID scheme")
    eos, bos = _special_ids(tok)
    ids = tok([cfg.prefix + t for t in cleaned], add_special_tokens=False)["input_ids"]
    if cfg.max_tokens is not None:
        ids = [s[: cfg.max_tokens] for s in ids]
    seqs = [list(s) + [eos] for s in ids]
    used = {t for s in ids for t in s}
    pad = next((c for c in (tok.pad_token_id, tok.unk_token_id, bos)
                if c is not None and c != eos and c not in used), None)
    if pad is None:
        raise SemrecError("title tokenizer: no special token (pad/unk/bos) that never occurs in a title "
                          "to pad with")
    vocab = len(tok)
    length = max(len(s) for s in seqs) if seqs else 1
    codes = np.full((len(seqs), length), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        codes[i, : len(s)] = s
    if codes.size and codes.max() >= vocab:
        raise SemrecError(f"title tokenizer: token id {codes.max()} outside its vocabulary of {vocab}")
    keys: dict[tuple, int] = {}
    entry = np.array([keys.setdefault(tuple(s), len(keys)) for s in seqs], dtype=np.int64)
    stats = {"num_entries": len(keys), "duplicate_title_items": len(seqs) - len(keys),
             "mean_tokens": float(np.mean([len(s) for s in seqs])) if seqs else 0.0, "max_tokens": length,
             "items_truncated": int(sum(1 for s, t in zip(ids, cleaned) if cfg.max_tokens is not None
                                        and len(s) == cfg.max_tokens))}
    name_or_path = getattr(tok, "name_or_path", None)
    config = {"scheme": "title", "title": dataclasses.asdict(cfg),
              "tokenizer": {"class": type(tok).__name__, "name": Path(str(name_or_path)).name if name_or_path else None,
                            "eos_id": eos, "pad_id": int(pad), "bos_id": bos}}
    return ItemTokenization(torch.from_numpy(codes), vocab_size=vocab, pad_id=int(pad), bos_id=bos, eos_id=eos,
                            level_offsets=[0] * length, codebook_sizes=[vocab] * length, scheme="title",
                            config=config, collisions_before=len(seqs) - len(keys),
                            lengths=np.array([len(s) for s in seqs], dtype=np.int64), entry_of_item=entry,
                            stats=stats, tokenizer=tok)


def title_tokenization_for_llm(dataset, model_path: str | Path | None = None, *, max_title_chars: int | None = 100,
                               tokenizer: Any = None):
    """Title-scheme ItemTokenization of `dataset`'s catalogue in the LLM's tokenizer.

    Titles are cut to `max_title_chars` characters first (the authors keep 100), then cleaned and
    tokenized without special tokens, followed by EOS (`title_tokenization`)."""
    path = resolve_backbone(model_path) if tokenizer is None else None
    tok = tokenizer if tokenizer is not None else load_tokenizer(path)
    titles = dataset.items["title"].tolist()
    if max_title_chars is not None:
        titles = [t if not isinstance(t, str) else t[:max_title_chars] for t in titles]
    tokenization = title_tokenization(titles, TitleConfig(tokenizer_path=None if path is None else str(path)),
                                      tokenizer=tok, dataset_name=getattr(dataset, "name", ""))
    tokenization.config["max_title_chars"] = max_title_chars
    return tokenization
