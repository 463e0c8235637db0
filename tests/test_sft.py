"""SFT in its three modes on the micro model: parameters change, loss goes down, outputs are complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nl2sql_align.recipe import load_recipe
from nl2sql_align.stages import sft
from tests.conftest import stage_recipe


def _recipe(model_dir: Path, out: Path, *extra: str):
    return stage_recipe(
        "sft",
        model_dir,
        out,
        "data.train_limit=16",
        'data.eval=""',  # no eval after training
        "train.num_train_epochs=6",
        "train.per_device_train_batch_size=8",
        "train.learning_rate=3e-3",
        "train.logging_steps=1",
        "train.warmup_steps=0",
        "train.lr_scheduler_type=constant",
        *extra,
    )


def _losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _assert_learned(out: Path) -> None:
    losses = _losses(out)
    assert len(losses) >= 6
    # A step that changed nothing would leave the loss flat (within a few percent of noise).
    assert sum(losses[-2:]) / 2 < 0.9 * sum(losses[:2]) / 2, losses


def _assert_outputs(out: Path) -> None:
    for name in ("recipe.resolved.toml", "metrics.jsonl", "README.md", "plots/loss.png", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    chat_template = tok_cfg.get("chat_template") or (out / "chat_template.jinja").read_text()
    assert "<|im_start|>" in chat_template
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "the temporary work dir must be gone"


def test_sft_full_finetune_changes_parameters_and_lowers_loss(tiny_model_dir: Path, tmp_path: Path):
    before = load_file(tiny_model_dir / "model.safetensors")
    out = sft.run(_recipe(tiny_model_dir, tmp_path / "full"))
    after = load_file(out / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), "every weight of a full fine-tune should move"
    _assert_learned(out)
    _assert_outputs(out)
    # The resolved recipe reproduces the run.
    resolved = load_recipe(out / "recipe.resolved.toml", train_config_cls=sft.config_class())
    assert resolved.train["learning_rate"] == 3e-3 and resolved.data.train_limit == 16


def test_sft_lora_trains_adapters_only(tiny_model_dir: Path, tmp_path: Path):
    out = sft.run(_recipe(tiny_model_dir, tmp_path / "lora", "lora.r=8", "lora.alpha=16", "train.learning_rate=1e-2"))
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    adapters = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    # PEFT initialises lora_B to zeros: nonzero values mean the adapters were trained.
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert not (out / "model.safetensors").exists()
    _assert_learned(out)
    _assert_outputs(out)


def test_sft_qlora_4bit_trains_adapters(tiny_model_dir: Path, tmp_path: Path):
    out = sft.run(
        _recipe(
            tiny_model_dir,
            tmp_path / "qlora",
            "lora.r=8",
            "quantization.bits=4",
            "quantization.compute_dtype=float32",
            "train.learning_rate=1e-2",
        )
    )
    adapters = load_file(out / "adapter_model.safetensors")
    assert all(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)
    _assert_learned(out)


def test_quantization_without_lora_is_a_recipe_error(tiny_model_dir: Path, tmp_path: Path):
    from nl2sql_align.errors import RecipeError

    with pytest.raises(RecipeError, match=r"\[quantization\] needs a \[lora\] table"):
        sft.run(_recipe(tiny_model_dir, tmp_path / "q", "quantization.bits=4"))
    assert not (tmp_path / "q").exists()


def test_existing_output_is_kept_without_overwrite(tiny_model_dir: Path, tmp_path: Path):
    from nl2sql_align.errors import UserError

    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="--overwrite"):
        sft.run(_recipe(tiny_model_dir, out))
    assert (out / "precious.txt").read_text() == "keep me"
