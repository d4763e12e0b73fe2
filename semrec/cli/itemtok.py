"""`semrec tokenize` (fit a tokenizer scheme -> ItemTokenization directory) and
`semrec tokenizers compare` (several schemes side by side: Markdown + JSON table + plot)."""

from __future__ import annotations

import argparse
from pathlib import Path

from semrec.cli.embed import add_cache_arguments, add_cf_arguments, cache_dir_of, cf_of
from semrec.errors import SemrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="turn a dataset's items into token sequences (semantic IDs or titles)",
                       description="Fit a tokenizer scheme (tokenizers/*.yaml: rqkmeans, rqkmeans_balanced, pq, "
                                   "opq, rqvae, letter, title) on a dataset's catalogue and write the ItemTokenization "
                                   "artifact (codes in the model vocabulary, layout, lookups, config, fitted "
                                   "quantizer). --from-codes builds it "
                                   "from semantic IDs made elsewhere (MiniOneRec/LC-Rec *.index.json with <a_N> "
                                   "tokens; GRID/LETTER-style integer codes per item in .json, .csv or .npy); "
                                   "--export writes an artifact's codes in those formats.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scheme", help="scheme YAML, e.g. tokenizers/rqvae.yaml")
    src.add_argument("--from-codes", metavar="FILE",
                     help="codes made elsewhere: *.index.json ({raw_id: [\"<a_12>\", \"<b_3>\", ...]}), *.json "
                          "({raw_id: [12, 3, ...]} or a list of lists, row i = item i), *.csv/*.tsv (item id, "
                          "then one code per level) or *.npy ((items, levels), row i = item i)")
    src.add_argument("--export", metavar="TOKENIZATION_DIR",
                     help="write this item tokenization's codes to --out in the format its name says "
                          "(*.index.json, *.json, *.csv, *.tsv, *.npy); keys are raw ids when --data is given")
    p.add_argument("--data", help="built-in dataset name (e.g. toys-t) or a dataset directory (required except "
                                  "with --export)")
    p.add_argument("--out", required=True, help="output directory (--export: output file)")
    p.add_argument("--codebook-sizes", type=lambda t: [int(x) for x in t.replace(",", " ").split()],
                   metavar="K[,K...]", help="--from-codes: codebook size of each level (one value: all levels; "
                                            "default: the largest code + 1); larger codes are errors")
    p.add_argument("--collisions", choices=["extra_code", "sinkhorn", "error"], default="extra_code",
                   help="--from-codes: items sharing codes get an extra level (default), are moved to free "
                        "last-level codes (sinkhorn), or are an error")
    p.add_argument("--append-eos", action="store_true", help="--from-codes: end every item with <eos>")
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


def _from_codes(args, out: Path) -> int:
    from semrec.data import resolve_dataset
    from semrec.itemtok.external import tokenization_from_codes

    ds = resolve_dataset(args.data)
    tok, report = tokenization_from_codes(args.from_codes, [str(r) for r in ds.items["raw_id"].tolist()],
                                          dataset_name=ds.name, codebook_sizes=args.codebook_sizes,
                                          collisions=args.collisions, append_eos=args.append_eos)
    tok.save_pretrained(out, overwrite=args.overwrite)
    coll = report["collisions"]
    print(f"read {args.from_codes}: {tok.num_items} items"
          + (f", {report['skipped']} id(s) not in {ds.name} skipped" if report["skipped"] else ""))
    print(f"collisions: {coll['before']['collisions']} ({coll['before']['items_in_collisions']} items share codes)"
          + (f", resolved by {coll['method']}" if coll["before"]["collisions"] else ""))
    print(summary(tok))
    print(f"wrote {out}")
    return 0


def _export(args, out: Path) -> int:
    from semrec.itemtok.external import code_format, export_codes
    from semrec.itemtok.artifact import ItemTokenization

    code_format(out)  # a name we can write, before loading anything
    if out.exists() and not args.overwrite:
        raise SemrecError(f"{out}: already exists (pass --overwrite to replace it)")
    tok = ItemTokenization.from_pretrained(args.export, load_quantizer=False)
    raw_ids = None
    if args.data:
        from semrec.data import resolve_dataset

        raw_ids = [str(r) for r in resolve_dataset(args.data).items["raw_id"].tolist()]
    export_codes(tok, out, raw_ids)
    print(f"wrote {out} ({tok.num_items} items, keyed by {'raw id' if raw_ids else 'item id'})")
    return 0


def tokenize(args) -> int:
    from semrec.data import resolve_dataset
    from semrec.embeddings import ItemEmbeddings
    from semrec.itemtok.schemes import build_tokenization, load_scheme

    out = Path(args.out)
    if args.export:
        return _export(args, out)
    if not args.data:
        raise SemrecError("tokenize: --data is required (the dataset whose items get codes)")
    if out.exists() and not args.overwrite:
        raise SemrecError(f"{out}: already exists (pass --overwrite to replace it)")
    if args.from_codes:
        return _from_codes(args, out)
    scheme = load_scheme(args.scheme, args.overrides)  # validate before loading anything heavy
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
