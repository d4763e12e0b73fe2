"""`semrec data ...`: prepare built-in datasets, import your own files, rebuild from raw Amazon dumps, stats."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from semrec.errors import SemrecError

BUILTIN_HELP = ("toys-t, sports-t, office-t (protocol T: TCA4Rec Amazon-2018 release) and "
                "toys-p, sports-p, beauty-p (protocol P: Amazon-2014 5-core sequences, leave-one-out)")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset directory to write (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it exists (only once the new one is complete)")
    p.add_argument("--name", help="dataset name stored in meta.json (default: from the input file name)")


def _add_prepare_options(p: argparse.ArgumentParser, *, kcore_default: int, unknown_default: str) -> None:
    g = p.add_argument_group("filtering and splitting (override --config; a YAML file uses the same names "
                             "with underscores, e.g. min_user_interactions)")
    g.add_argument("--config", help="YAML file of options (keys: the field names of the config dataclass)")
    g.add_argument("--kcore", type=int, metavar="N",
                   help=f"k-core: users and items need >= N interactions (default {kcore_default})")
    g.add_argument("--min-user", type=int, metavar="N", dest="min_user_interactions",
                   help="k-core bound for users only")
    g.add_argument("--min-item", type=int, metavar="N", dest="min_item_interactions",
                   help="k-core bound for items only")
    g.add_argument("--min-rating", type=float, metavar="X", help="keep interactions with rating >= this")
    g.add_argument("--window-months", type=int, metavar="N",
                   help="keep only the last N months before the newest interaction")
    g.add_argument("--keep-duplicates", action="store_const", const=False, dest="drop_duplicates",
                   help="keep repeated identical (user, item, timestamp) rows (dropped and counted by default)")
    g.add_argument("--unknown-items", choices=["error", "drop", "keep"],
                   help=f"interactions whose item is not in the items/meta file: error, drop (counted) or keep "
                        f"without a title (default {unknown_default})")
    g.add_argument("--drop-unknown-items", action="store_const", const="drop", dest="unknown_items",
                   help="same as --unknown-items drop")
    g.add_argument("--drop-untitled", action="store_const", const=True, help="drop items without a title")
    g.add_argument("--ascii-only", action="store_const", const=True, dest="title_ascii_only",
                   help="drop items whose title has non-ASCII characters (as TCA4Rec does)")
    g.add_argument("--max-title-len", type=int, metavar="N", dest="title_max_len",
                   help="truncate titles to N characters")
    g.add_argument("--no-html-unescape", action="store_const", const=False, dest="title_html_unescape",
                   help="keep HTML entities (&amp;) in titles")
    g.add_argument("--split", choices=["loo", "time"],
                   help="loo: leave-one-out per user (default); time: global chronological split of all "
                        "samples by target time (TCA4Rec style)")
    g.add_argument("--ratios", type=_floats, metavar="A,B,C",
                   help="time split ratios train,valid,test (default 0.8,0.1,0.1)")
    g.add_argument("--min-history", type=int, metavar="N",
                   help="time split: a sample needs >= N earlier items (default 1)")
    g.add_argument("--max-history", type=int, metavar="N",
                   help="keep only the last N items of each history (default: all)")
    g.add_argument("--subsample", type=_ints, metavar="A,B,C",
                   help="time split: draw n_train,n_valid,n_test rows at random "
                                                  "(e.g. 10000,5000,5000 as in the TCA4Rec release)")
    g.add_argument("--seed", type=int, metavar="N", help="seed for --subsample (default 42)")


PREPARE_KEYS = ("min_user_interactions", "min_item_interactions", "min_rating", "window_months", "drop_duplicates",
                "unknown_items", "drop_untitled", "title_ascii_only", "title_max_len", "title_html_unescape",
                "split", "ratios", "min_history", "max_history", "subsample", "seed")
RECBOLE_KEYS = ("user_col", "item_col", "time_col", "title_col", "sep", "items_sep")
ROWS_KEYS = ("user_col", "history_col", "target_col", "time_col", "length_col", "list_format", "list_sep", "sep",
             "items_sep", "items_id_col", "title_col", "text_cols")
IMPORT_KEYS = ("user_col", "item_col", "time_col", "sep", "items_sep", "keep_cols", "rating_col", "items_id_col",
               "title_col", "text_cols")


def _config(cls, args: argparse.Namespace, keys: tuple[str, ...]):
    """Defaults of `cls` < --config YAML < explicit flags; types checked by load_config."""
    from semrec.config import load_config, read_yaml

    data = dataclasses.asdict(cls())
    if args.config:
        data.update(read_yaml(args.config))
    if getattr(args, "kcore", None) is not None:
        data["min_user_interactions"] = data["min_item_interactions"] = args.kcore
    for k in keys:
        v = getattr(args, k, None)
        if v is not None:
            data[k] = v
    return load_config(cls, data, name=args.config or "options")


def _check_out(args: argparse.Namespace) -> None:
    if Path(args.out).exists() and not args.overwrite:
        raise SemrecError(f"{args.out}: already exists (pass --overwrite to replace it)")


def _report(ds, out: str) -> None:
    from semrec.data.stats import dataset_stats, format_stats

    print(format_stats(dataset_stats(ds)))
    dropped = {k: v for k, v in ds.info.get("dropped", {}).items() if v}
    if dropped:
        print("dropped      " + ", ".join(f"{k}={v:,}" for k, v in dropped.items()))
    print(f"saved to {out}")


def _prepare(args: argparse.Namespace) -> int:
    from semrec.data.builtin import load_builtin

    _check_out(args)
    ds = load_builtin(args.dataset)
    if args.name:
        ds.name = args.name
    ds.save_pretrained(args.out, overwrite=args.overwrite)
    _report(ds, args.out)
    return 0


def _import(args: argparse.Namespace) -> int:
    from semrec.data.importer import ImportConfig, import_dataset

    if args.recbole is not None:
        if args.interactions or args.items:
            raise SemrecError("--recbole reads DIR/NAME.inter/.item/.user itself: drop --interactions/--items")
        from semrec.data.recbole import RecBoleConfig, load_recbole

        cfg = _config(RecBoleConfig, args, PREPARE_KEYS + RECBOLE_KEYS)
        _check_out(args)
        ds = load_recbole(args.recbole, cfg, name=args.name)
    else:
        missing = [f for f, v in (("--interactions", args.interactions), ("--items", args.items)) if not v]
        if missing:
            raise SemrecError(f"data import: give {' and '.join(missing)} (or --recbole DIR/NAME)")
        cfg = _config(ImportConfig, args, PREPARE_KEYS + IMPORT_KEYS)
        _check_out(args)
        ds = import_dataset(args.interactions, args.items, cfg, name=args.name)
    ds.save_pretrained(args.out, overwrite=args.overwrite)
    _report(ds, args.out)
    return 0


def _import_rows(args: argparse.Namespace) -> int:
    from semrec.data.rows import RowsConfig, import_rows

    cfg = _config(RowsConfig, args, ROWS_KEYS)
    _check_out(args)
    ds = import_rows(args.train, args.valid, args.test, args.items, cfg, name=args.name)
    ds.save_pretrained(args.out, overwrite=args.overwrite)
    _report(ds, args.out)
    return 0


def _export(args: argparse.Namespace) -> int:
    from semrec.data.builtin import resolve_dataset
    from semrec.data.recbole import export_recbole

    folder = Path(args.recbole).parent
    if folder.exists() and not args.overwrite:
        raise SemrecError(f"{folder}: already exists (pass --overwrite to replace it)")
    ds = resolve_dataset(args.data)
    prefix = export_recbole(ds, args.recbole, overwrite=args.overwrite)
    names = sorted(p.name for p in prefix.parent.iterdir())
    print(f"wrote {prefix.parent}: {', '.join(names)}")
    return 0


def _amazon(args: argparse.Namespace) -> int:
    from semrec.data.amazon_raw import AmazonConfig, load_amazon, load_amazon2023

    given = {s: getattr(args, s) for s in ("train", "valid", "test") if getattr(args, s)}
    if given and args.year != 2023:
        raise SemrecError("--train/--valid/--test are the Amazon Reviews 2023 benchmark splits: use --year 2023")
    if given and len(given) < 3:
        raise SemrecError(f"give all three benchmark splits (--train, --valid, --test); missing "
                          f"{', '.join('--' + s for s in ('train', 'valid', 'test') if s not in given)}")
    if given and args.reviews:
        raise SemrecError("give either --reviews (filtered and split by the options) or the benchmark splits "
                          "--train/--valid/--test (kept as given), not both")
    if not given and not args.reviews:
        raise SemrecError("data amazon: --reviews is required" + (" (or --train/--valid/--test)"
                                                                 if args.year == 2023 else ""))
    cfg = _config(AmazonConfig, args, PREPARE_KEYS)
    _check_out(args)
    if args.year == 2023:
        ds = load_amazon2023(args.meta, args.reviews, cfg, splits=given or None, name=args.name)
    else:
        ds = load_amazon(args.reviews, args.meta, args.year, cfg, name=args.name)
    ds.save_pretrained(args.out, overwrite=args.overwrite)
    _report(ds, args.out)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from semrec.data.builtin import resolve_dataset
    from semrec.data.stats import dataset_stats, format_stats

    stats = dataset_stats(resolve_dataset(args.dataset))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare, import and inspect datasets",
                              description="Datasets: built-in bundles, your own files, raw Amazon dumps.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    q = sub.add_parser("prepare", help="write a built-in dataset to a dataset directory",
                       description="Write a built-in dataset to a directory every command accepts. "
                                   f"Names: {BUILTIN_HELP}.")
    q.add_argument("dataset", metavar="NAME", help=BUILTIN_HELP)
    _add_output(q)
    q.set_defaults(func=_prepare)

    q = sub.add_parser(
        "import", help="import your own interactions + items files",
        description="Import interactions (CSV/TSV/Parquet: user, item, timestamp columns; timestamps in unix "
                    "seconds or dates) and items (CSV/TSV/JSONL/Parquet: item id and title, other columns kept "
                    "as text). Ids are remapped to 0..N-1 (raw ids kept). Defaults: no k-core, leave-one-out, "
                    "items missing from the items file are an error (--drop-unknown-items drops them).",
    )
    q.add_argument("--interactions", help="interactions file (.csv, .tsv, .csv.gz, .parquet; any extension of "
                                          "a delimited text file)")
    q.add_argument("--items", help="items file (.csv, .tsv, .jsonl, .jsonl.gz, .parquet)")
    q.add_argument("--recbole", metavar="DIR/NAME",
                   help="RecBole atomic files instead: NAME.inter (field:type headers), NAME.item and NAME.user "
                        "when present; NAME.train/valid/test.inter benchmark files keep their splits (a folder "
                        "DIR/NAME holding NAME.inter works too)")
    _add_output(q)
    c = q.add_argument_group("columns")
    c.add_argument("--user-col", help="user column / RecBole field (default user_id)")
    c.add_argument("--item-col", help="item column / RecBole field of the interactions (default item_id)")
    c.add_argument("--time-col", help="timestamp column / RecBole field (default timestamp)")
    c.add_argument("--rating-col", help="rating column used by --min-rating (default rating)")
    c.add_argument("--keep-cols", type=_names, metavar="COLS",
                   help="extra interaction columns to keep, comma separated (default all)")
    c.add_argument("--sep", help="separator of the interactions file (default: sniffed from its header line)")
    c.add_argument("--items-sep", help="separator of the items file (default: sniffed from its header line)")
    c.add_argument("--items-id-col", help="item id column of the items file (default item_id)")
    c.add_argument("--title-col", help="title column of the items file (default title; RecBole: the first "
                                       "token_seq field whose name contains 'title')")
    c.add_argument("--text-cols", type=_names, metavar="COLS",
                   help="extra item columns to keep, comma separated (default all)")
    _add_prepare_options(q, kcore_default=0, unknown_default="error")
    q.set_defaults(func=_import)

    q = sub.add_parser(
        "import-rows", help="import (user, history list, target) row files (MiniOneRec, BIGRec, LC-Rec, TCA4Rec)",
        description="Import train/valid/test files whose rows are examples: a user, a history list literal and "
                    "a target item (protocol T: rows kept as given, one example per row). Defaults fit the "
                    "MiniOneRec/BIGRec CSV layout (user_id, history_item_id, item_id). Item i is row i of the "
                    "items file (CSV/TSV/JSONL/Parquet, or a JSON object {id: {title: ...}}). Unknown items, "
                    "empty histories and malformed lists are errors naming the file and line.")
    for split in ("train", "valid", "test"):
        q.add_argument(f"--{split}", required=True, help=f"{split} rows file")
    q.add_argument("--items", required=True, help="items file")
    _add_output(q)
    c = q.add_argument_group("columns and lists")
    c.add_argument("--user-col", help="user column (default user_id)")
    c.add_argument("--history-col", help="history column (default history_item_id)")
    c.add_argument("--target-col", help="target item column (default item_id)")
    c.add_argument("--time-col", help="timestamp column (default: timestamp when present, else none)")
    c.add_argument("--length-col", help="a column stating each history's length, checked against the list")
    c.add_argument("--list-format", choices=["literal", "split"],
                   help="literal: Python/JSON list literals such as [1, 2] or ['a', 'b'] (default); "
                        "split: items joined by --list-sep")
    c.add_argument("--list-sep", help="separator of --list-format split (default whitespace)")
    c.add_argument("--sep", help="separator of the row files (default: sniffed)")
    c.add_argument("--items-sep", help="separator of the items file (default: sniffed)")
    c.add_argument("--items-id-col", help="item id column of the items file (default item_id)")
    c.add_argument("--title-col", help="title column of the items file (default title)")
    c.add_argument("--text-cols", type=_names, metavar="COLS", help="extra item columns to keep (default all)")
    q.add_argument("--config", help="YAML file of options (keys: the names above with underscores)")
    q.set_defaults(func=_import_rows)

    q = sub.add_parser("export", help="write a dataset as RecBole atomic files",
                       description="Write DIR/NAME.item, NAME.user, NAME.inter (the full log, when the dataset has "
                                   "one) and NAME.train/valid/test.inter (the exact examples: user, item_id_list, "
                                   "item_id, timestamp), tab-separated with RecBole field:type headers. Set "
                                   "benchmark_filename: [train, valid, test] in RecBole to use the splits.")
    q.add_argument("--data", required=True, help="dataset directory or built-in name")
    q.add_argument("--recbole", required=True, metavar="DIR/NAME", help="DIR must not exist (unless --overwrite)")
    q.add_argument("--overwrite", action="store_true", help="replace DIR once the new files are complete")
    q.set_defaults(func=_export)

    q = sub.add_parser(
        "amazon", help="build a dataset from raw Amazon 2014/2018/2023 review + meta dumps",
        description="Rebuild a category from the McAuley-lab dumps. 2014: reviews_<Cat>[_5].json.gz + "
                    "meta_<Cat>.json.gz (Python literals); 2018: <Cat>[_5].json.gz + meta_<Cat>.json.gz (JSON); "
                    "2023: <Cat>.jsonl[.gz] + meta_<Cat>.jsonl[.gz] keyed by parent_asin, timestamps in "
                    "milliseconds, or the official benchmark splits (--train/--valid/--test <Cat>.{train,valid,"
                    "test}.csv: user_id,parent_asin,rating,timestamp[,history]) kept as given. "
                    "Defaults: 5-core, leave-one-out, items missing from the meta file kept without a title. "
                    "TCA4Rec-like: --kcore 5 --min-user 10 --ascii-only --drop-untitled --window-months 48 "
                    "--split time --min-history 10 --max-history 10 --subsample 10000,5000,5000.")
    q.add_argument("--reviews", help="review dump (.json.gz; 2023: .jsonl or .jsonl.gz)")
    q.add_argument("--meta", required=True, help="metadata dump (.json.gz; 2023: .jsonl or .jsonl.gz)")
    q.add_argument("--year", required=True, type=int, choices=[2014, 2018, 2023], help="dump format")
    for split in ("train", "valid", "test"):
        q.add_argument(f"--{split}", metavar="CSV", help=f"2023 benchmark {split} split (<Cat>.{split}.csv) "
                                                         "instead of --reviews")
    _add_output(q)
    _add_prepare_options(q, kcore_default=5, unknown_default="keep")
    q.set_defaults(func=_amazon)

    q = sub.add_parser("stats", help="print users, items, interactions, lengths and split sizes",
                       description="Counts of a dataset directory or built-in name. For protocol T the "
                                   "interaction count is the number of example rows (no full log is released).")
    q.add_argument("dataset", metavar="DIR_OR_NAME", help=f"dataset directory or built-in name ({BUILTIN_HELP})")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=_stats)
