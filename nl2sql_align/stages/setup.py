"""What every stage builds the same way from a recipe: the TRL config, model kwargs, LoRA / 4-bit settings,
the tokenizer, and the examples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nl2sql_align.errors import RecipeError
from nl2sql_align.recipe import Recipe


def build_model_kwargs(recipe: Recipe) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": recipe.model.dtype, "trust_remote_code": recipe.model.trust_remote_code}
    if recipe.model.attn_implementation:
        kwargs["attn_implementation"] = recipe.model.attn_implementation
    return kwargs


def build_quantization_config(recipe: Recipe):
    q = recipe.quantization
    if q is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if q.bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
            bnb_4bit_quant_storage=getattr(torch, q.compute_dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def build_peft_config(recipe: Recipe, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    if recipe.lora is None:
        if recipe.quantization is not None:
            raise RecipeError(
                f"{recipe.source}: [quantization] needs a [lora] table: a 4/8-bit base model cannot be fully "
                "fine-tuned (QLoRA trains LoRA adapters on top of it)"
            )
        return None
    from peft import LoraConfig

    lo = recipe.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def read_chat_template(value: str) -> str:
    """model.chat_template: a path ending in .jinja/.j2 is read (relative to the working directory, as every
    recipe path); anything else is the template itself. A template path that does not exist is an error, not a
    template whose text is the path."""
    p = Path(value)
    if p.suffix not in (".jinja", ".j2"):
        return value
    if not p.is_file():
        raise RecipeError(
            f"model.chat_template: {value} does not exist (a .jinja/.j2 path is read as the template file)"
        )
    return p.read_text(encoding="utf-8")


def load_training_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    from nl2sql_align.gguf import resolve_model_path

    tok = AutoTokenizer.from_pretrained(
        resolve_model_path(recipe.model.name_or_path), trust_remote_code=recipe.model.trust_remote_code
    )
    template = recipe.model.chat_template
    if template:
        tok.chat_template = read_chat_template(template)
    if tok.chat_template is None:
        raise RecipeError(
            f"{recipe.model.name_or_path} has no chat template; set model.chat_template to a Jinja template "
            "(inline or a .jinja path)"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def make_train_args(
    config_cls: type,
    recipe: Recipe,
    work_dir: Path,
    defaults: dict[str, Any],
    validating: bool = False,
    check: Callable[[dict[str, Any]], str | None] | None = None,
):
    """Built-in defaults < recipe [train]; device-aware where TRL's defaults assume a GPU.

    With `validating`, GPU-only precision flags are dropped on a machine without a GPU, so that a GPU recipe
    can be checked on a laptop. `check` (a stage's own rule over the merged values) returns a message that
    says which keys to change, or None."""
    import torch

    values = dict(defaults)
    values.update(recipe.train)
    if check is not None:
        problem = check(values)
        if problem:
            raise RecipeError(f"{recipe.source}: {problem}")
    values["output_dir"] = str(work_dir)
    values["seed"] = recipe.seed
    if not torch.cuda.is_available():
        # TRL configs default to bf16=True; on a CPU that means slow emulated autocast, so keep fp32 there
        # unless the recipe asks for it explicitly.
        if "bf16" not in recipe.train or validating:
            values["bf16"] = False
        if validating:
            values.pop("fp16", None)
            values.pop("tf32", None)
        # Without this, Accelerate treats N CPU processes as N separate single-process runs; with it, they
        # form one gloo process group (multi-process training on CPU, as the tests do).
        values.setdefault("use_cpu", True)
    values.setdefault("model_init_kwargs", build_model_kwargs(recipe))
    if recipe.budget.tokens is not None:  # [budget] tokens reads the Trainer's count of tokens seen
        values.setdefault("include_num_input_tokens_seen", "non_padding")
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{recipe.source}: [train] rejected by {config_cls.__name__}: {e}") from None


def load_stage_examples(recipe: Recipe) -> tuple[list, list, list]:
    from nl2sql_align.data import examples_for

    d = recipe.data
    train = examples_for(d, d.train, limit=d.train_limit)
    evals = examples_for(d, d.eval, limit=d.eval_limit) if d.eval else []
    return train, evals, []
