"""Experiment recipes: one YAML per experiment, loaded into typed dataclasses (unknown keys rejected).

    name: quickstart
    data: office-t                       # builtin dataset name or a dataset directory
    seeds: [0]
    teacher: {model: sasrec, config: {max_len: 10}, train: {epochs: 30}}
    tokenizer: ../tokenizers/rqkmeans.yaml   # relative to the recipe file
    train: {epochs: 10, batch_size: 256}     # semrec.training.TrainConfig, shared by all models
    models:
      - {name: TIGER, model: tiger}
      - {name: TIGER+TCA, model: tiger, train: {loss: tca}, sweep: {alpha: [0.05, 0.1, 0.2, 0.5]}}
    eval: {num_beams: 10}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from semrec.config import apply_overrides, load_config
from semrec.errors import SemrecError


@dataclass
class TeacherSpec:
    """The CF teacher: a semrec.cf.TEACHERS name, its model config and its semrec.cf.TrainConfig."""

    model: str = "sasrec"
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """One generative model row: a semrec.models.MODELS name, its config, TrainConfig overrides on top
    of the recipe's `train`, and an optional sweep {TrainConfig field: [values]} chosen on valid:
    `sweep_choice` "per_seed" keeps each seed's best value, "mean_over_seeds" the one value whose valid
    metric averaged over the recipe's seeds is best (every seed then uses it; ties: the first in the grid).
    Per seed, the choice follows that seed's models; averaged, it reads the seed-to-seed spread as noise."""

    name: str
    model: str = "tiger"
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    sweep_choice: Literal["per_seed", "mean_over_seeds"] = "per_seed"
    tokenizer: str | None = None  # overrides the recipe's tokenizer for this row
    examples: str = "auto"  # training examples: auto | rows | prefixes (semrec.models.training_examples)


@dataclass
class EvalSpec:
    num_beams: int = 10
    # "exact": the evaluation stages' lists are each model's exact top-K (semrec.decoding.exact_search;
    # num_beams unused, far slower); training's validation (best epoch, a sweep's value) stays beam search
    decode: Literal["beam", "exact"] = "beam"
    batch_size: int = 256
    max_test_rows: int | None = None  # None = the whole test split
    select_on: str = "ndcg@10"  # valid metric that picks a sweep's value
    bf16: bool = False  # decode under bf16 autocast on CUDA or a CPU with native bf16 (semrec.decoding.beam_search)
    # decoding-time popularity correction strengths s >= 0 (semrec.decoding.popularity_bias: each item's score
    # lowered by s x log of its training popularity share); with more than [0], each model row's trained model
    # decodes the valid split (the rows its training selected on: train.valid_rows) at every s and the best
    # `select_on` picks it (ties: the smaller s)
    popularity_correction: list[float] = field(default_factory=lambda: [0.0])


@dataclass
class Recipe:
    name: str
    data: str
    tokenizer: str = "tokenizers/rqkmeans.yaml"
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    description: str = ""
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    teachers_in_table: list[str] = field(default_factory=lambda: ["sasrec"])  # extra teacher rows
    train: dict[str, Any] = field(default_factory=dict)
    models: list[ModelSpec] = field(default_factory=list)
    eval: EvalSpec = field(default_factory=EvalSpec)

    # set by load_recipe: the directory relative paths in the recipe are resolved against
    base_dir: str = field(default=".", repr=False)

    def resolve_path(self, p: str) -> Path:
        """A path from the recipe, relative to the recipe file (or the working directory if it exists there)."""
        path = Path(p)
        if path.is_absolute():
            return path
        rel = Path(self.base_dir) / path
        if rel.exists():
            return rel
        return path


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML, apply `--set key=value` overrides, and check its names and types."""
    from semrec.cf import TEACHERS
    from semrec.models import MODELS
    from semrec.data.examples import TRAIN_EXAMPLES
    from semrec.training.config import TrainConfig

    recipe = load_config(Recipe, path)
    if overrides:
        recipe = apply_overrides(recipe, overrides)
    recipe.base_dir = str(Path(path).resolve().parent)
    where = str(path)
    names = [m.name for m in recipe.models]
    if len(set(names)) != len(names):
        raise SemrecError(f"{where}: model names must be unique, got {names}")
    for t in [recipe.teacher.model, *recipe.teachers_in_table]:
        if t not in TEACHERS:
            raise SemrecError(f"{where}: unknown teacher '{t}'; known: {', '.join(TEACHERS)}")
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for m in recipe.models:
        if m.model not in MODELS:
            raise SemrecError(f"{where}: model '{m.name}': unknown model '{m.model}'; known: {', '.join(MODELS)}")
        if m.examples not in TRAIN_EXAMPLES:
            raise SemrecError(f"{where}: model '{m.name}': examples '{m.examples}': expected one of "
                              f"{', '.join(TRAIN_EXAMPLES)}")
        for key in m.sweep:
            if key not in train_fields:
                raise SemrecError(f"{where}: model '{m.name}': cannot sweep '{key}': not a training option")
            if not m.sweep[key]:
                raise SemrecError(f"{where}: model '{m.name}': sweep '{key}' has no values")
        if m.sweep_choice != "per_seed" and not m.sweep:
            raise SemrecError(f"{where}: model '{m.name}': sweep_choice '{m.sweep_choice}' needs a sweep")
        # validate the merged training config now, before any expensive stage runs
        train_config(recipe, m, seed=recipe.seeds[0] if recipe.seeds else 0)
    for tok in {recipe.tokenizer, *[m.tokenizer for m in recipe.models if m.tokenizer]}:
        if not recipe.resolve_path(tok).is_file():
            raise SemrecError(f"{where}: tokenizer scheme file '{tok}' not found")
    if not recipe.seeds:
        raise SemrecError(f"{where}: 'seeds' is empty")
    strengths = recipe.eval.popularity_correction
    if not strengths or not all(0 <= s < math.inf for s in strengths):  # load_config checked they are numbers
        raise SemrecError(f"{where}: eval.popularity_correction: expected a non-empty list of finite strengths "
                          f">= 0, got {strengths!r}")
    return recipe


def train_config(recipe: Recipe, spec: ModelSpec, *, seed: int, sweep_values: dict | None = None):
    """The semrec.training.TrainConfig of one model run: recipe.train < spec.train < sweep values, seed."""
    from semrec.training.config import TrainConfig

    merged = {**recipe.train, **spec.train, **(sweep_values or {}), "seed": seed, "device": recipe.device}
    return load_config(TrainConfig, merged, name=f"recipe model '{spec.name}' train")
