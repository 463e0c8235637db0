"""Training stages. Each stage module describes itself with one `Stage` (its `STAGE`); `run_stage` (runner.py)
and `validate` both consume that description, through `preflight.check_stage`, so whatever a run refuses,
`validate` refuses first, before any model loads."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nl2sql_align.errors import UserError

STAGES = ("sft", "rm", "dpo", "ppo", "grpo", "rloo")

# Recipe file names that say which stage they are for (kto/simpo/orpo recipes run under `dpo`).
_NAME_TO_STAGE = {s: s for s in STAGES} | {"kto": "dpo", "simpo": "dpo", "orpo": "dpo"}


def _no_check(values: dict[str, Any], recipe: Any, num_processes: int | None) -> str | None:
    return None


@dataclass(frozen=True)
class Stage:
    """What the runner and `validate` need to know about a stage; every stage provides the same shape.

    config_class(recipe) -> the TRL config class [train] is checked against (dpo: depends on the method);
    train_defaults(recipe) -> our defaults under [train];
    check_train(values, recipe, num_processes) -> a message naming the keys to change, or None;
    load_data(recipe) -> (train items, eval examples, held-out pairs), every data error raised here;
    preflight(recipe, data) -> more checks before a model loads (gold SQL runs, rewards resolve): (lines for
        `validate` to print, the data to train on: the reward guards may leave examples out);
    for_processes(recipe, n) -> the recipe as n processes will run it, for `validate --num-processes n`;
    lengths(recipe, data, tokenizer) -> prompt+answer token counts of the train items, or None (not checked);
    heldout(trainer, ctx) -> measured on held-out data before and after training, or None;
    unit: what a train item is called in the model card."""

    name: str
    config_class: Callable[[Any], type]
    train_defaults: Callable[[Any], dict[str, Any]]
    load_data: Callable[[Any], tuple[list, list, list]]
    check_train: Callable[[dict[str, Any], Any, int | None], str | None] = _no_check
    preflight: Callable[[Any, tuple[list, list, list]], tuple[list[str], tuple[list, list, list]]] | None = None
    for_processes: Callable[[Any, int], Any] | None = None
    lengths: Callable[[Any, list, Any], list[int]] | None = None
    heldout: Callable[[Any, Any], dict[str, float]] | None = None
    unit: str = "examples"

    def method(self, recipe: Any) -> str | None:
        """The preference method a dpo run trains with (recorded beside the stage); None for other stages."""
        return recipe.preference.method if self.name == "dpo" else None


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise UserError(f"unknown stage {name!r}; stages available: {', '.join(STAGES)}")
    return importlib.import_module(f"nl2sql_align.stages.{name}").STAGE


def stage_module(name: str):
    get_stage(name)
    return importlib.import_module(f"nl2sql_align.stages.{name}")


def guess_stage(recipe: Path) -> str:
    """The stage a recipe is for, from its file name (qwen7b-grpo.toml -> grpo); sft when it does not say."""
    parts = recipe.stem.lower().replace("_", "-").split("-")
    for part in reversed(parts):
        if part in _NAME_TO_STAGE:
            return _NAME_TO_STAGE[part]
    return "sft"


def load_stage_recipe(stage: str, path: str | Path | None, overrides: list[str] | None = None):
    """Load a recipe and check its [train] keys against the stage's TRL config class. Returns (recipe, config
    class, the stage's [train] defaults)."""
    from nl2sql_align.recipe import load_recipe, validate_train

    s = get_stage(stage)
    recipe = load_recipe(path, overrides)
    cls = s.config_class(recipe)
    return validate_train(recipe, cls), cls, s.train_defaults(recipe)
