"""Tokenizer schemes: a YAML file (tokenizers/*.yaml) -> an ItemTokenization for a dataset.

    scheme: rqvae                 # rqkmeans | rqkmeans_balanced | pq | opq | rqvae | letter | title
    embedding: {content: text, template: "{title}[; brand: {brand}]"}   # semrec.embeddings.EmbedConfig
    quantizer: {codebook_sizes: [256, 256, 256], epochs: 100}          # the quantizer's config class
    collisions: {method: sinkhorn}                                      # or extra_code
    append_eos: false
    title: {tokenizer_path: null}                                       # title scheme only

Unknown keys anywhere (also inside `quantizer:`) are rejected with the file name and a suggestion.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from semrec.config import apply_overrides, load_config
from semrec.embeddings import EmbedConfig, ItemEmbeddings, check_matrix, compute_item_embeddings
from semrec.errors import SemrecError
from semrec.itemtok.artifact import ItemTokenization
from semrec.itemtok.quality import code_usage
from semrec.itemtok.titles import TitleConfig, title_tokenization
from semrec.quantizers.base import QUANTIZERS
from semrec.quantizers.collisions import resolve_collisions

if TYPE_CHECKING:  # pragma: no cover
    from semrec.data.dataset import SeqDataset

SchemeName = Literal["rqkmeans", "rqkmeans_balanced", "pq", "opq", "rqvae", "letter", "title"]
SCHEMES = get_args(SchemeName)  # every quantizer in QUANTIZERS, and "title"


@dataclass
class CollisionConfig:
    method: Literal["sinkhorn", "extra_code"] = "sinkhorn"
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iters: int = 100


@dataclass
class SchemeConfig:
    scheme: SchemeName
    description: str = ""
    embedding: EmbedConfig = field(default_factory=EmbedConfig)
    quantizer: dict[str, Any] = field(default_factory=dict)
    collisions: CollisionConfig = field(default_factory=CollisionConfig)
    append_eos: bool = False
    title: TitleConfig = field(default_factory=TitleConfig)

    def quantizer_config(self, where: str = "scheme"):
        """The typed config of the scheme's quantizer (unknown keys rejected)."""
        if self.scheme == "title":
            raise SemrecError(f"{where}: the title scheme has no quantizer")
        return load_config(QUANTIZERS[self.scheme].config_class, self.quantizer, name=f"{where}: quantizer")


def load_scheme(source: str | Path | dict | SchemeConfig, overrides: list[str] | None = None) -> SchemeConfig:
    """Read and fully validate a scheme YAML (or dict); `overrides` are `a.b=value` strings."""
    if isinstance(source, SchemeConfig):
        cfg, where = source, "scheme"
    else:
        where = str(source) if isinstance(source, (str, Path)) else "scheme"
        cfg = load_config(SchemeConfig, source, name=where)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if cfg.scheme == "title":
        if cfg.quantizer:
            raise SemrecError(f"{where}: the title scheme takes no 'quantizer' section")
    else:
        cfg.quantizer_config(where)  # validate now, before any expensive work
    return cfg


def build_tokenization(dataset: "SeqDataset", scheme: str | Path | dict | SchemeConfig, *,
                       embeddings: np.ndarray | ItemEmbeddings | None = None, cf_emb: np.ndarray | None = None,
                       cache_dir: str | Path | None = None, device: str = "auto", progress: bool = True,
                       overrides: list[str] | None = None) -> ItemTokenization:
    """Fit the scheme on `dataset`'s catalogue and return the artifact (quantizer attached).

    `embeddings` (N, d) skips computing the item vectors; `cf_emb` (N, d_cf) feeds LETTER and "cf" content."""
    cfg = load_scheme(scheme, overrides)
    n = dataset.num_items
    base_config = {"scheme_config": dataclasses.asdict(cfg), "dataset": dataset.name, "num_items": n}
    if cfg.scheme == "title":
        t0 = time.perf_counter()
        tok = title_tokenization(dataset.titles, cfg.title, dataset_name=dataset.name)
        tok.config.update(base_config)
        tok.stats["fit_seconds"] = time.perf_counter() - t0
        tok.stats["content"] = "title"
        tok.stats["usage"] = code_usage(tok.codes.numpy())
        return tok

    t0 = time.perf_counter()
    if embeddings is None:
        embeddings = compute_item_embeddings(dataset, cfg.embedding, cf_emb=cf_emb, cache_dir=cache_dir,
                                             device=device, progress=progress)
    if isinstance(embeddings, ItemEmbeddings):
        content, emb_info, emb = embeddings.content, embeddings.info, embeddings.vectors
    else:
        content, emb_info, emb = "given", {"source": "array passed by the caller"}, embeddings
    emb = check_matrix(emb, rows=n, what=f"embeddings for {dataset.name}")
    embed_seconds = time.perf_counter() - t0
    if cfg.scheme == "letter" and cf_emb is None:
        raise SemrecError("letter: needs CF item embeddings (pass --teacher DIR or --cf-emb FILE.npy)")
    if cf_emb is not None:
        cf_emb = check_matrix(cf_emb, rows=n, what=f"CF item embeddings for {dataset.name}")

    qcfg = cfg.quantizer_config()
    quantizer = QUANTIZERS[cfg.scheme](qcfg)
    raw, last_dist = quantizer.fit_encode(emb, cf_emb if cfg.scheme == "letter" else None, progress=progress)
    usage_before = code_usage(raw, quantizer.codebook_sizes)
    resolved, sizes, report = resolve_collisions(
        raw, cfg.collisions.method, last_dist=last_dist, codebook_sizes=quantizer.codebook_sizes,
        epsilon=cfg.collisions.sinkhorn_epsilon, iters=cfg.collisions.sinkhorn_iters)
    stats = {"content": content, "embedding": emb_info, "embed_seconds": embed_seconds,
             "fit_seconds": quantizer.fit_info.get("fit_seconds"), "collisions": report,
             "usage_before_resolution": usage_before, "usage": code_usage(resolved, sizes)}
    config = {**base_config, "quantizer": {"name": cfg.scheme, **dataclasses.asdict(qcfg)}, "content": content}
    return ItemTokenization.from_raw_codes(resolved, sizes, scheme=cfg.scheme, config=config,
                                           collisions_before=report["before"]["collisions"],
                                           append_eos=cfg.append_eos, stats=stats, quantizer=quantizer)
