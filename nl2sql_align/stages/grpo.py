"""GRPO: TRL's GRPOTrainer with rewards computed by executing the generated SQL (nl2sql_align/rewards).

Dataset columns: `prompt` (the same chat prompt SFT and eval use), plus `gold_sql`, `db_path`, `db_engine`
and `gold_dialect`, which TRL hands to every reward function as keywords. The [reward] table picks the
components and weights (GRPOConfig.reward_weights is filled from it); everything GRPO-specific
(num_generations, loss_type, beta, epsilon, temperature, ...) is plain GRPOConfig in [train].

Before training, every gold query is executed once: failing gold SQL is an error (the example could never
be rewarded), empty or trivially matched gold results are reported and optionally dropped (rewards/guards.py).
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path

from nl2sql_align.recipe import Recipe
from nl2sql_align.rewards.engine import completion_text
from nl2sql_align.stages import Stage
from nl2sql_align.stages.rl import question_of, reward_preflight, rl_rows, rounded, run_with_engine
from nl2sql_align.stages.runner import StageContext, load_stage_examples

TRAIN_DEFAULTS = {
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "max_completion_length": 256,
    "num_generations": 8,
}


def config_class(recipe: Recipe | None = None):
    from trl import GRPOConfig

    return GRPOConfig


def train_defaults(recipe: Recipe | None = None) -> dict:
    return TRAIN_DEFAULTS


def check_train(values: dict, recipe: Recipe | None = None, num_processes: int | None = None) -> str | None:
    if recipe is not None and "reward_weights" in recipe.train:
        return "set reward weights in [reward] (weight = ...), not train.reward_weights"
    return check_batch_sizes(values, num_processes)


def for_processes(recipe: Recipe, num_processes: int) -> Recipe:
    """GRPOConfig derives its generation batch from the processes of the run that builds it (one, when
    validating): state the batch N processes will form, so that TRL checks the real plan."""
    if {"generation_batch_size", "steps_per_generation"} & set(recipe.train):
        return recipe
    merged = {**TRAIN_DEFAULTS, **recipe.train}
    planned = copy.deepcopy(recipe)
    planned.train["generation_batch_size"] = (
        merged.get("per_device_train_batch_size", 8) * num_processes * merged.get("gradient_accumulation_steps", 1)
    )
    return planned


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


def _build_with(engine_holder: dict):
    def build(ctx: StageContext):
        from datasets import Dataset

        from nl2sql_align.rewards import engine_for, reward_functions_for

        recipe = ctx.recipe
        engine = engine_for(recipe.reward, num_processes=ctx.args.world_size)
        engine_holder["engine"] = engine
        section = recipe.reward
        funcs, weights = reward_functions_for(section, engine, device=ctx.args.device)
        ctx.args.reward_weights = weights
        examples = ctx.train_examples  # audited by the preflight (rl.reward_preflight)
        trainer_cls = _completions_logger_class()
        trainer = trainer_cls(
            model=ctx.model,
            reward_funcs=funcs,
            args=ctx.args,
            train_dataset=Dataset.from_list(rl_rows(examples, recipe)),
            processing_class=ctx.tokenizer,
            peft_config=ctx.peft_config,
            quantization_config=ctx.quantization_config,
            callbacks=ctx.callbacks,
        )
        trainer.completions_path = Path(ctx.args.output_dir) / "completions.jsonl"
        trainer.completions_per_log = section.log_completions if section else 8
        return trainer

    return build


STAGE = Stage(
    name="grpo",
    config_class=config_class,
    train_defaults=train_defaults,
    load_data=load_stage_examples,
    check_train=check_train,
    preflight=reward_preflight,
    for_processes=for_processes,
)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_with_engine(STAGE, recipe, _build_with, overwrite=overwrite, resume=resume)
