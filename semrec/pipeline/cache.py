"""Content-addressed stage outputs: a stage's directory is named by a hash of its config and inputs.

A finished stage directory holds `stage.json` (name, key, config, inputs, and a manifest of file
sizes and SHA-256 digests). It is written to a temporary sibling and renamed into place only when the
stage succeeded, so a run killed at any moment leaves either nothing or a complete stage, and a re-run
with unchanged inputs reuses it. A stage whose files no longer match their manifest is refused.
A kill leaves only a hidden temporary sibling (`.<stage>-<key>.tmp-*`, with an `.owner` file naming the
process); the next run that computes the stage deletes those whose process is gone. A run that finds
the stage being computed by another live process on this host waits for it and reuses its result, so
several runs of one recipe (e.g. with different seed orders) can share an output directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable

from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, read_json, write_json

STAGE_FILE = "stage.json"
OWNER_FILE = ".owner"  # inside a stage's temporary directory while it is computed: "host pid"
# a temporary without an owner file is being created or published (the file is written just after the
# directory is made and removed just before it is renamed) if it changed this recently; later, it is stale
UNOWNED_GRACE_S = 60.0


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

    def __init__(self, root: str | Path, *, poll_s: float = 5.0):
        self.root = Path(root)
        self.poll_s = poll_s  # how often to look again while another process computes a stage
        self.used: dict[Path, float] = {}  # stage dirs returned by `run` -> the seconds it took to compute them

    def path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def is_done(self, stage: str, key: str, *, verify: bool = True) -> bool:
        d = self.path(stage, key)
        if not (d / STAGE_FILE).is_file():
            return False
        if verify:
            self.verify(d)
        return True

    @staticmethod
    def verify(stage_dir: str | Path) -> dict:
        """Check a finished stage directory's files against its manifest; return its stage.json."""
        d = Path(stage_dir)
        meta = read_json(d / STAGE_FILE)
        manifest = meta.get("manifest")
        found = _manifest(d)
        if found != manifest:
            manifest = manifest if isinstance(manifest, dict) else {}
            changed = sorted(k for k in set(found) | set(manifest) if found.get(k) != manifest.get(k))
            what = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise SemrecError(f"{d}: stage files do not match their manifest (edited, truncated, added or "
                              f"removed: {what or STAGE_FILE}); delete the directory to recompute it")
        return meta

    def _temporaries(self, out: Path) -> tuple[list[Path], list[Path]]:
        """Temporaries of `out`: (owned by another live process on this host, left by a killed run).

        A temporary of another host is in neither list: it cannot be checked from here."""
        host = socket.gethostname()
        live, stale = [], []
        for tmp in out.parent.glob(f".{out.name}.tmp-*"):
            try:
                owner_host, pid = (tmp / OWNER_FILE).read_text().split()
            except (OSError, ValueError):
                try:
                    recent = time.time() - tmp.stat().st_mtime < UNOWNED_GRACE_S
                except OSError:  # renamed or removed meanwhile
                    continue
                (live if recent else stale).append(tmp)
                continue
            if owner_host != host:
                continue
            if int(pid) != os.getpid() and _pid_alive(int(pid)):
                live.append(tmp)
            else:
                stale.append(tmp)
        return live, stale

    def _wait_for_other_runs(self, out: Path, log: Callable[[str], None]) -> None:
        """Block while another live process on this host computes `out`; then delete stale temporaries."""
        announced = False
        while True:
            live, stale = self._temporaries(out)
            if not live:
                break
            if not announced:
                log(f"[{out.name.rsplit('-', 1)[0]}] waiting for another run computing {out}")
                announced = True
            time.sleep(self.poll_s)
        for tmp in stale:
            shutil.rmtree(tmp, ignore_errors=True)

    def run(self, stage: str, config: dict, inputs: dict[str, str], fn: Callable[[Path], Any],
            *, log: Callable[[str], None] = print) -> Path:
        """Return the stage directory, computing it with `fn(tmp_dir)` unless a verified copy exists.

        `inputs` maps input names to the keys (or content hashes) of upstream stages/files."""
        key = content_key({"stage": stage, "config": config, "inputs": inputs})
        out = self.path(stage, key)
        if self.is_done(stage, key):
            log(f"[{stage}] reusing {out}")
            self.used[out] = float(read_json(out / STAGE_FILE).get("seconds", 0.0))
            return out
        if out.parent.is_dir():
            self._wait_for_other_runs(out, log)
            if self.is_done(stage, key):
                log(f"[{stage}] reusing {out} (computed by another run)")
                self.used[out] = float(read_json(out / STAGE_FILE).get("seconds", 0.0))
                return out
        log(f"[{stage}] computing -> {out}")
        start = time.time()
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}")
            fn(tmp)
            (tmp / OWNER_FILE).unlink()
            write_json(tmp / STAGE_FILE, {
                "stage": stage, "key": key, "config": config, "inputs": inputs,
                "seconds": round(time.time() - start, 2), "manifest": _manifest(tmp),
            })
        self.used[out] = float(read_json(out / STAGE_FILE)["seconds"])
        return out

    @staticmethod
    def key_of(stage_dir: Path) -> str:
        return read_json(Path(stage_dir) / STAGE_FILE)["key"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
