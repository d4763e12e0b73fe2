"""`semrec recommend --run RUN_DIR`: top-K items for item histories, from a finished `semrec run`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semrec.errors import SemrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="recommend items for histories with a trained run",
                       description="Print the top-K items (titles and beam scores) for each history. History "
                                   "items are item ids, raw ids or titles (matched exactly, then fuzzily).")
    p.add_argument("--run", required=True, help="a `semrec run` output directory")
    p.add_argument("--model", default=None, help="results row name, e.g. TIGER+TCA (default: best on test)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--history", nargs="+", metavar="ITEM", help="one history: item ids or titles, oldest first")
    src.add_argument("--history-file", metavar="FILE",
                     help="one history per line, items separated by ' | '")
    p.add_argument("--top-k", type=int, default=10, help="items per history (default 10)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--popularity-correction", type=float, default=None, metavar="S",
                   help="lower each item's score by S x log of its training popularity share (default: the "
                        "strength the run chose on valid for that row, else 0)")
    p.add_argument("--json", action="store_true", help="print JSON (one list per history)")
    p.set_defaults(func=_recommend)


def read_history_file(path: str | Path) -> list[list[str]]:
    """Histories from a text file: one per line, items separated by ' | ' (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SemrecError(f"{path}: not UTF-8 text ({e.reason})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        items = [s.strip() for s in line.split(" | ")]
        if any(not s for s in items):
            raise SemrecError(f"{path}: line {n}: empty item (separate items with ' | ')")
        out.append(items)
    if not out:
        raise SemrecError(f"{path}: no histories (one per line, items separated by ' | ')")
    return out


def _recommend(args: argparse.Namespace) -> int:
    from semrec.serving import Recommender

    if args.top_k < 1:
        raise SemrecError(f"--top-k must be >= 1, got {args.top_k}")
    if args.popularity_correction is not None and not args.popularity_correction >= 0:
        raise SemrecError(f"--popularity-correction must be >= 0, got {args.popularity_correction}")
    if args.history is not None:
        histories = [[s for s in args.history]]
        if any(not s.strip() for s in args.history):
            raise SemrecError("--history: empty item")
    else:
        histories = read_history_file(args.history_file)
    rec = Recommender.from_run(args.run, model=args.model, device=args.device,
                               popularity_correction=args.popularity_correction)
    results = rec.recommend(histories, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"history": h, "recommendations": r} for h, r in zip(histories, results)], indent=2))
        return 0
    for n, (h, recs) in enumerate(zip(histories, results)):
        if n:
            print()
        print(f"history: {' | '.join(h)}  (model {rec.name})")
        for rank, r in enumerate(recs, 1):
            print(f"{rank:3d}. [{r['item_id']}] {r['title'] or '(no title)'}  ({r['raw_id']})  score {r['score']:.3f}")
    return 0
