"""What the RL stages (grpo, rloo, ppo) share: the dataset rows with gold/database columns, the gold audit before
training, the completions log, and running a stage with a reward engine that always shuts down. grpo and rloo
wrap TRL trainers of one family (same constructor, reward-function contract, generation batch and logs), so
their [train] defaults, batch arithmetic, completions log and build function live here, once.
No stage imports another stage: they all import this."""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from nl2sql_align.agent import turns_of
from nl2sql_align.errors import DataError, RecipeError, failing_gold_error
from nl2sql_align.recipe import Recipe
from nl2sql_align.rewards import build_reward_functions, engine_for, specs_for, uses_execution
from nl2sql_align.rewards.engine import completion_text
from nl2sql_align.stages import Stage
from nl2sql_align.stages.runner import StageContext, run_stage
from nl2sql_align.stages.setup import load_stage_examples


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
        for key in ("engine", "tool_executor"):  # tool_executor: [agent] tool_timeout's own pool
            if holder.get(key) is not None:
                holder[key].close()


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
    if recipe.agent is not None:
        a = recipe.agent
        lines.append(f"agent: execute_sql tool, up to {a.max_turns} rounds, results cut at {a.max_result_chars} chars")
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


# ---------------------------------------------------------------------------------------------------------
# The GRPO family (TRL's GRPOTrainer and RLOOTrainer): one prompt, num_generations sampled completions, rewards
# compared within that group.

GROUP_TRAIN_DEFAULTS = {
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "max_completion_length": 256,
    "num_generations": 8,
}

# Why each algorithm needs two completions of a prompt (the message when num_generations < 2).
_GROUP_NEED = {
    "GRPO": "GRPO compares completions within a group",
    "RLOO": "RLOO's baseline for a completion is the mean reward of the other completions of its prompt",
}


def check_group_train(values: dict, recipe: Recipe | None, num_processes: int | None, algorithm: str) -> str | None:
    """A GRPO-family stage's own [train] rule: reward weights belong in [reward], and the batch arithmetic."""
    if recipe is not None and "reward_weights" in recipe.train:
        return "set reward weights in [reward] (weight = ...), not train.reward_weights"
    if recipe is not None and recipe.agent is not None:
        if algorithm != "GRPO":
            return "[agent] (tool calls before the answer) trains with grpo only"
        if "max_tool_calling_iterations" in recipe.train:
            return "set the turn budget in [agent] (max_turns = ...), not train.max_tool_calling_iterations"
        problem = recipe.agent.problem()
        if problem:
            return problem
    return check_batch_sizes(values, num_processes, algorithm)


def check_batch_sizes(train: dict, num_processes: int | None = None, algorithm: str = "GRPO") -> str | None:
    """Say which numbers to change when the batch arithmetic of GRPO or RLOO does not work out.

    Every generation batch (per_device_train_batch_size x processes x steps_per_generation prompts-with-
    completions) must hold whole groups of num_generations completions of one prompt. TRL rejects it too,
    in its own terms; this names the recipe keys and a value that works. `train` holds the [train] values
    merged over the stage defaults."""
    if num_processes is None:
        num_processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    g = int(train.get("num_generations", 8))
    per_device = int(train.get("per_device_train_batch_size", 8))
    steps = int(train.get("steps_per_generation") or train.get("gradient_accumulation_steps", 1))
    gen_batch = train.get("generation_batch_size") or per_device * num_processes * steps
    if g < 2:
        return f"train.num_generations = {g}: {_GROUP_NEED[algorithm]}, it needs at least 2"
    if gen_batch % g == 0:
        return None
    fix = next(b for b in range(per_device + 1, per_device + g + 1) if (b * num_processes * steps) % g == 0)
    return (
        f"each generation batch ({gen_batch} completions = per_device_train_batch_size {per_device} x {num_processes} "
        f"process(es) x steps_per_generation {steps}) must hold whole groups of train.num_generations = {g}: "
        f"set train.per_device_train_batch_size = {fix}, or train.num_generations to a divisor of {gen_batch}"
    )


def group_for_processes(recipe: Recipe, num_processes: int) -> Recipe:
    """GRPOConfig and RLOOConfig derive their generation batch from the processes of the run that builds them
    (one, when validating): state the batch N processes will form, so that TRL checks the real plan."""
    if {"generation_batch_size", "steps_per_generation"} & set(recipe.train):
        return recipe
    merged = {**GROUP_TRAIN_DEFAULTS, **recipe.train}
    planned = copy.deepcopy(recipe)
    planned.train["generation_batch_size"] = (
        merged.get("per_device_train_batch_size", 8) * num_processes * merged.get("gradient_accumulation_steps", 1)
    )
    return planned


