"""RLOO: TRL's RLOOTrainer (REINFORCE Leave-One-Out, Ahmadian et al. 2024) with the execution rewards GRPO uses.

Everything but the trainer is GRPO's, shared through stages/rl.py: the dataset rows (`prompt` plus `gold_sql`,
`db_path`, `db_engine`, `gold_dialect`), the [reward] components, presets and weights, the gold audit and reward
guards before training, completions.jsonl, the plots and the train_end row. What differs is the advantage: each
of the num_generations completions of a prompt is scored against the mean reward of the *other* completions of
that prompt (r_i - mean_{j != i} r_j), not against the group's mean and standard deviation; and RLOOConfig's
`beta` is a KL penalty folded into the reward (TRL's default 0.05; 0 loads no reference model). Everything
RLOO-specific (num_generations, beta, epsilon, normalize_advantages, reward_clip_range, temperature, ...) is
plain RLOOConfig in [train].
"""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.recipe import Recipe
from nl2sql_align.stages.rl import GROUP_TRAIN_DEFAULTS, group_stage, run_with_engine

TRAIN_DEFAULTS = GROUP_TRAIN_DEFAULTS
config_class, train_defaults, check_train, _build_with, STAGE = group_stage("rloo", "RLOO", "RLOOConfig", "RLOOTrainer")


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_with_engine(STAGE, recipe, _build_with, overwrite=overwrite, resume=resume)
