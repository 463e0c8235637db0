"""What the RL stages (grpo, ppo) share: the dataset rows with gold/database columns, the gold audit before
training, the completions-log fields, and running a stage with a reward engine that always shuts down.
No stage imports another stage: both import this."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from nl2sql_align.errors import DataError, RecipeError, failing_gold_error
from nl2sql_align.recipe import Recipe
from nl2sql_align.rewards import build_reward_functions, engine_for, specs_for, uses_execution
from nl2sql_align.stages import Stage
from nl2sql_align.stages.runner import run_stage


def rl_rows(examples, recipe: Recipe) -> list[dict]:
    from nl2sql_align.data import build_messages

    return [
        {
            "prompt": build_messages(ex, recipe.data.schema, recipe.data.system_prompt),
            "gold_sql": ex.sql,
            "db_path": ex.db.path,
            "db_engine": ex.db.engine,
            "gold_dialect": ex.dialect or "",
        }
        for ex in examples
    ]


def question_of(prompt) -> str:
    """The question of a chat prompt (what a completions log shows instead of the whole schema)."""
    if isinstance(prompt, list) and prompt:
        content = prompt[-1].get("content", "") if isinstance(prompt[-1], dict) else str(prompt[-1])
        return content.rsplit("Question: ", 1)[-1]
    return str(prompt)


def rounded(v):
    """A logged number: 4 decimals, None for NaN (JSON has no NaN)."""
    v = float(v)
    return None if v != v else round(v, 4)


def audit_and_filter(examples, recipe: Recipe, engine, console: Console | None = None):
    """Execute every gold query; stop on failing gold, report (and optionally drop) hackable examples."""
    from nl2sql_align.recipe import RewardSection
    from nl2sql_align.rewards.guards import audit_gold

    section = recipe.reward or RewardSection()
    audit = audit_gold(examples, engine)
    if audit.failing:
        raise failing_gold_error(
            [f"{ex.source or ex.id}: {err}" for ex, err in audit.failing],
            "those examples can never earn an execution reward",
            f"Fix or remove them from {recipe.data.train}.",
        )
    console = console or Console(stderr=True)
    for line in audit.report(len(examples)):
        console.print(f"[yellow]reward guard:[/] {line}")
    drop = set()
    if section.drop_empty_gold:
        drop |= {ex.id for ex in audit.empty}
    if section.drop_trivial_gold:
        drop |= {ex.id for ex, _ in audit.trivial}
    kept = [ex for ex in examples if ex.id not in drop]
    if drop:
        console.print(f"reward guard: dropped {len(drop)} examples, {len(kept)} left")
    if not kept:
        raise DataError(f"{recipe.data.train}: no training examples left after the reward guards")
    return kept, audit


def run_with_engine(stage: Stage, recipe: Recipe, build_with, **kwargs) -> Path:
    """run_stage for the stages that execute SQL for rewards (grpo, ppo): `build_with(holder)` returns the build
    function, which puts the RewardEngine it starts in holder["engine"]; its workers stop however the run ends."""
    holder: dict = {}
    try:
        return run_stage(stage, recipe, build_with(holder), **kwargs)
    finally:
        if holder.get("engine") is not None:
            holder["engine"].close()


def reward_preflight(recipe: Recipe, data: tuple[list, list, list]) -> tuple[list[str], tuple[list, list, list]]:
    """Before a model loads: the reward components resolve, a reward model folder exists, and every gold query
    of data.train runs (the gold audit: failing gold stops the run; empty or trivially matched gold is reported
    and, as [reward] asks, left out). Returns the lines `validate` prints and the data to train on."""
    specs = specs_for(recipe.reward)
    build_reward_functions(specs, engine=None)
    terms = [f"{s.weight:g} x {s.name}" for s in specs]
    model = recipe.reward.model if recipe.reward else None
    if model:
        if not (Path(model) / "config.json").is_file() and not (Path(model) / "adapter_config.json").is_file():
            raise RecipeError(
                f"{recipe.source}: reward.model = {model!r} is not a reward model folder (train one with "
                "`nl2sql-align rm`)"
            )
        terms.append(f"{recipe.reward.model_weight:g} x reward model {model}")
    if not terms:
        raise RecipeError(
            f'{recipe.source}: [reward] gives no reward: preset = "none" needs reward.model or [[reward.components]]'
        )
    lines = ["reward: " + " + ".join(terms)]
    train, evals, held = data
    if uses_execution(recipe.reward):
        with engine_for(recipe.reward) as engine:
            kept, audit = audit_and_filter(train, recipe, engine)
        lines.append(
            f"gold SQL of {len(train)} training examples runs ({len(audit.empty)} empty results, "
            f"{len(audit.trivial)} matched by trivial queries; {len(kept)} kept)"
        )
        train = kept
    return lines, (train, evals, held)
