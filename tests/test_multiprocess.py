"""Two training processes on CPU (gloo), launched by `--num-processes 2`: both ranks train on different data,
end with identical weights, the effective batch doubles, and outputs and logs are written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # several processes per test: `make test-slow`


def _launch(stage: str, model_dir: Path, out: Path, trace: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [stage, "--recipe", f"recipes/tiny-{stage}.toml", "--num-processes", "2"]
    for s in (f"model.name_or_path={model_dir}", f"output_dir={out}", 'data.eval=""', "train.logging_steps=1", *sets):
        args += ["--set", s]
    env = dict(os.environ, HF_HUB_OFFLINE="1", NL2SQL_ALIGN_TRACE_DIR=str(trace), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def _ranks(trace: Path) -> tuple[dict, dict]:
    r0, r1 = (json.loads((trace / f"rank{k}.json").read_text()) for k in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    return r0, r1


def _loss_steps(out: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_sft_on_two_processes(tiny_model_dir: Path, tmp_path: Path):
    out, trace = tmp_path / "runs" / "sft", tmp_path / "trace"
    _launch(
        "sft",
        tiny_model_dir,
        out,
        trace,
        "data.train_limit=32",
        "train.num_train_epochs=1",
        "train.per_device_train_batch_size=4",
        "train.max_steps=-1",
    )
    r0, r1 = _ranks(trace)
    # 32 examples, 4 per device, 2 devices: 4 optimizer steps (one process would take 8).
    assert r0["global_step"] == r1["global_step"] == 4
    assert len(r0["batches"]) == len(r1["batches"]) == 4
    assert not set(r0["batches"]) & set(r1["batches"]), "both ranks trained on the same batches"
    assert r0["params"] == r1["params"], "the ranks ended with different weights"
    assert _loss_steps(out) == [1, 2, 3, 4]  # logged once, by the main process
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft"]


def test_grpo_on_two_processes(tiny_model_dir: Path, tmp_path: Path):
    out, trace = tmp_path / "runs" / "grpo", tmp_path / "trace"
    _launch(
        "grpo",
        tiny_model_dir,
        out,
        trace,
        "data.train_limit=8",
        "train.max_steps=2",
        "train.num_generations=4",
        "train.per_device_train_batch_size=4",
        "train.max_completion_length=16",
        "reward.log_completions=3",
    )
    r0, r1 = _ranks(trace)
    assert r0["global_step"] == r1["global_step"] == 2
    # Each rank scored its own half of every generation batch (2 ranks x 4 completions = 2 prompts x 4).
    assert r0["batches"] and not set(r0["batches"]) & set(r1["batches"])
    assert r0["params"] == r1["params"]
    assert _loss_steps(out) == [1, 2]
    assert len((out / "completions.jsonl").read_text().splitlines()) == 2 * 3  # one writer
    assert sorted(p.name for p in out.parent.iterdir()) == ["grpo"]


def test_ppo_on_two_processes(tiny_model_dir: Path, tmp_path: Path):
    out, trace = tmp_path / "runs" / "ppo", tmp_path / "trace"
    _launch(
        "ppo",
        tiny_model_dir,
        out,
        trace,
        "data.train_limit=16",
        "train.max_steps=4",
        "train.num_ppo_epochs=2",
        "train.per_device_train_batch_size=4",
        "train.num_mini_batches=1",
        "train.max_completion_length=16",
        "reward.log_completions=3",
        'reward.components=[{name="tests.test_ppo.length_reward"}]',
    )
    r0, r1 = _ranks(trace)
    assert r0["global_step"] == r1["global_step"] == 4
    # A rollout takes 4 prompts per rank (8 in all) and feeds 2 optimizer steps; each rank sampled its own half.
    assert len(r0["batches"]) == 4 and len(set(r0["batches"])) == 2
    assert not set(r0["batches"]) & set(r1["batches"]), "both ranks rolled out the same prompts"
    assert r0["params"] == r1["params"], "the ranks ended with different weights (policy or value head)"
    assert _loss_steps(out) == [1, 2, 3, 4]
    assert len((out / "completions.jsonl").read_text().splitlines()) == 2 * 3  # two rollouts, one writer
    assert (out / "value_head.safetensors").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["ppo"]


def test_pipeline_step_on_two_processes(tiny_model_dir: Path, tmp_path: Path):
    """A pipeline step with num_processes = 2 trains through `accelerate launch`, then is stamped and compared."""
    out, trace = tmp_path / "sft", tmp_path / "trace"
    sets = [
        f"model.name_or_path={json.dumps(str(tiny_model_dir))}",
        f"output_dir={json.dumps(str(out))}",
        "data.train_limit=32",
        "train.num_train_epochs=1",
        "train.per_device_train_batch_size=4",
        "train.max_steps=-1",
        "eval.after_training=false",
    ]
    pipe = tmp_path / "pipe.toml"
    pipe.write_text(
        f'[compare]\ndata = "demo:dev"\nlimit = 2\nreport = {json.dumps(str(tmp_path / "report"))}\n\n'
        f'[[steps]]\nname = "sft"\ncommand = "sft"\nrecipe = {json.dumps(str(REPO / "recipes" / "tiny-sft.toml"))}\n'
        f"num_processes = 2\nset = {json.dumps(sets)}\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", NL2SQL_ALIGN_TRACE_DIR=str(trace), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", "compare", "--recipe", str(pipe), "--set", "sft.eval.max_new_tokens=8"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    r0, r1 = _ranks(trace)
    assert r0["global_step"] == r1["global_step"] == 4  # 32 examples / (4 per device x 2 devices)
    assert r0["params"] == r1["params"]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["runs"][0]["steps"] == 4 and summary["pipeline"]["steps"][0]["status"] == "ran"
    assert json.loads((out / ".pipeline-step.json").read_text())["step"] == "sft"
