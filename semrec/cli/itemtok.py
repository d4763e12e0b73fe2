"""`semrec tokenize` (fit a tokenizer scheme -> ItemTokenization directory) and
`semrec tokenizers compare` (several schemes side by side: Markdown + JSON table + plot)."""

from __future__ import annotations

import argparse
from pathlib import Path

from semrec.cli.embed import add_cache_arguments, add_cf_arguments, cache_dir_of, cf_of
from semrec.errors import SemrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="turn a dataset's items into token sequences (semantic IDs or titles)",
                       description="Fit a tokenizer scheme (tokenizers/*.yaml: rqkmeans, rqvae, letter, title) on a "
                                   "dataset's catalogue and write the ItemTokenization artifact (codes in the model "
                                   "vocabulary, layout, lookups, config, fitted quantizer).")
    p.add_argument("--data", required=True, help="built-in dataset name (e.g. toys-t) or a dataset directory")
    p.add_argument("--scheme", required=True, help="scheme YAML, e.g. tokenizers/rqvae.yaml")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scheme value, e.g. quantizer.epochs=50 or collisions.method=extra_code")
    p.add_argument("--embeddings", help="precomputed item vectors (.npy from 'semrec embed') instead of the "
                                        "scheme's embedding section")
    add_cf_arguments(p)
    add_cache_arguments(p)
    p.add_argument("--device", default="auto", help="device for text embedding (auto, cpu, cuda[:N])")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=tokenize)

    t = sub.add_parser("tokenizers", help="compare item tokenization schemes",
                       description="Tools over several tokenizer schemes.")
    tsub = t.add_subparsers(dest="tokenizers_command", metavar="ACTION")
    c = tsub.add_parser("compare", help="fit several schemes on one dataset and compare them",
                        description="Fit each scheme and write DIR/compare.{md,json,png}: collision rate before "
                                    "resolution, codes used and perplexity per level, reconstruction error, embedding "
                                    "cosine of items sharing a prefix vs random pairs, CF-neighbour agreement, fit "
                                    "time; the artifacts go to DIR/<scheme file stem>/.")
    c.add_argument("--data", required=True, help="built-in dataset name or a dataset directory")
    c.add_argument("--schemes", nargs="+", required=True, help="scheme YAML files")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--k", type=int, default=10, help="CF neighbours per item for the agreement metric")
    c.add_argument("--no-artifacts", action="store_true", help="do not save each scheme's ItemTokenization")
    add_cf_arguments(c)
    add_cache_arguments(c)
    c.add_argument("--device", default="auto")
    c.add_argument("--overwrite", action="store_true", help="replace existing artifacts")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=compare)
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])


def summary(tok) -> str:
    s = tok.stats or {}
    usage = s.get("usage_before_resolution") or s.get("usage") or []
    used = "/".join(f"{u['codes_used']}" for u in usage[:4])
    coll = s.get("collisions", {})
    extra = " (+ extra level)" if coll.get("extra_level") else ""
    return (f"{tok.scheme}: {tok.num_items} items, {tok.num_levels} tokens each{extra}, vocab {tok.vocab_size}, "
            f"collisions before resolution {tok.collisions_before} ({tok.collisions_before / max(tok.num_items, 1):.2%}), "
            f"codes used per level {used}, entries {tok.num_entries}, content {s.get('content')}")


def tokenize(args) -> int:
    from semrec.data import resolve_dataset
    from semrec.embeddings import ItemEmbeddings
    from semrec.itemtok.schemes import build_tokenization, load_scheme

    scheme = load_scheme(args.scheme, args.overrides)  # validate before loading anything heavy
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SemrecError(f"{out}: already exists (pass --overwrite to replace it)")
    ds = resolve_dataset(args.data)
    emb = None
    if args.embeddings:
        emb = ItemEmbeddings.load(args.embeddings)
        if emb.vectors.shape[0] != ds.num_items:
            raise SemrecError(f"{args.embeddings}: has {emb.vectors.shape[0]} rows but {ds.name} has "
                              f"{ds.num_items} items")
    tok = build_tokenization(ds, scheme, embeddings=emb, cf_emb=cf_of(args, ds.num_items),
                             cache_dir=cache_dir_of(args), device=args.device, progress=not args.no_progress)
    tok.save_pretrained(out, overwrite=args.overwrite)
    print(summary(tok))
    print(f"wrote {out}")
    return 0


def compare(args) -> int:
    from semrec.data import resolve_dataset
    from semrec.itemtok.compare import compare_schemes, write_comparison
    from semrec.runtime import describe_machine, git_commit

    ds = resolve_dataset(args.data)
    cf = cf_of(args, ds.num_items)
    out = Path(args.out)
    rows = compare_schemes(ds, args.schemes, cf_emb=cf, cache_dir=cache_dir_of(args), device=args.device,
                           artifacts_dir=None if args.no_artifacts else out, k=args.k,
                           progress=not args.no_progress, overwrite=args.overwrite)
    meta = {"dataset": ds.name, "protocol": ds.protocol, "schemes": [str(s) for s in args.schemes],
            "cf_source": args.teacher or args.cf_emb, "commit": git_commit(), "machine": describe_machine("cpu")}
    paths = write_comparison(rows, out, meta=meta, title=f"Item tokenization schemes on {ds.name}")
    for r in rows:
        print(f"{r['name']}: collisions before {r['collisions_before']}, codes used {r['codes_used']}, "
              f"CF agreement {r.get('cf_agree1')}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
