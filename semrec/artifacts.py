"""Atomic, pickle-free artifact IO: nothing half-written is ever left at a final path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from semrec.errors import SemrecError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to `out` only if the block succeeds.

    An existing `out` is refused unless `overwrite`, and is replaced only after the new one is complete.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise SemrecError(f"{out}: already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to `path`; it replaces `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result should not be
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    """Read JSON with one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SemrecError(f"{path}: malformed JSON ({e})") from None


def load_safetensors(path: str | Path, *, device: str = "cpu", numpy: bool = False) -> dict[str, Any]:
    """Read a .safetensors file into {name: tensor} (NumPy arrays with `numpy`); one-line errors for a
    missing, truncated or corrupt file. The format holds raw tensors and JSON only (no pickles)."""
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    try:
        if numpy:
            from safetensors.numpy import load_file as load_np

            return load_np(str(path))
        from safetensors.torch import load_file

        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise SemrecError(f"{path}: truncated or corrupt safetensors file ({e})") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
