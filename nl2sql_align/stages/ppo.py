"""PPO: our own actor-critic trainer (nl2sql_align/ppo), rewarded by execution and/or a reward model from `rm`.

Same dataset columns as grpo (`prompt`, `gold_sql`, `db_path`, `db_engine`, `gold_dialect`), same [reward]
table (execution components by preset or list, plus `model` / `model_weight` for a learned reward), same
gold-SQL audit before any model loads. [train] is PPOConfig: transformers' TrainingArguments plus the PPO
settings (num_ppo_epochs, num_mini_batches, kl_coef / kl_target, cliprange, vf_coef, gamma, lam, ...).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from nl2sql_align.errors import RecipeError
from nl2sql_align.recipe import Recipe
from nl2sql_align.stages import Stage
from nl2sql_align.stages.preflight import train_args
from nl2sql_align.stages.rl import reward_preflight, rl_rows, run_with_engine
from nl2sql_align.stages.runner import StageContext, load_stage_examples

TRAIN_DEFAULTS = {
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "remove_unused_columns": False,
    # Every parameter takes part in every forward (policy and value head); DDP need not search for unused ones.
    "ddp_find_unused_parameters": False,
    "max_completion_length": 256,
}


def config_class(recipe: Recipe | None = None):
    from nl2sql_align.ppo.config import PPOConfig

    return PPOConfig


def train_defaults(recipe: Recipe | None = None) -> dict:
    return TRAIN_DEFAULTS


def _preflight(recipe: Recipe, data):
    lines, data = reward_preflight(recipe, data)
    args = train_args(STAGE, recipe, Path(recipe.output_dir), validating=True)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    per_rollout = args.local_rollout_batch_size * world
    if len(data[0]) < per_rollout:
        raise RecipeError(
            f"{recipe.source}: one rollout takes {per_rollout} prompts (per_device_train_batch_size "
            f"{args.per_device_train_batch_size} x gradient_accumulation_steps {args.gradient_accumulation_steps} x "
            f"num_mini_batches {args.num_mini_batches} x {world} process(es)) but data.train has "
            f"{len(data[0])}: lower one of those or use more data"
        )
    return lines, data


def _build_with(holder: dict):
    def build(ctx: StageContext):
        import torch
        from datasets import Dataset

        from nl2sql_align.ppo.model import ValueHeadModel, load_policy
        from nl2sql_align.ppo.trainer import PPOTrainer
        from nl2sql_align.rewards import engine_for, reward_functions_for, uses_execution

        recipe, args = ctx.recipe, ctx.args
        section = recipe.reward
        engine = None
        examples = ctx.train_examples  # audited by the preflight (rl.reward_preflight)
        if uses_execution(section):
            engine = holder["engine"] = engine_for(section, num_processes=args.world_size)
        funcs, weights = reward_functions_for(section, engine, device=args.device)  # a bad reward.model fails here
        distributed = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
        policy = load_policy(ctx.model, args.model_init_kwargs, ctx.quantization_config, ctx.peft_config, distributed)
        ref = None
        if ctx.peft_config is None and (args.kl_coef != 0 or args.kl_target is not None):
            # Full fine-tuning: the reference is a frozen copy of the starting weights (LoRA needs none).
            ref = copy.deepcopy(policy).requires_grad_(False).eval()
        torch.manual_seed(args.seed)
        trainer = PPOTrainer(
            model=ValueHeadModel(policy),
            args=args,
            train_dataset=Dataset.from_list(rl_rows(examples, recipe)),
            processing_class=ctx.tokenizer,
            reward_funcs=funcs,
            reward_weights=weights,
            ref_model=ref,
            callbacks=ctx.callbacks,
            completions_path=Path(args.output_dir) / "completions.jsonl",
            log_completions=section.log_completions if section else 8,
        )
        return trainer

    return build


STAGE = Stage(
    name="ppo",
    config_class=config_class,
    train_defaults=train_defaults,
    load_data=load_stage_examples,
    preflight=_preflight,
)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_with_engine(STAGE, recipe, _build_with, overwrite=overwrite, resume=resume)
