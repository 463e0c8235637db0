"""Running a stage command on several processes through `accelerate launch` (--num-processes, pipeline steps)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def launch_command(num_processes: int, accelerate_config: Path | None, argv: list[str]) -> list[str]:
    """`accelerate launch` running `nl2sql-align ARGV` on N processes (or as the Accelerate config says)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config is not None:
        cmd += ["--config_file", str(accelerate_config)]
    else:  # torchrun-style processes; on a machine without GPUs the stage sets use_cpu and they join over gloo
        cmd += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, "-m", "nl2sql_align", *argv]


def launch_env() -> dict[str, str]:
    return dict(os.environ, NL2SQL_ALIGN_LAUNCHED="1")  # the launched processes must not relaunch themselves
