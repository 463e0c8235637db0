"""GRPO on the micro model: rewards reach TRL, outputs are complete, broken reward functions cost only their
rewards, batch arithmetic and reward settings are checked before a model loads, hackable gold is reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nl2sql_align.data import load_examples
from nl2sql_align.errors import DataError, RecipeError
from nl2sql_align.recipe import load_recipe
from nl2sql_align.rewards import RewardEngine
from nl2sql_align.stages import grpo, rl
from tests.conftest import capture_trainer, stage_recipe


def _recipe(model_dir: Path, out: Path, *extra: str):
    return stage_recipe(
        "grpo",
        model_dir,
        out,
        "data.train_limit=8",
        'data.eval=""',
        "train.max_steps=3",
        "train.num_generations=4",
        "train.per_device_train_batch_size=8",
        "train.max_completion_length=24",
        "train.logging_steps=1",
        "train.learning_rate=1e-3",
        "reward.log_completions=3",
        *extra,
    )


# User reward functions that misbehave on one completion (see test_broken_reward_functions_do_not_stop_training).
def raises_on_second(prompts, completions, **kw):
    if len(completions) > 1:
        raise RuntimeError("batch rejected")
    return [len(completions[0][0]["content"]) / 100]  # varies, so a random model still gets advantages


def hangs_once(prompts, completions, **kw):
    if not getattr(hangs_once, "done", False):
        hangs_once.done = True
        time.sleep(60)
    return [0.25] * len(completions)


def test_grpo_trains_logs_rewards_and_survives_broken_reward_functions(tiny_model_dir: Path, tmp_path: Path):
    hangs_once.done = False
    out = tmp_path / "grpo"
    r = _recipe(
        tiny_model_dir,
        out,
        "reward.function_timeout=2",
        # The default preset's three checks plus two user functions that raise or hang.
        'reward.components=[{name="execution"}, {name="format", hit=0.1}, '
        '{name="tests.test_grpo.raises_on_second", weight=0.5}, {name="tests.test_grpo.hangs_once", weight=0.5}]',
    )
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    result = grpo.run(r)
    assert result == out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in rows if "loss" in x]
    assert len(steps) == 3
    for key in (
        "rewards/execution/mean",
        "rewards/format/mean",
        "rewards/raises_on_second/mean",
        "reward_engine/seconds",
    ):
        assert key in steps[0], key
    # The raising function was retried one completion at a time: every completion got a value (no None).
    assert all(x["rewards/raises_on_second/mean"] > 0 for x in steps)
    assert all(x["rewards/hangs_once/mean"] == pytest.approx(0.25) for x in steps[1:])
    # Completions sample: one line per sampled completion, with rewards and the engine's verdict.
    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 3
    assert {"step", "prompt", "completion", "rewards", "sql", "verdict"} <= set(samples[0])
    assert set(samples[0]["rewards"]) == {"execution", "format", "raises_on_second", "hangs_once"}
    for name in (
        "plots/rewards.png",
        "plots/reward_execution.png",
        "plots/loss.png",
        "recipe.resolved.toml",
        "README.md",
    ):
        assert (out / name).is_file(), name
    after = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
    resolved = (out / "recipe.resolved.toml").read_text()
    assert "tests.test_grpo.hangs_once" in resolved


def test_grpo_lora_trains_adapters(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "grpo-lora"
    grpo.run(_recipe(tiny_model_dir, out, "train.max_steps=2", "lora.r=4", "lora.alpha=8", "reward.preset=arctic"))
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/executable/mean" in rows[0]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["train.num_generations=3", "train.per_device_train_batch_size=8"],
            r"set train.per_device_train_batch_size = 9",
        ),
        (["train.num_generations=1"], r"at least 2"),
        (["train.reward_weights=[1.0]"], r"set reward weights in \[reward\]"),
    ],
)
def test_bad_grpo_settings_are_named_before_training(tiny_model_dir, tmp_path, overrides, expected):
    r = _recipe(tiny_model_dir, tmp_path / "x", *overrides)
    with pytest.raises(RecipeError, match=expected):
        grpo.run(r)
    assert not (tmp_path / "x").exists()


def test_check_batch_sizes_counts_processes():
    assert grpo.check_batch_sizes({"num_generations": 8, "per_device_train_batch_size": 4}, num_processes=2) is None
    msg = grpo.check_batch_sizes({"num_generations": 8, "per_device_train_batch_size": 4}, num_processes=1)
    assert "per_device_train_batch_size 4 x 1 process(es)" in msg and "= 8" in msg


def test_guards_report_empty_and_trivial_gold_and_drop_on_request(tmp_path: Path):
    demo = load_examples("demo:train", limit=1)[0]
    rows = [
        {"question": "Customers in Atlantis?", "sql": "SELECT name FROM customers WHERE city = 'Atlantis'"},
        {"question": "How many customers are there?", "sql": "SELECT COUNT(*) FROM customers"},
        {"question": "Is there a customer older than 200?", "sql": "SELECT COUNT(*) FROM customers WHERE age > 200"},
        {"question": "Names of customers in Dublin?", "sql": "SELECT name FROM customers WHERE city = 'Dublin'"},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(dict(r, db=demo.db.path)) + "\n" for r in rows))
    examples = load_examples(str(data))
    r = load_recipe(None, [f"data.train={data}"])
    with RewardEngine(timeout=2.0, workers=1) as engine:
        kept, audit = rl.audit_and_filter(examples, r, engine)
        assert [ex.question for ex in audit.empty] == ["Customers in Atlantis?"]
        # COUNT(*) ... WHERE age > 200 is 0: `SELECT 0` matches it without looking at the database.
        trivial = {ex.question for ex, _ in audit.trivial}
        assert "Is there a customer older than 200?" in trivial
        assert "Names of customers in Dublin?" not in trivial
        assert len(kept) == 4  # reported, not dropped
        r2 = load_recipe(None, [f"data.train={data}", "reward.drop_empty_gold=true", "reward.drop_trivial_gold=true"])
        kept2, _ = rl.audit_and_filter(examples, r2, engine)
        assert "Customers in Atlantis?" not in {ex.question for ex in kept2}
        assert "Is there a customer older than 200?" not in {ex.question for ex in kept2}
        assert "Names of customers in Dublin?" in {ex.question for ex in kept2}


def test_failing_gold_stops_grpo_with_the_line(tmp_path: Path):
    demo = load_examples("demo:train", limit=1)[0]
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"question": "q1", "sql": "SELECT name FROM customers", "db": demo.db.path})
        + "\n"
        + json.dumps({"question": "q2", "sql": "SELECT nme FROM customers", "db": demo.db.path})
        + "\n"
    )
    r = load_recipe(None, [f"data.train={data}"])
    with RewardEngine(timeout=2.0, workers=1) as engine, pytest.raises(DataError, match=r"bad.jsonl:2.*nme"):
        rl.audit_and_filter(load_examples(str(data)), r, engine)


def test_grpo_after_short_sft_raises_the_execution_reward(subset_sft, tmp_path: Path):
    data, warm = subset_sft
    common = [f"data.train={data}", f"data.eval={data}", "eval.after_training=false"]
    out = grpo.run(
        stage_recipe(
            "grpo",
            warm,
            tmp_path / "grpo",
            *common,
            "train.max_steps=20",
            "train.num_generations=16",
            "train.per_device_train_batch_size=128",  # every step samples the whole subset, 16 times
            "train.max_completion_length=40",
            "train.learning_rate=1e-3",
            "train.logging_steps=1",
        )
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ex = [x["rewards/execution/mean"] for x in rows if "loss" in x]
    assert len(ex) == 20
    first, last = sum(ex[:5]) / 5, sum(ex[-5:]) / 5
    # Measured here: 0.19 over the first five steps, 0.29 over the last five (seeded, CPU).
    assert last > first + 0.05, ex


def test_grpo_qlora_trains_adapters_on_a_4bit_base(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    import bitsandbytes as bnb

    seen = capture_trainer(monkeypatch, grpo)
    out = tmp_path / "grpo-qlora"
    grpo.run(
        _recipe(
            tiny_model_dir,
            out,
            "train.max_steps=2",
            "lora.r=8",
            "lora.alpha=16",
            "quantization.bits=4",
            "quantization.compute_dtype=float32",
            "train.learning_rate=1e-2",
            'reward.components=[{name="tests.test_grpo.raises_on_second"}]',
        )
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in seen["trainer"].model.modules()), "the base was not 4-bit"
    adapters = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
