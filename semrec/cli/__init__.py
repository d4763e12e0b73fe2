"""The `semrec` command. Each subcommand lives in a module of this package that defines
`register(subparsers)`; errors the user can fix are printed as one line with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import traceback

from semrec import __version__
from semrec.errors import SemrecError
from semrec.threads import configure_threads

# Modules under semrec.cli that define register(subparsers), in the order shown by --help.
COMMAND_MODULES = [
    "data",
    "cf",
    "embed", "itemtok",
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
    configure_threads()  # physical cores / local processes unless OMP_NUM_THREADS is set; warns on conflicts
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
    except Exception as e:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        if is_out_of_memory(e):
            print(f"semrec: error: {out_of_memory_message(e)}", file=sys.stderr)
        else:
            print(f"semrec: error: internal error {type(e).__name__}: {_one_line(e)} "
                  "(rerun with --debug for the traceback)", file=sys.stderr)
        return 2


def is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA) or a failed CPU allocation in torch."""
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only loaded if a handler imported it
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_message(e: BaseException) -> str:
    """One line: how much was asked for (when the error says) and what to change."""
    text = _one_line(e)
    where = "GPU" if re.search(r"\b(cuda|mps|xpu)\b", text, re.IGNORECASE) else "CPU"
    m = re.search(r"(?:tried|unable) to allocate ([0-9.]+ ?[KMGTPE]i?B|\d+ bytes)", text, re.IGNORECASE)
    if m and m.group(1).endswith(" bytes"):
        n, unit = float(m.group(1).split()[0]), 0
        while n >= 1024 and unit < 5:
            n, unit = n / 1024, unit + 1
        detail = f"{where}: tried to allocate {n:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'][unit]}"
    elif m:
        detail = f"{where}: tried to allocate {m.group(1)}"
    else:
        detail = f"{where}: {text[:120] or type(e).__name__}"
    return (f"out of memory ({detail}): reduce batch_size (e.g. --set train.batch_size=64, and the eval "
            "batch sizes) or the model size, or use a device with more memory")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
