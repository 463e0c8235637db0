"""Resume after a crash: a training process killed with SIGKILL continues from its newest complete checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nl2sql_align.stages.runner import COMPLETE_MARKER, complete_checkpoints
from tests.conftest import REPO, kill_after_checkpoint

MAX_STEPS = 120


def _args(model_dir: Path, out: Path) -> list[str]:
    sets = [
        f"model.name_or_path={model_dir}",
        f"output_dir={out}",
        "data.train_limit=64",
        'data.eval=""',
        f"train.max_steps={MAX_STEPS}",
        "train.save_strategy=steps",
        "train.save_steps=5",
        "train.logging_steps=1",
        "train.per_device_train_batch_size=4",
    ]
    return ["sft", "--recipe", "recipes/tiny-sft.toml", *[x for s in sets for x in ("--set", s)]]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "nl2sql_align", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_step_count(tiny_model_dir: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    runs.mkdir()
    out = runs / "sft"
    partial = runs / ".sft.partial"
    args = _args(tiny_model_dir, out)
    killed_at = kill_after_checkpoint(args, partial, 10, tmp_path / "first.log")
    assert not out.exists(), "a killed run must not publish an output"
    assert killed_at < MAX_STEPS

    # A half-written checkpoint (no completion marker) must never be taken for a complete one.
    fake = partial / f"checkpoint-{killed_at + 1000}"
    shutil.copytree(partial / f"checkpoint-{killed_at}", fake)
    (fake / COMPLETE_MARKER).unlink()

    # Without --resume, the interrupted run is not clobbered.
    again = _run(args)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    assert complete_checkpoints(partial)[-1].name == f"checkpoint-{killed_at}"

    # A changed recipe would train a model neither recipe describes: refused, naming the key.
    changed = _run([*args, "--set", "data.train=demo:dev", "--resume"])
    assert changed.returncode == 2 and "data.train (was 'demo:train')" in changed.stderr, changed.stderr[-2000:]
    assert complete_checkpoints(partial)[-1].name == f"checkpoint-{killed_at}"

    # Logging does not change what is trained: resuming with another logging_steps goes on (the Trainer keeps the
    # interrupted run's logging plan, restored from the checkpoint's trainer state).
    resumed = _run([*args, "--set", "train.logging_steps=2", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint-{killed_at}" in resumed.stderr and "resuming from" in resumed.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    # Every step was logged exactly once across the two processes: the resumed one took over at killed_at + 1.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, MAX_STEPS + 1))
    # The output exists once: no partial folder left beside it.
    assert sorted(p.name for p in runs.iterdir()) == ["sft"]
    assert (out / "model.safetensors").is_file()


def test_resume_without_a_checkpoint_says_how_to_get_one(tiny_model_dir: Path, tmp_path: Path):
    p = _run([*_args(tiny_model_dir, tmp_path / "none"), "--resume"])
    assert p.returncode == 2 and "no complete checkpoint" in p.stderr and "save_steps" in p.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / ".none.partial").exists()