def completions_logger_class(base: type) -> type:
    """`base` (GRPOTrainer or RLOOTrainer) that also writes a sample of each logging step's completions, with
    their rewards, advantage and verdicts, to completions.jsonl (TRL's own log_completions prints tables or
    writes parquet). Rows keep the generation batch's order: the num_generations completions of a prompt are
    consecutive, as TRL groups them."""

    class Trainer(base):
        completions_path: Path | None = None
        completions_per_log: int = 8

        def log(self, logs, start_time=None):
            super().log(logs, start_time)
            if self.completions_path is None or not self.accelerator.is_main_process or "loss" not in logs:
                return
            n = len(self._logs["completion"])
            if not n:
                return
            rng = random.Random(self.state.global_step)
            idx = sorted(rng.sample(range(n), min(self.completions_per_log, n)))
            with self.completions_path.open("a", encoding="utf-8") as f:
                for i in idx:
                    row = {"step": self.state.global_step, "prompt": question_of(self._logs["prompt"][i])}
                    completion = self._logs["completion"][i]
                    row["completion"] = completion_text(completion)
                    if isinstance(completion, list) and len(completion) > 1:  # [agent]: each turn, tool results too
                        row["turns"] = turns_of(completion)
                    row["rewards"] = {k: rounded(v[i]) for k, v in self._logs["rewards"].items() if i < len(v)}
                    row["advantage"] = (
                        rounded(self._logs["advantages"][i]) if i < len(self._logs["advantages"]) else None
                    )
                    for k, v in self._logs["extra"].items():
                        if i < len(v):
                            row[k] = v[i]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    Trainer.__name__ = Trainer.__qualname__ = f"Logged{base.__name__}"
    return Trainer


def group_trainer_builder(trainer_class: Callable[[], type]):
    """The `build_with` of a GRPO-family stage (`run_with_engine`): `trainer_class()` imports the TRL trainer.
    The build starts the reward engine, hands TRL the reward functions with their weights ([reward]), the rows
    with gold and database columns, and logs completions as [reward] log_completions asks."""

    def build_with(engine_holder: dict):
        def build(ctx: StageContext):
            from datasets import Dataset

            from nl2sql_align.rewards import reward_functions_for

            recipe = ctx.recipe
            engine = engine_for(recipe.reward, num_processes=ctx.args.world_size)
            engine_holder["engine"] = engine
            section = recipe.reward
            funcs, weights = reward_functions_for(section, engine, device=ctx.args.device)
            extra: dict = {}
            if recipe.agent is not None:  # multi-turn: TRL's environment_factory, one SQLEnvironment per rollout
                from nl2sql_align.agent import trainer_kwargs

                extra, funcs, weights = trainer_kwargs(
                    recipe, engine, funcs, weights, ctx.tokenizer, ctx.args, engine_holder
                )
            ctx.args.reward_weights = weights
            trainer = completions_logger_class(trainer_class())(
                model=ctx.model,
                reward_funcs=funcs,
                args=ctx.args,
                train_dataset=Dataset.from_list(rl_rows(ctx.train_examples, recipe)),  # audited by reward_preflight
                processing_class=ctx.tokenizer,
                peft_config=ctx.peft_config,
                quantization_config=ctx.quantization_config,
                callbacks=ctx.callbacks,
                **extra,
            )
            trainer.completions_path = Path(ctx.args.output_dir) / "completions.jsonl"
            trainer.completions_per_log = section.log_completions if section else 8
            return trainer

        return build

    return build_with


def group_stage(name: str, algorithm: str, config: str, trainer: str):
    """What a GRPO-family stage module (grpo, rloo) is made of, given its TRL config and trainer class names:
    (config_class, train_defaults, check_train, build_with, Stage). The module keeps its own `run` over its
    module-level `build_with`, so tests can swap that for a spy."""

    def config_class(recipe: Recipe | None = None) -> type:
        import trl

        return getattr(trl, config)

    def train_defaults(recipe: Recipe | None = None) -> dict:
        return GROUP_TRAIN_DEFAULTS

    def check_train(values: dict, recipe: Recipe | None = None, num_processes: int | None = None) -> str | None:
        return check_group_train(values, recipe, num_processes, algorithm)

    def trainer_class() -> type:
        import trl

        return getattr(trl, trainer)

    stage = Stage(
        name=name,
        config_class=config_class,
        train_defaults=train_defaults,
        load_data=load_stage_examples,
        check_train=check_train,
        preflight=reward_preflight,
        for_processes=group_for_processes,
    )
    return config_class, train_defaults, check_train, group_trainer_builder(trainer_class), stage
