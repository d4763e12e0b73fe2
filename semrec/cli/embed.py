"""`semrec embed`: item vectors (text / attributes / CF, or a concatenation) for a dataset's catalogue,
written as FILE.npy plus FILE.npy.json naming the content, model and template that made them."""

from __future__ import annotations

import argparse
from pathlib import Path

from semrec.errors import SemrecError


def add_cf_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--teacher", help="semrec.cf teacher directory whose item embeddings give CF vectors")
    g.add_argument("--cf-emb", help=".npy file (N, d) of CF item embeddings")


def add_cache_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="embedding cache directory (default: $SEMREC_CACHE_DIR/embeddings or "
                                       "~/.cache/semrec/embeddings)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")


def cache_dir_of(args) -> Path | None:
    from semrec.embeddings import default_cache_dir

    if args.no_cache:
        return None
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def cf_of(args, num_items: int):
    """CF item embeddings from --teacher / --cf-emb, or None."""
    from semrec.cf import cf_item_embeddings

    src = args.teacher or args.cf_emb
    return None if src is None else cf_item_embeddings(src, num_items)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed a dataset's items (text, attributes, CF) to a .npy file",
                       description="Build item vectors: sentence-transformers text embeddings over a template of item "
                                   "columns (model loaded by path, default the bundled all-MiniLM-L6-v2), attribute "
                                   "vectors, CF teacher vectors, or a '+'-joined concatenation. Cached on disk and "
                                   "streamed in chunks; an interrupted run resumes.")
    p.add_argument("--data", required=True, help="built-in dataset name (e.g. toys-t) or a dataset directory")
    p.add_argument("--out", required=True, help="output .npy file (a FILE.npy.json sidecar records the content)")
    p.add_argument("--scheme", help="take the settings from this scheme YAML's 'embedding:' section")
    p.add_argument("--content", help="text, attributes, cf, or e.g. text+attributes (default text)")
    p.add_argument("--template", help="text template, e.g. '{title}[; brand: {brand}]' ([...] = optional part)")
    p.add_argument("--fields", nargs="+", help="item columns for an automatic template (instead of --template)")
    p.add_argument("--model", help="local sentence-transformers or transformers model directory")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-normalize", action="store_true", help="keep raw (not L2-normalised) vectors")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an embedding setting, e.g. attribute_dim=32")
    add_cf_arguments(p)
    add_cache_arguments(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--devices", nargs="+", help="several devices (e.g. cuda:0 cuda:1): multi-process encoding")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=embed)


def embed(args) -> int:
    import dataclasses

    from semrec.config import apply_overrides
    from semrec.data import resolve_dataset
    from semrec.embeddings import EmbedConfig, compute_item_embeddings

    out = Path(args.out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    if out.exists() and not args.overwrite:
        raise SemrecError(f"{out}: already exists (pass --overwrite to replace it)")
    if args.scheme:
        from semrec.itemtok.schemes import load_scheme

        cfg = load_scheme(args.scheme).embedding
    else:
        cfg = EmbedConfig()
    changes = {k: v for k, v in {"content": args.content, "template": args.template, "model_path": args.model,
                                 "batch_size": args.batch_size}.items() if v is not None}
    if args.fields:
        changes.update(fields=list(args.fields), template=None)
    if args.no_normalize:
        changes["normalize"] = False
    try:
        cfg = dataclasses.replace(cfg, **changes)
    except ValueError as e:
        raise SemrecError(f"embed: {e}") from None
    cfg = apply_overrides(cfg, args.overrides)
    ds = resolve_dataset(args.data)
    res = compute_item_embeddings(ds, cfg, cf_emb=cf_of(args, ds.num_items), cache_dir=cache_dir_of(args),
                                  device=args.device, devices=args.devices, progress=not args.no_progress)
    res.info["dataset"] = ds.name
    path = res.save(out)
    print(f"wrote {path}: {res.vectors.shape[0]} items x {res.vectors.shape[1]} dims, content {res.content}")
    return 0
