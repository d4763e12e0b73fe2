"""`semrec run RECIPE`: run an experiment recipe end to end (cached, resumable stages)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment recipe (data, teacher, IDs, models, evaluation)",
                       description="Run every stage a recipe needs, reusing cached stages whose inputs are "
                                   "unchanged; prints and writes a results table.")
    p.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=2 --set seeds=[0,1,2]")
    p.add_argument("--out", default=None, help="output directory (default runs/<recipe name>)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from semrec import distributed
    from semrec.pipeline import load_recipe, run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    run_recipe(recipe, out, progress=not args.no_progress)
    if not distributed.is_main():  # under torchrun rank 0 alone reports
        return 0
    print()
    print((out / "results.md").read_text())
    print(f"results written to {out}/results.json and {out}/results.md")
    return 0
