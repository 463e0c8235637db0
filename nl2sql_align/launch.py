"""Running a stage command on several processes through `accelerate launch` (--num-processes, pipeline steps)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def launch_command(num_processes: int, accelerate_config: Path | None, argv: list[str]) -> list[str]:
    """`accelerate launch` running `nl2sql-align ARGV` on N processes (or as the Accelerate config says). The
    launch options go through accelerate's own argument parser here, which must hand each process the stage's
    argv exactly as given (launch options never leak into it, nor it into them)."""
    from nl2sql_align.errors import UserError

    opts = ["--config_file", str(accelerate_config)] if accelerate_config is not None else []
    if accelerate_config is None:  # torchrun-style processes; without GPUs the stage sets use_cpu, gloo joins them
        opts += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        opts += ["--num_processes", str(num_processes)]
    tail = [*opts, "-m", "nl2sql_align", *argv]
    from accelerate.commands.launch import launch_command_parser

    parsed = launch_command_parser().parse_args(tail)
    if not parsed.module or parsed.training_script != "nl2sql_align" or parsed.training_script_args != argv:
        raise UserError(f"accelerate launch would not pass the command through unchanged: {' '.join(argv)}")
    return [sys.executable, "-m", "accelerate.commands.launch", *tail]


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
