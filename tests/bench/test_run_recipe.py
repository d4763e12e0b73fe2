"""benchmarks/run_recipe.py: the "Produced by" line of a results file is a command a shell reads back intact."""

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import run_recipe  # noqa: E402  (a script of benchmarks/, not a package)


def test_produced_by_round_trips_through_a_shell():
    overrides = ["train.msl=true", "seeds=[0, 1]", "name=toys_x"]
    line = run_recipe.produced_by("recipes/toys/tiger_tca_long_cpu.yaml", overrides, "toys_y")
    assert shlex.split(line) == ["python", "benchmarks/run_recipe.py", "recipes/toys/tiger_tca_long_cpu.yaml",
                                 "--set", "train.msl=true", "--set", "seeds=[0, 1]", "--set", "name=toys_x",
                                 "--name", "toys_y"]
    assert run_recipe.produced_by("r.yaml", []) == "python benchmarks/run_recipe.py r.yaml"
