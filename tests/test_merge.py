"""merge: LoRA and QLoRA adapters merged into an unquantized base give the adapter model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nl2sql_align.errors import UserError
from nl2sql_align.merge import merge_adapter
from tests.test_sft import _recipe


def _logits(model, tok, text: str) -> torch.Tensor:
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.float()


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_merged_model_matches_the_adapter_model(tiny_model_dir: Path, tmp_path: Path, mode: str):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nl2sql_align.stages import sft

    extra = ["lora.r=8", "lora.alpha=16", "train.learning_rate=1e-2", "train.num_train_epochs=2"]
    if mode == "qlora":
        extra += ["quantization.bits=4", "quantization.compute_dtype=float32"]
    adapter = sft.run(_recipe(tiny_model_dir, tmp_path / mode, *extra))
    merged_dir = merge_adapter(adapter, tmp_path / f"{mode}-merged")

    assert not (merged_dir / "adapter_config.json").exists()
    # The prompt the model was trained with travels with it (eval --model reads it), and nothing is replaced
    # without overwrite: not a finished merge, and never the adapter's own folder.
    assert (merged_dir / "recipe.resolved.toml").read_text() == (adapter / "recipe.resolved.toml").read_text()
    with pytest.raises(UserError, match="--overwrite"):
        merge_adapter(adapter, merged_dir)
    with pytest.raises(UserError, match="the adapter folder itself"):
        merge_adapter(adapter, adapter, overwrite=True)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)  # plain transformers, no peft
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "How many customers?"}], tokenize=False, add_generation_prompt=True
    )

    # Reference: the unquantized base with the adapters applied (what the merge must reproduce).
    unmerged = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ref, got, plain = (_logits(m, tok, prompt) for m in (unmerged, merged, base))
    assert torch.allclose(ref, got, atol=1e-4), (ref - got).abs().max()
    assert not torch.allclose(plain, got, atol=1e-3), "the merge changed nothing: adapters lost"


def test_merge_names_what_is_wrong(tmp_path: Path, tiny_model_dir: Path):
    with pytest.raises(UserError, match="no adapter_config.json"):
        merge_adapter(tiny_model_dir, tmp_path / "out")
    bad = tmp_path / "adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match="is not a folder or a hub id|cannot load its base model"):
        merge_adapter(bad, tmp_path / "out")


def test_a_checkpoint_adapter_takes_its_runs_dtype(tmp_path: Path):
    """A LoRA checkpoint saved mid-run (`RUN/checkpoint-N`) holds no recipe; merge reads the run's for the dtype."""
    from nl2sql_align.merge import _base_and_dtype

    ck = tmp_path / "run" / "checkpoint-3"
    ck.mkdir(parents=True)
    (ck / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base-folder"}))
    assert _base_and_dtype(ck) == ("base-folder", "auto")  # no recipe anywhere: the default
    (tmp_path / "run" / "recipe.resolved.toml").write_text('[model]\ndtype = "bfloat16"\n')
    assert _base_and_dtype(ck) == ("base-folder", "bfloat16")
