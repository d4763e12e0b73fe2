"""The experiment pipeline: recipes, content-addressed stage caching, and `semrec run`."""

from semrec.pipeline.cache import StageCache, content_key
from semrec.pipeline.recipe import EvalSpec, ModelSpec, Recipe, TeacherSpec, load_recipe
from semrec.pipeline.run import Pipeline, run_recipe

__all__ = ["EvalSpec", "ModelSpec", "Pipeline", "Recipe", "StageCache", "TeacherSpec", "content_key",
           "load_recipe", "run_recipe"]
