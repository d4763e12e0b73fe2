"""The `semrec` command. Each subcommand lives in a module of this package that defines
`register(subparsers)`; errors the user can fix are printed as one line with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from semrec import __version__
from semrec.errors import SemrecError

# Modules under semrec.cli that define register(subparsers), in the order shown by --help.
COMMAND_MODULES = [
    "data",
    "cf",
    "embed", "tokenize",
    "llm",
    "run",
    "recommend", "report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semrec",
        description="Semantic-ID generative recommendation with token-level collaborative alignment.",
    )
    parser.add_argument("--version", action="version", version=f"semrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"semrec.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except SemrecError as e:
        if args.debug:
            traceback.print_exc()
        print(f"semrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("semrec: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("semrec: error: out of memory (reduce the batch size)", file=sys.stderr)
        return 2
    except Exception as e:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        if "out of memory" in str(e).lower():
            print("semrec: error: out of memory (reduce the batch size)", file=sys.stderr)
        else:
            print(f"semrec: error: internal error {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                  file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
