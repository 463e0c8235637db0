"""Atomic outputs and resumable runs: a run works in `.<output>.partial/`, marks each checkpoint complete once
written, and becomes the output folder only when it finishes (better than a half-written folder under the final
name: a killed run is either resumable or absent, never a model that looks finished)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import tomllib
from pathlib import Path

from nl2sql_align.errors import RecipeError, UserError
from nl2sql_align.recipe import write_resolved


def _final_dir(output_dir: str) -> Path:
    if not output_dir:
        raise RecipeError('output_dir is not set: add output_dir = "out/..." to the recipe or --set output_dir=...')
    return Path(output_dir)


def _refuse_existing(final: Path, overwrite: bool) -> None:
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise UserError(
            f"{final} already exists and is not empty; pass --overwrite to replace it once the new run completes"
        )


def prepare_output_dir(output_dir: str, overwrite: bool) -> tuple[Path, Path]:
    """Return (final dir, temp work dir beside it). Outputs appear under the final name only when complete."""
    final = _final_dir(output_dir)
    _refuse_existing(final, overwrite)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        raise UserError(
            f"cannot create the output folder {final}: {e.strerror or e}; choose a writable folder"
        ) from None
    return final, work


# A checkpoint counts as complete only once this marker exists: the Trainer writes checkpoint-N/ file by file, so
# a kill mid-save leaves a folder that looks like a checkpoint but is not one.
COMPLETE_MARKER = ".complete"


def partial_dir(final: Path) -> Path:
    """Where a training run works until it completes: stable, so that a killed run can be resumed."""
    return final.parent / f".{final.name}.partial"


def checkpoint_step(ckpt: Path) -> int:
    """The global step of a Trainer checkpoint folder (checkpoint-N); -1 for anything else."""
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def complete_checkpoints(work: Path) -> list[Path]:
    found = [p for p in work.glob("checkpoint-*") if checkpoint_step(p) >= 0 and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=checkpoint_step)


def prepare_training_dir(output_dir: str, overwrite: bool, resume: bool) -> tuple[Path, Path, Path | None]:
    """(final dir, work dir, checkpoint to resume from). The work dir is `.<name>.partial` beside the final one;
    it becomes the final dir when training completes."""
    final = _final_dir(output_dir)
    work = partial_dir(final)
    ckpts = complete_checkpoints(work) if work.is_dir() else []
    if resume:
        if not ckpts:
            raise UserError(
                f"--resume: no complete checkpoint in {work}. Checkpoints are written when [train] sets "
                'save_strategy = "steps" and save_steps = N; without one, start the run again without --resume'
            )
        return final, work, ckpts[-1]
    _refuse_existing(final, overwrite)
    if ckpts:
        raise UserError(
            f"{work} holds an interrupted run (newest complete checkpoint: {ckpts[-1].name}); pass --resume to "
            "continue it, or delete that folder to start over"
        )
    try:
        if work.exists():
            shutil.rmtree(work)  # an earlier attempt that never reached a checkpoint: nothing to keep
        work.mkdir(parents=True)
    except OSError as e:
        raise UserError(
            f"cannot create the output folder {work.parent}: {e.strerror or e}; choose a writable output_dir"
        ) from None
    return final, work, None


def publish(work: Path, final: Path) -> None:
    """Swap the finished work dir in; the old output (if any) is removed only after the new one is in place."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_marker():
    """A TrainerCallback that marks each checkpoint complete once the Trainer has finished writing it."""
    from transformers import TrainerCallback

    class _Marker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    tmp = ckpt / (COMPLETE_MARKER + ".tmp")
                    tmp.write_text(json.dumps({"global_step": state.global_step}) + "\n", encoding="utf-8")
                    os.replace(tmp, ckpt / COMPLETE_MARKER)

    return _Marker()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows a killed run logged after its last checkpoint: the resumed run logs those steps again."""
    if path.is_file():
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# Keys a resumed run may change: they decide what is logged, saved, reported or evaluated after training, not
# what is trained. Anything else that differs from the interrupted run would give a model that neither recipe
# describes.
RESUME_FREE_SECTIONS = ("eval", "pairs")
RESUME_FREE_KEYS = {
    "train." + k
    for k in (
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_dir",
        "report_to",
        "run_name",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "eval_steps",
        "eval_strategy",
        "dataloader_num_workers",
        "disable_tqdm",
        "log_completions",
    )
} | {"reward.workers", "reward.log_completions"}


def _flatten(table: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def recipe_differences(recorded: Path, recipe) -> list[str]:
    """Dotted keys whose values differ between the recipe an interrupted run recorded and `recipe`, leaving
    out the keys a resumed run may change. Both sides go through the same writer and reader."""
    with tempfile.TemporaryDirectory() as tmp:
        now = Path(tmp) / "now.toml"
        write_resolved(recipe, now, "")
        current = _flatten(tomllib.loads(now.read_text(encoding="utf-8")))
    before = _flatten(tomllib.loads(recorded.read_text(encoding="utf-8")))
    keys = sorted(set(before) | set(current))
    return [
        k
        for k in keys
        if before.get(k) != current.get(k)
        and k not in RESUME_FREE_KEYS
        and k.split(".", 1)[0] not in RESUME_FREE_SECTIONS
    ]


def check_resume(recipe, recorded: Path) -> None:
    """--resume continues the interrupted run only under the recipe it was started with."""
    if not recorded.is_file():
        raise UserError(
            f"--resume: {recorded} is missing, so this run cannot be checked against the recipe it was started "
            "with; delete the folder and start again without --resume"
        )
    differ = recipe_differences(recorded, recipe)
    if differ:
        before = _flatten(tomllib.loads(recorded.read_text(encoding="utf-8")))
        shown = ", ".join(f"{k} (was {before.get(k, '<unset>')!r})" for k in differ[:8])
        raise UserError(
            f"--resume: the recipe differs from the one the interrupted run started with: {shown}. Resuming would "
            f"train a model that neither recipe describes: restore those values (the original is {recorded}), or "
            "start over without --resume"
        )
