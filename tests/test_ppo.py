"""PPO: the equations against hand-computed values, then the trainer on the micro model (zero KL and unit ratio
before the first update, the reward rising after SFT, a reward model from `rm` mixed in by weight, QLoRA)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nl2sql_align.errors import RecipeError, UserError
from nl2sql_align.ppo import core
from nl2sql_align.stages import ppo
from tests.conftest import capture_trainer, kill_after_checkpoint, stage_recipe


def _recipe(model_dir: Path, out: Path, *extra: str):
    return stage_recipe(
        "ppo",
        model_dir,
        out,
        "data.train_limit=16",
        'data.eval=""',
        "train.max_steps=2",
        "train.per_device_train_batch_size=8",
        "train.num_mini_batches=2",
        "train.num_ppo_epochs=1",
        "train.max_completion_length=16",
        "train.logging_steps=1",
        "train.learning_rate=1e-3",
        "reward.log_completions=4",
        *extra,
    )


def length_reward(prompts, completions, **kw):
    """A reward the random micro model earns in varying amounts (it never writes correct SQL)."""
    return [len(c[0]["content"]) / 100 for c in completions]


LENGTH = 'reward.components=[{name="tests.test_ppo.length_reward"}]'


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------
# The equations


def test_gae_matches_hand_computed_values():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 99.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the second completion has two tokens; its third is padding
    adv, ret = core.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 1: delta = (0 + .9*.6 - .5, 0 + .9*.7 - .6, 1 - .7) = (.04, .03, .3); A_t = delta_t + .72 A_{t+1}.
    #   A_2 = .3, A_1 = .03 + .72*.3 = .246, A_0 = .04 + .72*.246 = .21712
    # Row 2: delta = (0 + .9*.5 - 1, 2 + 0 - .5) = (-.55, 1.5); A_1 = 1.5, A_0 = -.55 + .72*1.5 = .53
    assert torch.allclose(adv, torch.tensor([[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.71712, 0.846, 1.0], [1.53, 2.0, 0.0]]), atol=1e-6)


def test_clipped_policy_loss_matches_hand_computed_values():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clip_frac, approx_kl = core.policy_loss(new, old, adv, torch.ones(1, 3), cliprange=0.2)
    # t0: max(-1.5, -1.2) = -1.2 (clipped); t1: max(0.5, 0.8) = 0.8 (clipped); t2: max(-2.2, -2.2) = -2.2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, abs=1e-6)
    assert clip_frac.item() == pytest.approx(2 / 3)
    assert approx_kl.item() == pytest.approx(
        0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3, abs=1e-6
    )
    # A padded token changes nothing.
    padded, _, _ = core.policy_loss(
        torch.cat([new, torch.tensor([[5.0]])], 1),
        torch.zeros(1, 4),
        torch.cat([adv, torch.tensor([[9.0]])], 1),
        torch.tensor([[1, 1, 1, 0]]),
        cliprange=0.2,
    )
    assert padded.item() == pytest.approx(loss.item(), abs=1e-6)


def test_clipped_value_loss_matches_hand_computed_values():
    loss, clip_frac = core.value_loss(
        torch.tensor([[0.5, -0.1]]),
        torch.zeros(1, 2),
        torch.tensor([[1.0, 0.3]]),
        torch.ones(1, 2),
        cliprange_value=0.2,
    )
    # t0: V_clip = 0.2: max((.5-1)^2, (.2-1)^2) = .64 (clipped); t1: inside the clip: (-.1-.3)^2 = .16
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.16) / 2, abs=1e-6)
    assert clip_frac.item() == pytest.approx(0.5)


def test_token_rewards_score_the_last_token_and_penalise_kl_on_every_token():
    rewards, kl = core.token_rewards(
        torch.tensor([1.0, 2.0]),
        torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -7.0]]),
        torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -2.0, -1.0]]),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        kl_coef=0.1,
    )
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -1.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 1.1], [0.0, 1.9, 0.0]]))


def test_adaptive_kl_coefficient_moves_towards_the_target():
    fixed = core.KLController(0.1)
    fixed.update(kl=50.0, n=64)
    assert fixed.value == 0.1
    ctl = core.KLController(0.1, target=6.0, horizon=100)
    ctl.update(kl=12.0, n=10)  # error clipped to +0.2: 0.1 * (1 + 0.2 * 10 / 100)
    assert ctl.value == pytest.approx(0.102)
    ctl.update(kl=3.0, n=10)  # error -0.5 clipped to -0.2
    assert ctl.value == pytest.approx(0.102 * 0.98)


def test_whitening_uses_only_real_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    out = core.masked_whiten(x, torch.tensor([[1, 1, 1, 0]]))
    assert torch.allclose(out, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# The trainer


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_first_update_starts_at_the_reference_and_the_rollout_policy(mode, tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "ppo"
    extra = ["lora.r=8", "lora.alpha=16"] if mode == "lora" else []
    ppo.run(_recipe(tiny_model_dir, out, LENGTH, *extra))
    first = _rows(out)[0]
    # Before any update the policy is the reference (a frozen copy, or the base with adapters off) ...
    assert first["kl"] == 0.0
    # ... and the first minibatch is scored by the weights that sampled it: the log-probs of training and of
    # the rollout agree (temperature, positions under left padding, value positions), so the ratio is 1.
    assert first["approx_kl"] < 1e-9 and first["clip_fraction"] == 0.0
    assert {"policy_loss", "value_loss", "entropy", "completions/mean_length", "rewards/length_reward/mean"} <= set(
        first
    )
    head = load_file(str(out / "value_head.safetensors"))
    assert head["weight"].abs().sum() > 0, "the value head did not train"
    if mode == "lora":
        adapters = load_file(str(out / "adapter_model.safetensors"))
        assert all(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)
    else:
        before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
        assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    assert len((out / "completions.jsonl").read_text().splitlines()) == 4  # one rollout, 4 logged
    assert (out / "plots" / "ppo.png").is_file() and (out / "plots" / "kl.png").is_file()
    # What compare reads instead of measuring again: steps, time per step, memory, tokens (prompts + completions).
    end = _rows(out)[-1]
    assert end["event"] == "train_end" and end["steps"] == 2
    assert end["seconds_per_step"] == pytest.approx(end["train_seconds"] / 2, rel=1e-2) and end["peak_rss_mb"] > 100
    # One rollout of 16 prompts (each far over 50 tokens of schema) and at most 16 tokens of completion each.
    assert end["num_tokens"] > 16 * 50
    assert end["num_tokens"] == first["num_tokens"]  # counted once per rollout, not per step


def test_ppo_after_short_sft_raises_the_execution_reward(subset_sft, tmp_path: Path):
    data, warm = subset_sft
    # Each question 8 times: a rollout of 64 completions covers the subset 8 times.
    rep = tmp_path / "rep.jsonl"
    rep.write_text("".join(line + "\n" for line in data.read_text().splitlines() for _ in range(8)))
    out = ppo.run(
        stage_recipe(
            "ppo",
            warm,
            tmp_path / "ppo",
            f"data.train={rep}",
            'data.eval=""',
            "train.max_steps=120",
            "train.per_device_train_batch_size=16",
            "train.num_mini_batches=4",
            "train.num_ppo_epochs=2",
            "train.max_completion_length=40",
            "train.learning_rate=1e-3",
            "train.logging_steps=8",
        )
    )
    rollouts = [r for r in _rows(out) if "kl" in r]
    assert len(rollouts) == 15  # 8 optimizer steps per rollout
    ex = [r["rewards/execution/mean"] for r in rollouts]
    first, last = sum(ex[:5]) / 5, sum(ex[-5:]) / 5
    # Measured here: 0.19 over the first five rollouts, 0.33 over the last five (seeded, CPU).
    assert last > first + 0.05, ex
    assert max(r["kl"] for r in rollouts) < 5.0, "the policy ran away from the reference"


def _pairs_file(data: Path, out: Path) -> Path:
    """Gold SQL chosen over another question's SQL: what a reward model can learn on the subset."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    pairs = []
    for i, row in enumerate(rows):
        for shift in (1, 3):
            pairs.append({**row, "chosen": row["sql"], "rejected": rows[(i + shift) % len(rows)]["sql"]})
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs * 4))
    return out


