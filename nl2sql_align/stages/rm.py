"""Reward model: TRL's RewardTrainer on preference pairs (Bradley-Terry loss on a sequence-classification head).

The pairs come from `nl2sql-align pairs` (or the user's own file, TRL layout); prompts are rebuilt exactly
as sft/grpo/eval build them. With [lora], the adapters train together with the new score head
(modules_to_save = ["score"]: a LoRA-only head would stay random). Pairwise accuracy on held-out pairs
(data.eval_pairs or data.holdout) is measured before and after training, with TRL's own evaluation.
The saved folder is what `ppo` loads as its reward model.
"""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.errors import DataError
from nl2sql_align.recipe import Recipe
from nl2sql_align.stages import Stage
from nl2sql_align.stages.preference import load_preference_data
from nl2sql_align.stages.runner import StageContext, build_peft_config, run_stage

TRAIN_DEFAULTS = {
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "max_length": 1024,
}


def config_class(recipe: Recipe | None = None):
    from trl import RewardConfig

    return RewardConfig


def train_defaults(recipe: Recipe | None = None) -> dict:
    return TRAIN_DEFAULTS


def _load(recipe: Recipe):
    train, _, held = load_preference_data(recipe, generates=False)
    if not train[0].paired:
        raise DataError(
            f"{recipe.data.train}: a reward model trains on pairs (chosen/rejected), not labelled completions"
        )
    return train, [], held


def _build(ctx: StageContext):
    import torch
    from datasets import Dataset
    from trl import RewardTrainer

    if ctx.recipe.lora is not None:
        ctx.peft_config = build_peft_config(ctx.recipe, task_type="SEQ_CLS", modules_to_save=["score"])
    held = [r for r in ctx.eval_pairs if r.paired]
    trainer = RewardTrainer(
        model=ctx.model,
        args=ctx.args,
        train_dataset=Dataset.from_list([r.trl_row() for r in ctx.train_examples]),
        eval_dataset=Dataset.from_list([r.trl_row() for r in held]) if held else None,
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config,
        quantization_config=ctx.quantization_config,
        callbacks=ctx.callbacks,
    )
    q = ctx.quantization_config
    if q is not None and q.bnb_4bit_compute_dtype is not None and q.bnb_4bit_compute_dtype != torch.bfloat16:
        # TRL casts the trainable parameters of a quantized model to bf16 (the QLoRA paper's choice); with another
        # compute dtype the new score head would then meet hidden states of that dtype and fail. Keep them in it.
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.to(q.bnb_4bit_compute_dtype)
    return trainer


def heldout_accuracy(trainer, ctx: StageContext) -> dict[str, float]:
    if trainer.eval_dataset is None:
        return {}
    metrics = trainer.evaluate()
    return {
        k.removeprefix("eval_"): float(v)
        for k, v in metrics.items()
        if k in ("eval_accuracy", "eval_margin", "eval_loss")
    }


STAGE = Stage(
    name="rm",
    config_class=config_class,
    train_defaults=train_defaults,
    load_data=_load,
    heldout=heldout_accuracy,
    unit="preference pairs",
)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_stage(STAGE, recipe, _build, overwrite=overwrite, resume=resume)
