"""GRPO: TRL's GRPOTrainer with rewards computed by executing the generated SQL (nl2sql_align/rewards).

Dataset columns: `prompt` (the same chat prompt SFT and eval use), plus `gold_sql`, `db_path`, `db_engine`
and `gold_dialect`, which TRL hands to every reward function as keywords. The [reward] table picks the
components and weights (GRPOConfig.reward_weights is filled from it); everything GRPO-specific
(num_generations, loss_type, beta, epsilon, temperature, ...) is plain GRPOConfig in [train].

Before training, every gold query is executed once: failing gold SQL is an error (the example could never
be rewarded), empty or trivially matched gold results are reported and optionally dropped (rewards/guards.py).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from rich.console import Console

from nl2sql_align.errors import DataError, RecipeError, failing_gold_error
from nl2sql_align.recipe import Recipe
from nl2sql_align.rewards.engine import completion_text
from nl2sql_align.stages.runner import StageContext, run_stage

TRAIN_DEFAULTS = {
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "max_completion_length": 256,
    "num_generations": 8,
}


def config_class():
    from trl import GRPOConfig

    return GRPOConfig


def grpo_rows(examples, recipe: Recipe) -> list[dict]:
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


def check_batch_sizes(train: dict, num_processes: int | None = None) -> str | None:
    """Say which numbers to change when GRPO's batch arithmetic does not work out.

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
        return f"train.num_generations = {g}: GRPO compares completions within a group, it needs at least 2"
    if gen_batch % g == 0:
        return None
    fix = next(b for b in range(per_device + 1, per_device + g + 1) if (b * num_processes * steps) % g == 0)
    return (
        f"each generation batch ({gen_batch} completions = per_device_train_batch_size {per_device} x {num_processes} "
        f"process(es) x steps_per_generation {steps}) must hold whole groups of train.num_generations = {g}: "
        f"set train.per_device_train_batch_size = {fix}, or train.num_generations to a divisor of {gen_batch}"
    )


def _completions_logger_class():
    from trl import GRPOTrainer

    class Trainer(GRPOTrainer):
        """GRPOTrainer that also writes a sample of each logging step's completions, with their rewards and
        verdicts, to completions.jsonl (TRL's own log_completions prints tables or writes parquet)."""

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
                    row["completion"] = completion_text(self._logs["completion"][i])
                    row["rewards"] = {k: rounded(v[i]) for k, v in self._logs["rewards"].items() if i < len(v)}
                    row["advantage"] = (
                        rounded(self._logs["advantages"][i]) if i < len(self._logs["advantages"]) else None
                    )
                    for k, v in self._logs["extra"].items():
                        if i < len(v):
                            row[k] = v[i]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return Trainer


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


def _build_with(engine_holder: dict):
    def build(ctx: StageContext):
        from datasets import Dataset

        from nl2sql_align.rewards import engine_for, reward_functions_for

        recipe = ctx.recipe
        if "reward_weights" in recipe.train:
            raise RecipeError(
                f"{recipe.source}: set reward weights in [reward] (weight = ...), not train.reward_weights"
            )
        engine = engine_for(recipe.reward, num_processes=ctx.args.world_size)
        engine_holder["engine"] = engine
        section = recipe.reward
        funcs, weights = reward_functions_for(section, engine, device=ctx.args.device)
        ctx.args.reward_weights = weights
        examples, _ = audit_and_filter(ctx.train_examples, recipe, engine)
        trainer_cls = _completions_logger_class()
        trainer = trainer_cls(
            model=ctx.model,
            reward_funcs=funcs,
            args=ctx.args,
            train_dataset=Dataset.from_list(grpo_rows(examples, recipe)),
            processing_class=ctx.tokenizer,
            peft_config=ctx.peft_config,
            quantization_config=ctx.quantization_config,
            callbacks=ctx.callbacks,
        )
        trainer.completions_path = Path(ctx.args.output_dir) / "completions.jsonl"
        trainer.completions_per_log = section.log_completions if section else 8
        return trainer

    return build


def run_with_engine(stage: str, recipe: Recipe, config_cls: type, build_with, **kwargs) -> Path:
    """run_stage for the stages that execute SQL for rewards (grpo, ppo): `build_with(holder)` returns the build
    function, which puts the RewardEngine it starts in holder["engine"]; its workers stop however the run ends."""
    holder: dict = {}
    try:
        return run_stage(stage, recipe, config_cls, build_with(holder), **kwargs)
    finally:
        if holder.get("engine") is not None:
            holder["engine"].close()


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_with_engine(
        "grpo",
        recipe,
        config_class(),
        _build_with,
        overwrite=overwrite,
        resume=resume,
        train_defaults=TRAIN_DEFAULTS,
        check_train=check_batch_sizes,
    )