def test_ppo_mixes_a_reward_model_from_rm_with_execution_rewards(subset_sft, tmp_path: Path):
    from nl2sql_align.data import build_messages, load_examples
    from nl2sql_align.rewards.model import RewardModelScore
    from nl2sql_align.stages import rm

    data, warm = subset_sft
    rm_out = rm.run(
        stage_recipe(
            "rm",
            warm,
            tmp_path / "rm",
            f"data.train={_pairs_file(data, tmp_path / 'pairs.jsonl')}",
            'data.eval=""',
            "train.max_steps=6",
            "train.per_device_train_batch_size=8",
        )
    )
    recipe = stage_recipe(
        "ppo",
        warm,
        tmp_path / "ppo",
        f"data.train={data}",
        'data.eval=""',
        "train.max_steps=2",
        "train.per_device_train_batch_size=4",
        "train.num_mini_batches=2",
        "train.num_ppo_epochs=1",
        "train.max_completion_length=24",
        f"reward.model={rm_out}",
        "reward.model_weight=0.5",
        "reward.preset=arctic",
        "reward.log_completions=8",
    )
    out = ppo.run(recipe)
    assert "rewards/reward_model/mean" in _rows(out)[0]
    logged = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(logged) == 8
    # The score is the weighted sum: arctic = 0.9 x execution + 0.1 x executable, plus 0.5 x the reward model ...
    for row in logged:
        r = row["rewards"]
        assert row["score"] == pytest.approx(
            0.9 * r["execution"] + 0.1 * r["executable"] + 0.5 * r["reward_model"], abs=1e-3
        )
    # ... and the reward model's part is its score of the very conversation it was trained to judge.
    examples = {ex.question: ex for ex in load_examples(str(data))}
    scorer = RewardModelScore(rm_out)
    prompts = [build_messages(examples[row["prompt"]], recipe.data.schema, recipe.data.system_prompt) for row in logged]
    again = scorer(
        prompts=prompts, completions=[[{"role": "assistant", "content": row["completion"]}] for row in logged]
    )
    assert again == pytest.approx([row["rewards"]["reward_model"] for row in logged], abs=1e-3)


