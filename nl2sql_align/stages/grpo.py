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
from nl2sql_align.stages.rl import (  # noqa: F401  (check_batch_sizes: re-exported for callers of grpo)
    GROUP_TRAIN_DEFAULTS,
    check_batch_sizes,
    group_stage,
    run_with_engine,
)

TRAIN_DEFAULTS = GROUP_TRAIN_DEFAULTS
config_class, train_defaults, check_train, _build_with, STAGE = group_stage("grpo", "GRPO", "GRPOConfig", "GRPOTrainer")


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_with_engine(STAGE, recipe, _build_with, overwrite=overwrite, resume=resume)
