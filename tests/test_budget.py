"""[budget]: a run stops at the end of the first step that reaches its seconds or tokens; a pipeline step with
`match` takes its budget from the step it matches (the compute-matched baseline)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from nl2sql_align.errors import RecipeError
from nl2sql_align.pipeline import load_pipeline, match_budget, plan
from nl2sql_align.stages import sft
from nl2sql_align.stages.budget import BudgetStop
from tests.conftest import stage_recipe
from tests.test_pipeline import RECIPES, _write


def _step(cb, step: int, tokens: float | None = None) -> bool:
    control = SimpleNamespace(should_training_stop=False)
    cb.on_step_end(None, SimpleNamespace(global_step=step, num_input_tokens_seen=tokens), control)
    return control.should_training_stop


def test_seconds_budget_stops_at_the_first_step_past_it():
    now = [100.0]
    budget = BudgetStop(seconds=30, tokens=None, clock=lambda: now[0])
    cb = budget.make()
    cb.on_train_begin(None, None, None)
    stops = []
    for step, t in enumerate((110.0, 129.9, 130.0), start=1):
        now[0] = t
        stops.append(_step(cb, step))
    assert stops == [False, False, True]
    assert budget.stopped_at == {"budget": "seconds", "limit": 30, "used": 30.0, "step": 3}


def test_tokens_budget_on_a_real_run_stops_within_one_step(tiny_model_dir: Path, tmp_path: Path):
    recipe = stage_recipe(
        "sft", tiny_model_dir, tmp_path / "b", "data.train_limit=64", 'data.eval=""', "train.max_steps=50",
        "train.per_device_train_batch_size=4", "train.logging_steps=1", "budget.tokens=1500",
    )  # fmt: skip
    out = sft.run(recipe)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seen = [r["num_input_tokens_seen"] for r in rows if "loss" in r]  # one row per step (logging_steps=1)
    end = rows[-1]
    assert end["event"] == "train_end" and end["budget"]["budget"] == "tokens"
    assert seen[-1] >= 1500 > seen[-2]  # stopped at the first step that reached it, not before, not later
    assert end["steps"] == len(seen) < 50


def _matched(tmp: Path, model: Path, start: str) -> Path:
    base = [f"model.name_or_path={json.dumps(str(model))}", "data.train_limit=16", "train.max_steps=2"]
    return _write(
        tmp,
        [
            {"name": "sft", "command": "sft", "recipe": str(RECIPES / "tiny-sft.toml"),
             "set": [*base, f"output_dir={json.dumps(str(tmp / 'sft'))}"]},
            {"name": "grpo", "command": "grpo", "recipe": str(RECIPES / "tiny-grpo.toml"),
             "set": [f"model.name_or_path={json.dumps(str(tmp / 'sft'))}", f"output_dir={json.dumps(str(tmp / 'g'))}"]},
            {"name": "sft-more", "command": "sft", "recipe": str(RECIPES / "tiny-sft.toml"), "match": "grpo",
             "set": [*base[1:], f"model.name_or_path={json.dumps(start)}", f"output_dir={json.dumps(str(tmp / 'm'))}"]},
        ],
    )  # fmt: skip


def test_match_reads_the_budget_from_the_matched_run(tiny_model_dir: Path, tmp_path: Path):
    steps = plan(load_pipeline(_matched(tmp_path, tiny_model_dir, str(tmp_path / "sft"))))
    more = steps[2]
    assert "grpo" in more.upstream  # retrained when the run it matches changes
    (tmp_path / "g").mkdir()
    end = {"event": "train_end", "train_seconds": 37.5, "num_tokens": 12345.0}
    (tmp_path / "g" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n" + json.dumps(end))
    assert match_budget(more, steps) == ["budget.seconds=37.5"]
    more.section.match_by = "tokens"
    assert match_budget(more, steps) == ["budget.tokens=12345"]


def test_match_must_start_where_the_matched_step_starts(tiny_model_dir: Path, tmp_path: Path):
    with pytest.raises(RecipeError, match="starts where the step it matches starts"):
        plan(load_pipeline(_matched(tmp_path, tiny_model_dir, str(tiny_model_dir))))


def test_a_budget_must_be_positive():
    from nl2sql_align.errors import RecipeError
    from nl2sql_align.recipe import load_recipe

    assert load_recipe(None, ["budget.tokens=100"]).budget.tokens == 100
    with pytest.raises(
        RecipeError, match=r"--set budget.seconds=0: budget.seconds = 0: input should be greater than 0"
    ):
        load_recipe(None, ["budget.seconds=0"])
