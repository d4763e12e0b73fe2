"""Content-addressed stage outputs: a stage's directory is named by a hash of its config and inputs.

A finished stage directory holds `stage.json` (name, key, config, inputs, and a manifest of file
sizes and SHA-256 digests). It is written to a temporary sibling and renamed into place only when the
stage succeeded, so a run killed at any moment leaves either nothing or a complete stage, and a re-run
with unchanged inputs reuses it. A stage whose files no longer match their manifest is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from semrec.errors import SemrecError
from semrec.io import atomic_dir, read_json, write_json

STAGE_FILE = "stage.json"


def content_key(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(root: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != STAGE_FILE
    }


class StageCache:
    """Stage directories under `root`, named `<stage>-<key>`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def is_done(self, stage: str, key: str, *, verify: bool = True) -> bool:
        d = self.path(stage, key)
        if not (d / STAGE_FILE).is_file():
            return False
        if verify:
            meta = read_json(d / STAGE_FILE)
            if _manifest(d) != meta.get("manifest"):
                raise SemrecError(f"{d}: stage files do not match their manifest (edited or truncated); "
                                  f"delete the directory to recompute it")
        return True

    def run(self, stage: str, config: dict, inputs: dict[str, str], fn: Callable[[Path], Any],
            *, log: Callable[[str], None] = print) -> Path:
        """Return the stage directory, computing it with `fn(tmp_dir)` unless a verified copy exists.

        `inputs` maps input names to the keys (or content hashes) of upstream stages/files."""
        key = content_key({"stage": stage, "config": config, "inputs": inputs})
        out = self.path(stage, key)
        if self.is_done(stage, key):
            log(f"[{stage}] reusing {out}")
            return out
        log(f"[{stage}] computing -> {out}")
        start = time.time()
        with atomic_dir(out, overwrite=True) as tmp:
            fn(tmp)
            write_json(tmp / STAGE_FILE, {
                "stage": stage, "key": key, "config": config, "inputs": inputs,
                "seconds": round(time.time() - start, 2), "manifest": _manifest(tmp),
            })
        return out

    @staticmethod
    def key_of(stage_dir: Path) -> str:
        return read_json(Path(stage_dir) / STAGE_FILE)["key"]
