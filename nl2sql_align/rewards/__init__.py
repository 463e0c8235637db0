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
        return [
            ComponentSpec(c.name, c.weight, c.hit, c.miss, tuple(c.requires)) for c in section.components
        ]
    return list(PRESETS[section.preset])


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
    "specs_for",
    "sql_r1_length_bonus",
]
