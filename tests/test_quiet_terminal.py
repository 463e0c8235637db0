"""A quiet, honest terminal: progress in a log file is a few lines, never a wall of carriage returns; library
noise is silenced at its source; `--help` and `validate` print nothing on stderr."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from nl2sql_align.logs import setup_logging
from tests.test_cli import cli, noise


def test_library_noise_is_silenced_at_its_source():
    setup_logging()
    assert logging.getLogger("bitsandbytes.backends.cpu.ops").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("kernels._internals.hf_hub").getEffectiveLevel() == logging.ERROR
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        setup_logging()  # idempotent, and re-applies its filters inside this context
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_help_and_validate_print_nothing_on_stderr(tiny_model_dir: Path):
    assert cli("--help").stderr == ""
    p = cli("validate", "recipes/tiny-sft.toml", "--set", f"model.name_or_path={tiny_model_dir}")
    assert noise(p.stderr) == [] and p.stdout.rstrip().endswith("valid")
