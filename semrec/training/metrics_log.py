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


class MetricsLog:
    """Append-only records in `metrics.jsonl`; epoch rows rewritten to `metrics.csv` each epoch."""

    def __init__(self, out_dir: str | Path | None, *, keep_before_epoch: int | None = None):
        self.dir = Path(out_dir) if out_dir is not None else None
        self.records: list[dict] = []
        self.epochs: list[dict] = []
        self._tb = None
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "metrics.jsonl"
        if keep_before_epoch is not None and path.is_file():
            # resuming: keep what the checkpointed epochs logged, drop the interrupted epoch's records
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # the last line, cut short by a kill
                    continue
                if rec.get("epoch", 0) < keep_before_epoch:
                    self.records.append(rec)
                    if rec.get("kind") == "epoch":
                        self.epochs.append(rec)
        with atomic_file(path) as f:
            for rec in self.records:
                f.write(json.dumps(rec) + "\n")
        try:  # optional dependency
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard missing or broken: JSONL/CSV only
            self._tb = None

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
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{rec.get('kind', 'train')}/{k}", v, step)

    def _write_csv(self) -> None:
        keys: list[str] = []
        for rec in self.epochs:
            keys += [k for k in rec if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.epochs)
        with atomic_file(self.dir / "metrics.csv") as f:
            f.write(buf.getvalue())

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
