"""SFT: TRL's SFTTrainer on conversational prompt/completion pairs, so the loss covers the answer only. With an
`[agent]` table each question is a tool-calling trajectory instead (nl2sql_align/agent_data.py): the agent's
warm start, in the format its GRPO and `eval --agent` use."""

from __future__ import annotations

import json
from pathlib import Path

from nl2sql_align.data import build_messages, format_answer
from nl2sql_align.errors import RecipeError
from nl2sql_align.recipe import Recipe
from nl2sql_align.stages import Stage
from nl2sql_align.stages.preflight import check_gold
from nl2sql_align.stages.runner import StageContext, load_stage_examples, run_stage

# Small-model-friendly defaults; every one can be overridden in [train].
TRAIN_DEFAULTS = {
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "max_length": 2048,
}


def sft_rows(examples, recipe: Recipe) -> list[dict]:
    if recipe.agent is not None:
        from nl2sql_align.agent_data import agent_sft_rows

        return agent_sft_rows(examples, recipe)
    return [
        {
            "prompt": build_messages(ex, recipe.data.schema, recipe.data.system_prompt),
            "completion": [{"role": "assistant", "content": format_answer(ex.sql)}],
        }
        for ex in examples
    ]


def config_class(recipe: Recipe | None = None):
    from trl import SFTConfig

    return SFTConfig


def train_defaults(recipe: Recipe | None = None) -> dict:
    return TRAIN_DEFAULTS


def _preflight(recipe: Recipe, data):
    if recipe.agent is not None and (problem := recipe.agent.problem()):
        raise RecipeError(f"{recipe.source}: [agent] {problem}")
    # SFT would teach SQL that fails: every gold query must run, as eval runs it.
    check_gold(data[0], recipe, f"data.train = {recipe.data.train}", "SFT would teach SQL that fails")
    return [f"gold SQL of all {len(data[0])} training examples runs"], data


def token_lengths(recipe: Recipe, examples, tokenizer) -> list[int]:
    """Prompt + answer tokens of each example, as the chat template renders them for training."""
    if recipe.agent is not None:
        from nl2sql_align.agent import agent_chat_template

        agent_chat_template(tokenizer)  # the template that renders tool calls, as training will use
    lengths = []
    for row in sft_rows(examples, recipe):
        tools = json.loads(row["tools"]) if "tools" in row else None
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tools=tools, tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return lengths


def _build(ctx: StageContext):
    from datasets import Dataset
    from trl import SFTTrainer

    if ctx.recipe.agent is not None:
        from nl2sql_align.agent import agent_chat_template

        agent_chat_template(ctx.tokenizer)  # saved with the model: GRPO and eval --agent render the same turns
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


STAGE = Stage(
    name="sft",
    config_class=config_class,
    train_defaults=train_defaults,
    load_data=load_stage_examples,
    preflight=_preflight,
    lengths=token_lengths,
)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_stage(STAGE, recipe, _build, overwrite=overwrite, resume=resume)
