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


def is_main_process() -> bool:
    """True unless this is a launched process other than rank 0 (only rank 0 prints the result line)."""
    return int(os.environ.get("RANK", "0")) == 0


def launch_env() -> dict[str, str]:
    return dict(os.environ, NL2SQL_ALIGN_LAUNCHED="1")  # the launched processes must not relaunch themselves


def relaunch(
    num_processes: int,
    accelerate_config: Path | None,
    command: list[str],
    overrides: list[str] | None,
    overwrite: bool,
    resume: bool,
) -> None:
    """Run a stage command under `accelerate launch` on N processes, then exit with its status. The command each
    process runs is rebuilt from the parsed values (never by filtering sys.argv), so the launch options cannot
    leak into it. Returns at once in a launched process, or when one process and no config were asked for."""
    import subprocess

    from nl2sql_align.errors import UserError

    if os.environ.get("NL2SQL_ALIGN_LAUNCHED") or (num_processes <= 1 and accelerate_config is None):
        return
    if accelerate_config is not None and not accelerate_config.is_file():
        raise UserError(f"--accelerate-config {accelerate_config}: no such file (see recipes/accelerate/)")
    argv = [*command, *(a for o in overrides or [] for a in ("--set", o))]
    argv += ["--overwrite"] * overwrite + ["--resume"] * resume
    raise SystemExit(subprocess.call(launch_command(num_processes, accelerate_config, argv), env=launch_env()))
