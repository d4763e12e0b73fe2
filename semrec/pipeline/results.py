"""The results of `semrec run` and the run-directory API that reports, serving and benchmarks read.

    run = RunDirectory("runs/quickstart")
    for row in run.rows:                        # ResultRow, one per (model row, seed)
        row.name, row.seed, row.metrics["ndcg@10"], row.baseline
    run.model_stage(row)                        # the stage directory holding row's trained model
    run.stages("ids")                           # finished stage directories of one kind

`results.json` keeps each row flat (the row's fields and its metrics side by side), so files written
before ResultRow existed still open: a missing `baseline` is inferred from the other fields (see
`infer_baseline`), a missing `model_stage` is matched by the stage's recorded config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semrec.artifacts import read_json
from semrec.errors import SemrecError
from semrec.pipeline.cache import STAGE_FILE, StageCache

RESULTS_FILE = "results.json"
STAGES_DIR = "stages"
# A finished stage of each kind holds this file (relative to the stage directory).
STAGE_MARKERS = {"model": "train.json", "teacher": "train_log.jsonl", "ids": "tokenization/tokenization.json"}


# The reference recommenders every table carries (semrec.evaluation: most_popular_lists, random_lists).
REFERENCE_MODELS = ("mostpop", "random")

# The fields that say what a row is (written first in results.json, before the metrics).
IDENTITY = ("name", "model", "tokenizer", "loss", "alpha", "tau", "dataset", "protocol", "split", "device", "seed")


@dataclass
class ResultRow:
    """One row of a results table: a CF teacher (tokenizer None) or a generative model at one seed, on `split`."""

    name: str
    model: str  # a semrec.cf.TEACHERS or semrec.models.MODELS name
    tokenizer: str | None  # the scheme's name; None for a CF teacher
    loss: str  # "ce" (teachers), "ntp", "tca", "aux_kl", "label_smoothing", "+msl" appended in MSL mode
    alpha: float | None
    tau: float | None
    dataset: str
    protocol: str
    split: str
    device: str | None
    seed: int
    metrics: dict[str, Any] = field(default_factory=dict)  # hr@K / recall@K, ndcg@K, cc, coverage, ...
    baseline: str | None = None  # name of the NTP row a TCA row is compared with (same model, IDs, budget)
    selected_on_valid: dict | None = None  # swept values chosen on valid, with their valid metric
    sweep_valid: list | None = None  # every swept value's valid metric
    correction_valid: list | None = None  # every decoding-time popularity correction's valid metric (recipe eval)
    wall_time_s: float | None = None  # teachers: the teacher stage's compute time
    train_wall_time_s: float | None = None
    eval_wall_time_s: float | None = None
    epochs_run: int | None = None
    model_stage: str | None = None  # the stage directory (name under stages/) holding the trained model
    valid_metric: float | None = None  # the recipe's select_on metric on the valid split (what chose the row)
    vs_mostpop: dict | None = None  # {"ndcg@10_gain", "se"}: paired per-row NDCG@10 gain over MostPop's test rows
    train_cpu_time_s: float | None = None
    train_steps: int | None = None
    best_epoch: int | None = None

    @property
    def is_reference(self) -> bool:
        """MostPop or Random: a list scored like the models, trained on nothing but item counts."""
        return self.model in REFERENCE_MODELS

    @property
    def is_teacher(self) -> bool:
        return self.tokenizer is None and not self.is_reference

    @property
    def uses_tca(self) -> bool:
        return self.loss.startswith("tca")

    def to_dict(self) -> dict:
        """The flat form written to results.json: the identifying fields, the metrics, then the rest."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "metrics"}
        core = {k: out.pop(k) for k in IDENTITY}
        return {**core, **self.metrics, **out}

    @classmethod
    def from_dict(cls, d: dict, where: str = "results row", *, dataset: str = "", protocol: str = "T"
                  ) -> "ResultRow":
        """Read a flat row; `dataset` / `protocol` fill rows that do not name them (the results file's)."""
        if not isinstance(d, dict) or "name" not in d or "loss" not in d:
            raise SemrecError(f"{where}: not a results row (needs at least 'name' and 'loss')")
        names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        defaults = {"model": "", "tokenizer": None, "alpha": None, "tau": None, "dataset": dataset,
                    "protocol": protocol, "split": "test", "device": None, "seed": 0}
        known = {**defaults, **{k: v for k, v in d.items() if k in names}}
        known["loss"] = known["loss"] or "none"  # reference rows of early files wrote null
        return cls(**known, metrics={k: v for k, v in d.items() if k not in names})


