"""`nl2sql-align validate`: the checks a run makes before a model loads (stages/preflight.py), without
training; a pipeline recipe gets every step checked as its stage checks it, and the plumbing between steps."""

from __future__ import annotations

from pathlib import Path

from nl2sql_align.pipeline import describe, is_pipeline_recipe, load_pipeline, plan
from nl2sql_align.stages import get_stage, guess_stage, load_stage_recipe
from nl2sql_align.stages.preflight import check_stage


def validate_recipe(
    path: Path, stage: str | None = None, overrides: list[str] | None = None, num_processes: int = 1
) -> tuple[list[str], str]:
    """(one line per check passed, the verdict line). Raises the error the run would raise."""
    if stage is None and is_pipeline_recipe(path):
        steps = plan(load_pipeline(path, overrides))
        return describe(steps), f"{path}: valid pipeline of {len(steps)} steps"
    name = stage or guess_stage(path)
    recipe, _, _ = load_stage_recipe(name, path, overrides)
    checked = check_stage(get_stage(name), recipe, num_processes)
    return [f"stage {name}" + ("" if stage else " (from the file name; --stage to choose)"), *checked.lines], (
        f"{path}: valid"
    )
