"""Generation backends: the vLLM path sends the prompts, settings and adapters the HF path uses, and gets the
same greedy answers; the backend choice and its errors.

vLLM itself needs a CUDA GPU and is not installed here: `tests/fake_vllm` is a transformers-backed stand-in with
vLLM's offline API (see its docstring), so these tests check our side of the boundary (token ids, sampling
parameters, LoRA requests, the order of the answers), not vLLM's kernels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nl2sql_align.errors import UserError
from tests.conftest import REPO
from tests.test_cli import cli

FAKE = Path(__file__).parent / "fake_vllm"


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE))
    import vllm

    vllm.EVENTS.clear()
    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def _recipe(*overrides: str):
    from nl2sql_align.recipe import load_recipe

    return load_recipe(REPO / "recipes" / "tiny-sft.toml", ["eval.max_new_tokens=24", *overrides])


def _examples(n: int = 8, spec: str = "demo:dev"):
    from nl2sql_align.data import load_examples

    return load_examples(spec, limit=n)


def _answers(model_dir: Path, recipe, examples) -> tuple[list[str], list[list[str]] | None]:
    from nl2sql_align.evaluate import model_predictions
    from nl2sql_align.generation import load_generator

    gen = load_generator(str(model_dir), recipe)
    try:
        outputs, _, candidates = model_predictions(gen, examples, recipe)
    finally:
        gen.close()
    return outputs, candidates


def test_vllm_gets_the_hf_prompts_and_gives_the_hf_greedy_answers(subset_sft, fake_vllm):
    from transformers import AutoTokenizer

    from nl2sql_align.data import build_messages

    data, model_dir = subset_sft  # a trained model: its answers differ between questions, so order matters
    examples = _examples(8, str(data))
    hf, _ = _answers(model_dir, _recipe("eval.backend='hf'"), examples)
    r = _recipe("eval.backend='vllm'", "eval.vllm_gpu_memory_utilization=0.5")
    got, _ = _answers(model_dir, r, examples)
    assert got == hf and len(set(got)) >= 3

    kinds = [k for k, _ in fake_vllm.EVENTS]
    assert kinds == ["LLM", "generate", "cleanup"]
    engine, call = fake_vllm.EVENTS[0][1], fake_vllm.EVENTS[1][1]
    assert engine["model"] == str(model_dir) and engine["enable_lora"] is False
    assert engine["gpu_memory_utilization"] == 0.5 and engine["seed"] == r.seed
    # Token ids, not text (vLLM would tokenize text again); the chat template's own tokenization, no extra BOS.
    tok = AutoTokenizer.from_pretrained(model_dir)
    want = [
        tok.apply_chat_template(
            build_messages(ex, r.data.schema, r.data.system_prompt),
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
        )["input_ids"]
        for ex in examples
    ]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == want
    p = call["params"]
    assert (p.n, p.temperature, p.max_tokens, p.stop_token_ids) == (1, 0.0, 24, [tok.eos_token_id])
    assert call["lora_request"] is None


def test_vllm_samples_for_self_consistency(tiny_model_dir: Path, fake_vllm):
    r = _recipe("eval.backend='vllm'", "eval.samples=3", "eval.temperature=1.0", "eval.max_new_tokens=12")
    _, candidates = _answers(tiny_model_dir, r, _examples(4))
    assert [len(c) for c in candidates] == [3, 3, 3, 3]
    greedy, sampled = (e[1]["params"] for e in fake_vllm.EVENTS if e[0] == "generate")
    assert (greedy.n, greedy.temperature) == (1, 0.0)
    assert (sampled.n, sampled.temperature, sampled.seed) == (3, 1.0, r.seed)


def test_vllm_serves_a_lora_folder_as_base_plus_adapter(tiny_model_dir: Path, tmp_path: Path, fake_vllm):
    """An adapter folder: vLLM loads the base named in adapter_config.json and applies the adapter per request,
    with max_lora_rank raised to the adapter's rank (vLLM's default, 16, refuses r=32)."""
    from nl2sql_align.stages import sft
    from tests.test_sft import _recipe as sft_recipe

    adapter = sft.run(
        sft_recipe(
            tiny_model_dir,
            tmp_path / "lora",
            "lora.r=32",
            "lora.alpha=64",
            "train.learning_rate=1e-2",
            "train.num_train_epochs=2",
        )
    )
    examples = _examples()
    hf, _ = _answers(adapter, _recipe("eval.backend='hf'"), examples)
    base, _ = _answers(tiny_model_dir, _recipe("eval.backend='hf'"), examples)
    assert hf != base, "the adapter changed nothing: the comparison below would not see a lost adapter"
    fake_vllm.EVENTS.clear()
    got, _ = _answers(adapter, _recipe("eval.backend='vllm'"), examples)
    assert got == hf
    engine, call = fake_vllm.EVENTS[0][1], fake_vllm.EVENTS[1][1]
    base_name = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert engine["model"] == base_name and engine["tokenizer"] == str(adapter)
    assert engine["enable_lora"] is True and engine["max_lora_rank"] == 32
    assert Path(call["lora_request"].lora_path) == adapter.resolve()


def test_backend_choice_and_errors(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from nl2sql_align.generation import resolve_backend, vllm_installed

    if vllm_installed():
        pytest.skip("a real vLLM is installed here")
    assert resolve_backend("auto") == "hf" and resolve_backend("hf") == "hf"
    with pytest.raises(UserError, match=r"nl2sql-align\[vllm\]"):
        resolve_backend("vllm")
    # The stand-in imports, but this machine has no CUDA device: auto still takes HF.
    monkeypatch.syspath_prepend(str(FAKE))
    assert resolve_backend("auto") == "hf" and resolve_backend("vllm") == "vllm"
    monkeypatch.undo()

    out = tmp_path / "report"
    p = cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        "demo:dev",
        "--limit",
        "2",
        "--report",
        str(out),
        "--backend",
        "vllm",
        check=False,
    )
    assert p.returncode == 2 and "vLLM is not installed" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()
    p = cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        "demo:dev",
        "--limit",
        "2",
        "--report",
        str(out),
        "--backend",
        "tpu",
        check=False,
    )
    assert p.returncode == 2 and "eval.backend" in p.stderr and "Traceback" not in p.stderr


def test_eval_cli_records_the_backend(subset_sft, tmp_path: Path, monkeypatch):
    """`eval --backend vllm` end to end (stand-in on PYTHONPATH): same per-example answers as --backend hf, and
    summary.json says which backend generated them."""
    reports = {}
    for backend in ("hf", "vllm"):
        if backend == "vllm":
            monkeypatch.setenv("PYTHONPATH", str(FAKE))
        reports[backend] = tmp_path / backend
        cli(
            "eval",
            "--model",
            str(subset_sft[1]),
            "--data",
            str(subset_sft[0]),
            "--limit",
            "6",
            "--report",
            str(reports[backend]),
            "--backend",
            backend,
            "--recipe",
            str(REPO / "recipes" / "tiny-sft.toml"),
            "--set",
            "eval.max_new_tokens=24",
        )
    rows = {
        b: [json.loads(x)["output"] for x in (d / "per_example.jsonl").read_text().splitlines()]
        for b, d in reports.items()
    }
    assert rows["hf"] == rows["vllm"] and len(set(rows["hf"])) >= 2
    for b, d in reports.items():
        assert json.loads((d / "summary.json").read_text())["backend"] == b
