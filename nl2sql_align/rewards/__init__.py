"""Execution rewards for RL stages: the reward engine, TRL-contract reward functions, presets, guards.

with RewardEngine(metric="spider") as engine:
    funcs, weights = build_reward_functions(specs_for(recipe.reward), engine)
    GRPOTrainer(..., reward_funcs=funcs)  # with GRPOConfig(reward_weights=weights)
"""

from nl2sql_align.rewards.engine import RewardEngine, Verdict, completion_text, default_workers
from nl2sql_align.rewards.functions import (
    CHECKS,
    PRESETS,
    ComponentSpec,
    GuardedReward,
    SQLCheckReward,
    build_reward_functions,
    sql_r1_length_bonus,
)


def specs_for(section) -> list[ComponentSpec]:
    """The components a recipe's [reward] table asks for (None: the default preset)."""
    if section is None:
        return list(PRESETS["default"])
    if section.components:
        return [ComponentSpec(c.name, c.weight, c.hit, c.miss, tuple(c.requires)) for c in section.components]
    return [] if section.preset == "none" else list(PRESETS[section.preset])


def reward_functions_for(section, engine: RewardEngine | None, device=None):
    """Every reward function a recipe's [reward] asks for, with its weight: the execution components, then the
    reward model's score (reward.model) when set. Used by grpo and ppo alike."""
    from nl2sql_align.errors import RecipeError

    specs = specs_for(section)
    timeout = section.function_timeout if section else 60.0
    funcs, weights = build_reward_functions(specs, engine, function_timeout=timeout) if specs else ([], [])
    if section is not None and section.model:
        from nl2sql_align.rewards.model import RewardModelScore

        funcs.append(RewardModelScore(section.model, device=device))
        weights.append(section.model_weight)
    if not funcs:
        raise RecipeError(
            '[reward] gives no reward: preset = "none" needs reward.model (a folder from `nl2sql-align rm`) '
            "or [[reward.components]]"
        )
    return funcs, weights


def uses_execution(section) -> bool:
    """Whether any reward component executes SQL (so the gold SQL must run, and a sandbox is needed)."""
    return bool(specs_for(section))


def engine_for(section, num_processes: int | None = None) -> RewardEngine:
    from nl2sql_align.recipe import RewardSection

    s = section or RewardSection()
    return RewardEngine(
        metric=s.metric,
        keep_distinct=s.keep_distinct,
        timeout=s.timeout,
        workers=s.workers or default_workers(num_processes),
        row_cap=s.row_cap,
        memory_mb=s.memory_mb,
    )


__all__ = [
    "CHECKS",
    "PRESETS",
    "ComponentSpec",
    "GuardedReward",
    "RewardEngine",
    "SQLCheckReward",
    "Verdict",
    "build_reward_functions",
    "completion_text",
    "default_workers",
    "engine_for",
    "reward_functions_for",
    "uses_execution",
    "specs_for",
    "sql_r1_length_bonus",
]
