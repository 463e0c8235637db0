"""RLOO on the micro model: warm-started as GRPO's learning test, the execution reward rises; the advantages TRL
trains on are the leave-one-out ones, recomputed here from the logged rewards; bad batch arithmetic is refused by
`validate` with the run's own message, before anything is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_align.errors import RecipeError
from nl2sql_align.rewards import specs_for
from nl2sql_align.stages import rl, rloo
from nl2sql_align.validate import validate_recipe
from tests.conftest import REPO, stage_recipe

G = 16  # completions per prompt in the learning run


@pytest.fixture(scope="module")
def rloo_run(subset_sft, tmp_path_factory) -> Path:
    """20 RLOO steps from the short SFT of conftest's SUBSET, every completion logged."""
    data, warm = subset_sft
    return rloo.run(
        stage_recipe(
            "rloo",
            warm,
            tmp_path_factory.mktemp("rloo") / "rloo",
            f"data.train={data}",
            f"data.eval={data}",
            "eval.after_training=false",
            "train.max_steps=20",
            f"train.num_generations={G}",
            "train.per_device_train_batch_size=128",  # every step samples the whole subset, 16 times
            "train.max_completion_length=40",
            "train.learning_rate=1e-3",
            "train.logging_steps=1",
            "reward.log_completions=128",  # the whole generation batch, in TRL's order: groups of G consecutive
        )
    )


def test_rloo_after_short_sft_raises_the_execution_reward(rloo_run: Path):
    rows = [json.loads(line) for line in (rloo_run / "metrics.jsonl").read_text().splitlines()]
    ex = [x["rewards/execution/mean"] for x in rows if "loss" in x]
    assert len(ex) == 20
    first, last = sum(ex[:5]) / 5, sum(ex[-5:]) / 5
    assert last > first + 0.05, ex
    # The same outputs as grpo: reward plots, completions log, and a train_end row naming the stage.
    end = rows[-1]
    assert end["event"] == "train_end" and end["stage"] == "rloo" and end["steps"] == 20
    assert end["seconds_per_step"] > 0 and end.get("num_tokens")
    for name in ("plots/rewards.png", "plots/reward_execution.png", "plots/loss.png", "model.safetensors"):
        assert (rloo_run / name).is_file(), name


def test_rloo_advantages_are_leave_one_out(rloo_run: Path):
    """advantage_i = r_i - mean(r_j, j != i) within each prompt's group, r the weighted sum of the components
    (beta = 0 in tiny-rloo.toml: no KL term in the reward). A group-mean/std advantage (GRPO's) fails this."""
    from nl2sql_align.recipe import load_recipe

    weights = {s.name: s.weight for s in specs_for(load_recipe(rloo_run / "recipe.resolved.toml").reward)}
    samples = [json.loads(line) for line in (rloo_run / "completions.jsonl").read_text().splitlines()]
    by_step: dict[int, list[dict]] = {}
    for s in samples:
        by_step.setdefault(s["step"], []).append(s)
    assert len(by_step) == 20 and all(len(v) == 128 for v in by_step.values())
    checked = nonzero = 0
    for step_rows in by_step.values():
        for k in range(0, 128, G):
            group = step_rows[k : k + G]
            assert len({r["prompt"] for r in group}) == 1, "a group mixes prompts"
            rewards = [sum(weights[n] * (v or 0.0) for n, v in r["rewards"].items()) for r in group]
            for i, r in enumerate(group):
                expected = rewards[i] - (sum(rewards) - rewards[i]) / (G - 1)
                assert r["advantage"] == pytest.approx(expected, abs=2e-3), (r, rewards)
                checked += 1
                nonzero += abs(expected) > 1e-3
    assert checked == 20 * 128 and nonzero > 100  # groups with differing rewards, so the check has teeth


@pytest.mark.parametrize(
    "bad, says",
    [
        (
            ["train.num_generations=3", "train.per_device_train_batch_size=8"],
            "set train.per_device_train_batch_size = 9",
        ),
        (["train.num_generations=1"], "RLOO's baseline for a completion is the mean reward of the other completions"),
        (["train.reward_weights=[1.0]"], r"set reward weights in [reward]"),
    ],
)
def test_validate_refuses_bad_rloo_settings_with_the_runs_message(tiny_model_dir, tmp_path, bad, says):
    out = tmp_path / "rloo"
    where = [f"model.name_or_path={tiny_model_dir}", f"output_dir={out}", "data.train_limit=8", 'data.eval=""']
    with pytest.raises(RecipeError) as validated:
        validate_recipe(REPO / "recipes" / "tiny-rloo.toml", "rloo", [*where, *bad])
    with pytest.raises(RecipeError) as ran:
        rloo.run(stage_recipe("rloo", tiny_model_dir, out, "data.train_limit=8", 'data.eval=""', *bad))
    assert str(validated.value) == str(ran.value)
    assert says in str(ran.value)
    assert not out.exists() and not any(tmp_path.iterdir())


def test_rloo_batch_rule_agrees_with_trl_and_counts_processes(tmp_path):
    from trl import RLOOConfig

    for per_device, g in ((8, 3), (6, 4), (8, 4), (4, 2)):
        ours = rl.check_batch_sizes({"num_generations": g, "per_device_train_batch_size": per_device}, 1, "RLOO")
        try:
            RLOOConfig(
                output_dir=str(tmp_path), per_device_train_batch_size=per_device, num_generations=g, use_cpu=True
            )
            trl_ok = True
        except ValueError:
            trl_ok = False
        assert (ours is None) == trl_ok, (per_device, g, ours)
    # validate --num-processes 2: 3 per device x 2 processes = 6 completions cannot hold groups of 4.
    msg = rl.check_batch_sizes({"num_generations": 4, "per_device_train_batch_size": 3}, 2, "RLOO")
    assert "per_device_train_batch_size 3 x 2 process(es)" in msg and "= 4" in msg
