"""Preference optimisation on execution-labelled pairs: DPO and its variants, chosen by [preference] method.

- `dpo`   TRL DPOTrainer. [train] loss_type is any of TRL's (sigmoid, ipo, hinge, robust, bco_pair,
          apo_zero, ...; a list mixes them with loss_weights), beta the KL strength. With [lora] TRL uses the
          base with adapters disabled as the reference: one model in memory, not two.
- `kto`   TRL KTOTrainer on labelled completions (unpaired.jsonl from `pairs`; a pairs file is split into
          its chosen = desirable and rejected = undesirable halves).
- `simpo` TRL's experimental CPOTrainer with loss_type = "simpo", cpo_alpha = 0 (SimPO: reference-free,
          length-normalised; set simpo_gamma, beta in [train]).
- `orpo`  TRL's experimental ORPOTrainer (odds-ratio penalty on top of SFT, reference-free).

simpo and orpo live in `trl.experimental` in TRL 1.16: their API may change without notice, and they take no
quantization_config argument (4-bit loading goes through model_init_kwargs here). Held-out pairs
(data.eval_pairs or data.holdout) get their log-probability margin measured before and after training.
"""

from __future__ import annotations

import os
from pathlib import Path

from nl2sql_align.errors import DataError
from nl2sql_align.recipe import Recipe
from nl2sql_align.stages import Stage
from nl2sql_align.stages.preference import load_preference_data, policy_margins
from nl2sql_align.stages.runner import StageContext, run_stage

METHODS = ("dpo", "kto", "simpo", "orpo")
EXPERIMENTAL = ("simpo", "orpo")

TRAIN_DEFAULTS = {
    "logging_steps": 10,
    "save_strategy": "no",
    "report_to": "none",
    "max_length": 1024,
}
# What makes CPOTrainer SimPO (the paper's recipe: no SFT term, length-normalised reward).
_METHOD_DEFAULTS = {"simpo": {"loss_type": "simpo", "cpo_alpha": 0.0}}


def _method(recipe_or_method: Recipe | str | None) -> str:
    if recipe_or_method is None or isinstance(recipe_or_method, str):
        return recipe_or_method or "dpo"
    return recipe_or_method.preference.method


def train_defaults(recipe: Recipe | str | None = None) -> dict:
    return {**TRAIN_DEFAULTS, **_METHOD_DEFAULTS.get(_method(recipe), {})}


# method -> (module, config class, trainer class)
_CLASSES = {
    "dpo": ("trl", "DPOConfig", "DPOTrainer"),
    "kto": ("trl", "KTOConfig", "KTOTrainer"),
    "simpo": ("trl.experimental.cpo", "CPOConfig", "CPOTrainer"),
    "orpo": ("trl.experimental.orpo", "ORPOConfig", "ORPOTrainer"),
}


def _trl_class(method: str, which: int):
    import importlib

    if method not in _CLASSES:
        raise DataError(f"unknown preference method {method!r}; choose one of {', '.join(METHODS)}")
    if method in EXPERIMENTAL:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # documented in --help and the README instead
    module, *names = _CLASSES[method]
    return getattr(importlib.import_module(module), names[which])


def config_class(recipe: Recipe | str | None = None):
    """The TRL config class of the recipe's preference method (or of a method named directly)."""
    return _trl_class(_method(recipe), 0)


def _trainer_class(method: str):
    return _trl_class(method, 1)


def training_rows(records, method: str) -> list[dict]:
    if method == "kto":
        return [u.trl_row() for r in records for u in r.unpaired()]
    if not records[0].paired:
        raise DataError(
            f"{records[0].source.rsplit(':', 1)[0]}: method {method!r} needs pairs (chosen/rejected); labelled "
            'completions train with preference.method = "kto"'
        )
    return [r.trl_row() for r in records]


def _load(recipe: Recipe):
    """The preference data, refused here (before a model loads) when the method cannot train on it."""
    data = load_preference_data(recipe)
    method = recipe.preference.method
    rows = training_rows(data[0], method)
    if method == "kto" and not ({True, False} <= {r["label"] for r in rows}):
        raise DataError(f"{recipe.data.train}: KTO needs both desirable and undesirable completions")
    return data


def _build(ctx: StageContext):
    from datasets import Dataset

    method = ctx.recipe.preference.method
    rows = training_rows(ctx.train_examples, method)
    kwargs = dict(
        model=ctx.model,
        args=ctx.args,
        train_dataset=Dataset.from_list(rows),
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config,
        callbacks=ctx.callbacks,
    )
    if method in EXPERIMENTAL:
        if ctx.quantization_config is not None:
            ctx.args.model_init_kwargs = {
                **(ctx.args.model_init_kwargs or {}),
                "quantization_config": ctx.quantization_config,
            }
    else:
        kwargs["quantization_config"] = ctx.quantization_config
    return _trainer_class(method)(**kwargs)


def heldout_margins(trainer, ctx: StageContext) -> dict[str, float]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return policy_margins(model, ctx.tokenizer, ctx.eval_pairs)


STAGE = Stage(
    name="dpo",
    config_class=config_class,
    train_defaults=train_defaults,
    load_data=_load,
    heldout=heldout_margins,
    unit="preference records",
)


def run(recipe: Recipe, overwrite: bool = False, resume: bool = False) -> Path:
    return run_stage(STAGE, recipe, _build, overwrite=overwrite, resume=resume)
