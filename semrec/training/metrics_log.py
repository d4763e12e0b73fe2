"""Training metrics log: JSON lines (every record), a CSV of epoch summaries, TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from semrec.artifacts import atomic_file


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _flat(rec: dict) -> dict:
    """Nested metrics (a teacher's "valid": {...}) as "valid/ndcg@10" columns."""
    out = {}
    for k, v in rec.items():
        out.update({f"{k}/{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
    return out


class MetricsLog:
    """Append-only records in `metrics.jsonl`; epoch rows rewritten to `metrics.csv` each epoch."""

    def __init__(self, out_dir: str | Path | None, *, keep_epochs: int = 0, write: bool = True):
        """out_dir: where the log lives (None: in memory only). keep_epochs: resuming after that many
        finished epochs: keep the records they logged, drop the rest (every rank reads them, for the
        history). write: whether this process writes (rank 0 alone)."""
        self.dir = Path(out_dir) if out_dir is not None else None
        self.records: list[dict] = []
        self.epochs: list[dict] = []
        self._tb = None
        path = self.dir / "metrics.jsonl" if self.dir is not None else None
        if keep_epochs and path is not None and path.is_file():
            self._read(path, keep_epochs)
        if not write:
            self.dir = None
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.dir / "metrics.jsonl") as f:
            for rec in self.records:
                f.write(json.dumps(rec) + "\n")
        try:  # optional dependency
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard missing or broken: JSONL/CSV only
            self._tb = None

    def _read(self, path: Path, keep_epochs: int) -> None:
        """The records up to the `keep_epochs`-th epoch record (those of the interrupted epoch go)."""
        for line in path.read_text().splitlines():
            if len(self.epochs) == keep_epochs:
                break
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the last line, cut short by a kill
                continue
            self.records.append(rec)
            if rec.get("kind") == "epoch":
                self.epochs.append(rec)

    def log(self, record: dict) -> None:
        rec = {k: _clean(v) for k, v in record.items()}
        self.records.append(rec)
        if rec.get("kind") == "epoch":
            self.epochs.append(rec)
        if self.dir is None:
            return
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if rec.get("kind") == "epoch":
            self._write_csv()
        if self._tb is not None:
            step = int(rec.get("step", 0))
            for k, v in _flat(rec).items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{rec.get('kind', 'train')}/{k}", v, step)

    def _write_csv(self) -> None:
        rows = [_flat(rec) for rec in self.epochs]
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        with atomic_file(self.dir / "metrics.csv") as f:
            f.write(buf.getvalue())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
