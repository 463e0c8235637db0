"""SFT: TRL's SFTTrainer on conversational prompt/completion pairs, so the loss covers the answer only."""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.recipe import Recipe
from nl2sql_align.stages.runner import StageContext, run_stage

# Small-model-friendly defaults; every one can be overridden in [train].
TRAIN_DEFAULTS = {
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "max_length": 2048,
}


def sft_rows(examples, recipe: Recipe) -> list[dict]:
    from nl2sql_align.data import build_messages, format_answer

    return [
        {
            "prompt": build_messages(ex, recipe.data.schema, recipe.data.system_prompt),
            "completion": [{"role": "assistant", "content": format_answer(ex.sql)}],
        }
        for ex in examples
    ]


def config_class():
    from trl import SFTConfig

    return SFTConfig


def _build(ctx: StageContext):
    from datasets import Dataset
    from trl import SFTTrainer

    train = Dataset.from_list(sft_rows(ctx.train_examples, ctx.recipe))
    return SFTTrainer(
        model=ctx.model,
        args=ctx.args,
        train_dataset=train,
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config,
        quantization_config=ctx.quantization_config,
        callbacks=ctx.callbacks,
    )


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_stage(
        "sft", recipe, config_class(), _build, overwrite=overwrite, resume=resume, train_defaults=TRAIN_DEFAULTS
    )
