"""scripts/bench_overhead.py compares like with like: the raw-TRL side (scripts/raw_trl.py) trains the same number
of steps on the same rows, with the same config, as `nl2sql-align` does. No wall-clock assertions."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains each stage twice (ours and raw TRL): `make test-slow`


def _bench():
    spec = importlib.util.spec_from_file_location("bench_overhead", REPO / "scripts" / "bench_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_raw_side_trains_what_the_cli_trains(stage, tiny_model_dir, tmp_path):
    bench = _bench()
    r = bench.compare(stage, tiny_model_dir, tmp_path, steps=2, reps=1, train_limit=16, say=lambda *_: None)
    cli, raw = r["runs"]["cli"][0], r["runs"]["raw"][0]
    assert cli["steps"] == raw["steps"] == 2
    assert sorted(cli["losses"]) == sorted(raw["losses"]) == [1, 2]
    # Same model, rows, config and seed: the first step's loss is the same computation on both sides.
    assert math.isclose(cli["losses"][1], raw["losses"][1], rel_tol=1e-4, abs_tol=1e-6)
    # GRPO's loss is 0 when a group's rewards tie (a random model earns none): entropy and the sampled lengths
    # show that both sides sampled the same completions from the same prompts.
    for key in ("entropy", "num_tokens", "completions/mean_length"):
        if key in cli["step1"] or key in raw["step1"]:
            assert math.isclose(cli["step1"][key], raw["step1"][key], rel_tol=1e-4), key
    for side in (cli, raw):
        assert side["seconds_per_step"] > 0 and side["peak_rss_mb"] > 0
    assert set(r["ratios"]) == {
        "seconds_per_step",
        "cpu_seconds_per_step",
        "peak_rss_mb",
        "process_seconds",
        "process_peak_rss_mb",
    }


def test_spec_holds_the_cli_rows_and_config(tiny_model_dir, tmp_path):
    """The raw side's spec: our row builders' rows for the recipe, and the CLI's own config kwargs."""
    bench = _bench()
    sets, spec_path = bench.prepare("sft", tiny_model_dir, tmp_path, steps=2, train_limit=8)
    import json

    spec = json.loads(spec_path.read_text())
    assert spec["stage"] == "sft" and len(spec["rows"]) == 8
    assert {"prompt", "completion"} <= set(spec["rows"][0])
    assert spec["config"]["max_steps"] == 2 and spec["config"]["logging_steps"] == 1
    assert spec["config"]["seed"] == 0 and spec["config"]["use_cpu"] is True