def test_ppo_with_the_reward_model_alone_and_its_errors(tiny_model_dir: Path, tmp_path: Path):
    with pytest.raises(RecipeError, match='preset = "none" needs reward.model'):
        ppo.run(_recipe(tiny_model_dir, tmp_path / "a", "reward.preset=none"))
    with pytest.raises(UserError, match="not a reward model folder"):
        ppo.run(_recipe(tiny_model_dir, tmp_path / "b", "reward.preset=none", f"reward.model={tmp_path}"))
    with pytest.raises(RecipeError, match="one rollout takes 32 prompts.*num_mini_batches 4.*has 16"):
        ppo.run(_recipe(tiny_model_dir, tmp_path / "c", "train.num_mini_batches=4"))
    assert not any(p.name in ("a", "b", "c") for p in tmp_path.iterdir())


def test_ppo_qlora_trains_adapters_and_value_head_on_a_4bit_base(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    import bitsandbytes as bnb

    seen = capture_trainer(monkeypatch, ppo)
    out = tmp_path / "ppo-qlora"
    ppo.run(
        _recipe(
            tiny_model_dir,
            out,
            LENGTH,
            "lora.r=8",
            "lora.alpha=16",
            "quantization.bits=4",
            "quantization.compute_dtype=float32",
            "train.learning_rate=1e-2",
        )
    )
    model = seen["trainer"].model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()), "the base was not 4-bit"
    assert _rows(out)[0]["kl"] == 0.0  # the reference is the 4-bit base with adapters disabled
    adapters = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert load_file(str(out / "value_head.safetensors"))["weight"].abs().sum() > 0


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_step_count_and_the_kl_coefficient(tiny_model_dir: Path, tmp_path: Path):
    import os
    import subprocess
    import sys

    from nl2sql_align.ppo.trainer import PPO_STATE_FILE
    from nl2sql_align.stages.runner import checkpoint_step, complete_checkpoints
    from tests.conftest import REPO

    max_steps = 60
    out = tmp_path / "runs" / "ppo"
    partial = out.parent / ".ppo.partial"
    sets = [
        f"model.name_or_path={tiny_model_dir}",
        f"output_dir={out}",
        "data.train_limit=16",
        'data.eval=""',
        f"train.max_steps={max_steps}",
        "train.save_strategy=steps",
        "train.save_steps=2",
        "train.logging_steps=1",
        "train.per_device_train_batch_size=8",
        "train.num_mini_batches=2",
        "train.num_ppo_epochs=1",
        "train.max_completion_length=16",
        "train.kl_target=0.01",
        "train.kl_horizon=50",
        "train.learning_rate=1e-3",
        LENGTH,
    ]
    args = ["ppo", "--recipe", "recipes/tiny-ppo.toml", *[x for s in sets for x in ("--set", s)]]
    out.parent.mkdir(parents=True)
    kill_after_checkpoint(args, partial, 6, tmp_path / "first.log")
    ckpt = complete_checkpoints(partial)[-1]
    killed_at = checkpoint_step(ckpt)
    saved = json.loads((ckpt / PPO_STATE_FILE).read_text())
    assert saved["kl_coef"] != 0.05, "the adaptive coefficient never moved: the test would not see a lost state"

    resumed = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", *args, "--resume"],
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == max_steps
    rows = _rows(out)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, max_steps + 1))
    # The first rollout after the resume used the coefficient the killed run had reached, not the recipe's.
    assert next(r for r in rows if r["step"] == killed_at + 1)["kl_coef"] == pytest.approx(saved["kl_coef"])
    assert (out / "value_head.safetensors").is_file()
