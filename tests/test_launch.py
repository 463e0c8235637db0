"""The multi-process relaunch: accelerate's own parser reads the launch options, and each process gets the
stage command exactly as the user gave it (launch options never leak into it)."""

from __future__ import annotations

import sys
from pathlib import Path

from nl2sql_align.launch import launch_command

REPO = Path(__file__).resolve().parents[1]


def test_launch_command_passes_the_stage_argv_through_unchanged():
    argv = ["grpo", "--recipe", "r.toml", "--set", "train.learning_rate=1e-6", "--num_processes", "--overwrite"]
    cmd = launch_command(2, None, argv)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[-len(argv) :] == argv and cmd[-len(argv) - 2 : -len(argv)] == ["-m", "nl2sql_align"]
    assert cmd[cmd.index("--num_processes") + 1] == "2"


def test_launch_command_with_a_config_file():
    config = REPO / "recipes" / "accelerate" / "ddp.yaml"
    cmd = launch_command(1, config, ["sft", "--recipe", "r.toml"])
    assert cmd[cmd.index("--config_file") + 1] == str(config) and "--multi_gpu" not in cmd
