"""GRPO: TRL's GRPOTrainer with rewards computed by executing the generated SQL (nl2sql_align/rewards).

Dataset columns: `prompt` (the same chat prompt SFT and eval use), plus `gold_sql`, `db_path`, `db_engine`
and `gold_dialect`, which TRL hands to every reward function as keywords. The [reward] table picks the
components and weights (GRPOConfig.reward_weights is filled from it); everything GRPO-specific
(num_generations, loss_type, beta, epsilon, temperature, ...) is plain GRPOConfig in [train].

Before training, every gold query is executed once: failing gold SQL is an error (the example could never
be rewarded), empty or trivially matched gold results are reported and optionally dropped (rewards/guards.py).
"""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.recipe import Recipe
from nl2sql_align.stages import Stage
from nl2sql_align.stages.rl import (  # noqa: F401  (check_batch_sizes: re-exported for callers of grpo)
    GROUP_TRAIN_DEFAULTS,
    check_batch_sizes,
    check_group_train,
    group_for_processes,
    group_trainer_builder,
    reward_preflight,
    run_with_engine,
)
from nl2sql_align.stages.runner import load_stage_examples

TRAIN_DEFAULTS = GROUP_TRAIN_DEFAULTS


def config_class(recipe: Recipe | None = None):
    from trl import GRPOConfig

    return GRPOConfig


def train_defaults(recipe: Recipe | None = None) -> dict:
    return TRAIN_DEFAULTS


def check_train(values: dict, recipe: Recipe | None = None, num_processes: int | None = None) -> str | None:
    return check_group_train(values, recipe, num_processes, "GRPO")


def _trainer_class():
    from trl import GRPOTrainer

    return GRPOTrainer


_build_with = group_trainer_builder(_trainer_class)

STAGE = Stage(
    name="grpo",
    config_class=config_class,
    train_defaults=train_defaults,
    load_data=load_stage_examples,
    check_train=check_train,
    preflight=reward_preflight,
    for_processes=group_for_processes,
)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_with_engine(STAGE, recipe, _build_with, overwrite=overwrite, resume=resume)
