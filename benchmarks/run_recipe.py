"""Run a recipe and store its results under benchmarks/results/<name>.{json,md}.

    python benchmarks/run_recipe.py recipes/quickstart.yaml [--set key=value ...] [--out runs/quickstart]

The recipe's own results.json (rows per seed, mean/std, commit, machine, wall time) is copied as is;
nothing is edited by hand.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path

from semrec.pipeline import load_recipe, run_recipe

RESULTS = Path(__file__).resolve().parent / "results"


def produced_by(recipe: str, overrides: list[str], name: str | None = None) -> str:
    """The command line that writes the same results file, each argument quoted so it pastes into a shell
    (`--out` is left out: the run directory does not change the results)."""
    args = [recipe, *[a for o in overrides for a in ("--set", o)], *(["--name", name] if name else [])]
    return " ".join(["python benchmarks/run_recipe.py", *map(shlex.quote, args)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=None, help="run directory (default runs/<recipe name>)")
    ap.add_argument("--name", default=None, help="results file name (default: the recipe name)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out or Path("runs") / recipe.name)
    run_recipe(recipe, out, progress=not args.no_progress)
    name = args.name or recipe.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "results.json", RESULTS / f"{name}.json")
    md = (out / "results.md").read_text()
    cmd = produced_by(args.recipe, args.overrides, args.name)
    (RESULTS / f"{name}.md").write_text(md + f"\nProduced by `{cmd}`.\n")
    print(md)


if __name__ == "__main__":
    main()
