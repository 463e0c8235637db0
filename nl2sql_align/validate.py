"""`nl2sql-align validate`: the checks a run makes before a model loads (stages/preflight.py), without
training; a pipeline recipe gets every step checked as its stage checks it, and the plumbing between steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nl2sql_align.errors import UserError
from nl2sql_align.pipeline import describe, is_pipeline_recipe, load_pipeline, plan_seeds
from nl2sql_align.stages import get_stage, guess_stage, load_stage_recipe
from nl2sql_align.stages.preflight import check_stage
from nl2sql_align.stdio import display_name


def validate_recipe(
    path: Path, stage: str | None = None, overrides: list[str] | None = None, num_processes: int = 1
) -> tuple[list[str], str]:
    """(one line per check passed, the verdict line). Raises the error the run would raise."""
    if stage is None and is_pipeline_recipe(path):
        seeded = plan_seeds(load_pipeline(path, overrides))  # every seed's copy, as compare --seeds runs them
        lines = describe(seeded[0]) + [
            f"seed +{k}: {x}" for k, steps in enumerate(seeded[1:], 1) for x in describe(steps)
        ]
        seeds = f" x {len(seeded)} seeds" if len(seeded) > 1 else ""
        return lines, f"{display_name(path)}: valid pipeline of {len(seeded[0])} steps{seeds}"
    name = stage or guess_stage(path)
    recipe, _, _ = load_stage_recipe(name, path, overrides)
    checked = check_stage(get_stage(name), recipe, num_processes)
    return [f"stage {name}" + ("" if stage else " (from the file name; --stage to choose)"), *checked.lines], (
        f"{display_name(path)}: valid"
    )


def validate_json(
    path: Path, stage: str | None = None, overrides: list[str] | None = None, num_processes: int = 1
) -> tuple[dict[str, Any], UserError | None]:
    """`validate --json`: {"recipe", "valid", "checks"} or {"recipe", "valid": false, "error"}, and the error to
    raise after printing it (the exit code stays 2 for an invalid recipe)."""
    doc: dict[str, Any] = {"recipe": display_name(path), "stage": stage}
    try:
        checks, _ = validate_recipe(path, stage, overrides, num_processes)
    except UserError as e:
        return {**doc, "valid": False, "error": str(e)}, e
    if stage is None and not is_pipeline_recipe(path):
        doc["stage"] = guess_stage(path)
    return {**doc, "valid": True, "checks": checks}, None
