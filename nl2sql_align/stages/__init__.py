"""Training stages: each module turns examples into its TRL trainer; stages/runner.py does the rest."""

from __future__ import annotations

import importlib
from pathlib import Path

from nl2sql_align.errors import UserError

STAGES = ("sft", "rm", "dpo", "ppo", "grpo")


def stage_module(stage: str):
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; stages available: {', '.join(STAGES)}")
    return importlib.import_module(f"nl2sql_align.stages.{stage}")


def load_stage_recipe(stage: str, path: str | Path | None, overrides: list[str] | None = None):
    """Load a recipe and check its [train] against the stage's TRL config class, which for dpo depends on the
    recipe itself ([preference] method). Returns (recipe, config class, the stage's [train] defaults)."""
    from nl2sql_align.recipe import load_recipe, validate_train

    module = stage_module(stage)
    recipe = load_recipe(path, overrides)
    if stage == "dpo":
        method = recipe.preference.method
        cls, defaults = module.config_class(method), module.train_defaults(method)
    else:
        cls, defaults = module.config_class(), module.TRAIN_DEFAULTS
    return validate_train(recipe, cls), cls, defaults
