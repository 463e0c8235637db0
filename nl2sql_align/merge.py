"""Merge a LoRA/QLoRA adapter into its base model, so the result loads with plain transformers (and vLLM).

The base is always reloaded unquantized (dtype from the adapter's training recipe when present, else the
checkpoint's own): merging LoRA deltas into 4-bit weights would re-quantize them and lose the fine-tuning.
The tokenizer, with its chat template, is taken from the adapter folder, where the stage saved it.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

from nl2sql_align.errors import UserError
from nl2sql_align.gguf import resolve_model_path
from nl2sql_align.paths import refuse_existing
from nl2sql_align.recipe import RESOLVED_NAME, resolved_recipe_of


def _base_and_dtype(adapter: Path) -> tuple[str, str]:
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise UserError(
            f"{adapter}: no adapter_config.json; --adapter must be a LoRA output folder (a full model needs no merge)"
        )
    base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{cfg_path}: base_model_name_or_path is not set; cannot tell which model to merge into")
    dtype = "auto"
    resolved = resolved_recipe_of(adapter)
    if resolved is not None:
        dtype = tomllib.loads(resolved.read_text()).get("model", {}).get("dtype", "auto")
    return base, dtype


def merge_adapter(adapter: str | Path, output: str | Path, dtype: str | None = None, overwrite: bool = False) -> Path:
    """The merged model, its tokenizer and the adapter's recipe.resolved.toml (so that `eval --model OUTPUT` builds
    the prompt the model was trained with) in `output`, which must be new or empty unless `overwrite`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, output = Path(adapter), Path(output)
    if output.resolve() == adapter.resolve():
        raise UserError(f"--output {output} is the adapter folder itself: merge into a new folder")
    refuse_existing(output, overwrite, "--output")
    base, recipe_dtype = _base_and_dtype(adapter)
    base = resolve_model_path(base)  # a .gguf base: its imported folder
    if not Path(base).exists() and "/" not in base:
        raise UserError(
            f"{adapter}: base model {base!r} (from adapter_config.json) is not a folder or a hub id; point "
            "base_model_name_or_path in adapter_config.json at the base model's folder"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype or recipe_dtype)
    except OSError as e:
        raise UserError(
            f"{adapter}: cannot load its base model {base!r}: {str(e).splitlines()[0]}. Point base_model_name_or_path "
            "in adapter_config.json at the base model's folder (offline, a hub id must already be in the cache)"
        ) from None
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    output.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(output))
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(output))
    if (resolved := resolved_recipe_of(adapter)) is not None:  # a mid-run checkpoint: its run's recipe
        shutil.copy2(resolved, output / RESOLVED_NAME)
    return output