def infer_baseline(row: ResultRow, rows: list[ResultRow]) -> str | None:
    """For rows written before `baseline` was recorded: the one NTP row with the same dataset, model, IDs,
    temperature, MSL mode and seed as TCA row `row` (None when there is none, or several to choose from)."""
    if not row.uses_tca:
        return None
    plain = "ntp" + row.loss[len("tca"):]  # "tca+msl" -> "ntp+msl"
    twins = {b.name for b in rows if b.loss == plain and (b.dataset, b.model, b.tokenizer, b.tau, b.seed)
             == (row.dataset, row.model, row.tokenizer, row.tau, row.seed)}
    return twins.pop() if len(twins) == 1 else None


class RunDirectory:
    """A `semrec run` output directory, read through its results file and finished stages.

    `results`: another results file of the same directory's stages (default its `results.json`, which the
    last run of any recipe into it rewrote), e.g. a recipe's table kept as `benchmarks/results/<recipe>.json`."""

    def __init__(self, path: str | Path, results: str | Path | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise SemrecError(f"{self.path}: no such run directory")
        where = Path(results) if results is not None else self.path / RESULTS_FILE
        self.result = read_json(where)
        self.rows = rows_of(self.result, str(where))

    @property
    def generative_rows(self) -> list[ResultRow]:
        return [r for r in self.rows if not r.is_teacher and not r.is_reference]

    def stages(self, kind: str) -> list[Path]:
        """Finished stage directories of `kind` ("model", "teacher" or "ids"), sorted by name."""
        if kind not in STAGE_MARKERS:
            raise SemrecError(f"stage kind {kind!r}: expected one of {', '.join(STAGE_MARKERS)}")
        root = self.path / STAGES_DIR
        return sorted(p for p in root.glob(f"{kind}-*") if (p / STAGE_MARKERS[kind]).is_file())

    def teacher_stage(self, seed: int) -> Path:
        """The teacher stage of `seed` that this result's models distilled (the teacher named in the inputs of
        its rows' model stages); without such a row, the directory's one teacher stage of that seed."""
        keys = set()
        for row in self.generative_rows:
            if row.seed == seed and row.model_stage:
                st = self.path / STAGES_DIR / row.model_stage / STAGE_FILE
                if st.is_file():
                    keys.add(read_json(st).get("inputs", {}).get("teacher"))
        keys.discard(None)
        if keys:
            cache = StageCache(self.path / STAGES_DIR)
            found = [cache.path("teacher", k) for k in sorted(keys)]
        else:
            found = [d for d in self.stages("teacher")
                     if read_json(d / STAGE_FILE).get("config", {}).get("train", {}).get("seed") == seed]
        if len(found) != 1 or not (found[0] / STAGE_MARKERS["teacher"]).is_file():
            raise SemrecError(f"{self.path}: cannot tell the teacher stage of seed {seed} "
                              f"({len(found)} candidates, or its directory is gone)")
        return found[0]

    def model_stage(self, row: ResultRow) -> Path:
        """The model stage that produced `row` (recorded in the row, or matched by its stage config)."""
        if row.model_stage:
            d = self.path / STAGES_DIR / row.model_stage
            if not (d / "model").is_dir():
                raise SemrecError(f"{d}: model stage of row {row.name!r} is missing")
            return d
        # runs written before rows recorded their stage: match model, seed, loss, alpha and chosen sweep values
        chosen = {k: v for k, v in (row.selected_on_valid or {}).items() if "@" not in k}
        matches = []
        for st in sorted((self.path / STAGES_DIR).glob(f"model-*/{STAGE_FILE}")):
            cfg = read_json(st).get("config", {})
            tr = cfg.get("train", {})
            loss = str(tr.get("loss")) + ("+msl" if tr.get("msl") else "")
            if (cfg.get("model") != row.model or tr.get("seed") != row.seed or loss != row.loss
                    or (row.alpha is not None and tr.get("alpha") != row.alpha)
                    or any(tr.get(k) != v for k, v in chosen.items())):
                continue
            matches.append(st.parent)
        if len(matches) != 1:
            raise SemrecError(f"{self.path}: cannot tell which model stage produced row {row.name!r} "
                              f"({len(matches)} candidates); re-run `semrec run` to record it")
        return matches[0]


def rows_of(result: Any, where: str) -> list[ResultRow]:
    """The typed rows of a results dict (a run's results.json or a benchmarks/results/<recipe>.json copy)."""
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise SemrecError(f"{where}: not a `semrec run` results file (no 'rows' list)")
    rows = [ResultRow.from_dict(r, f"{where}: row {i}", dataset=result.get("dataset", ""),
                                protocol=result.get("protocol", "T")) for i, r in enumerate(result["rows"])]
    for row, raw in zip(rows, result["rows"]):
        if "baseline" not in raw:
            row.baseline = infer_baseline(row, rows)
    return rows
