"""`compare --recipe PIPELINE.toml`: run the stages a pipeline recipe names, in order, then compare the policies
they trained on one eval set (compare.compare_runs).

A pipeline recipe lists steps; each is a command (sft, rm, dpo, ppo, grpo, rloo or pairs) with its own recipe (a path
relative to the pipeline file) and `--set` overrides. Steps talk to each other only through the folders their
recipes name (dpo's data.train is the pairs step's output, ppo's reward.model the rm step's), so each step stays
a command a user could run by hand, and the pipeline can check the plumbing before anything runs:

- every recipe loads and validates (keys, types, the stage's TRL config) up front, not hours in;
- an input that a later step writes is an ordering error; a local input that nothing writes and that does not
  exist is named now.

Make-like reuse: a finished step stamps its output with a fingerprint of its resolved recipe, the fingerprints
of the steps it reads from, and the size and mtime of the inputs that no step writes (a base model, a data
file). A step whose output carries the fingerprint it would write is reused (a crash in GRPO does not cost the
SFT again); one whose output exists with another fingerprint (settings, an input or an upstream step changed)
is refused unless `--overwrite`; `--no-reuse` retrains everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nl2sql_align.environment import PINNED_KERNELS
from nl2sql_align.errors import RecipeError, UserError
from nl2sql_align.stages import STAGES
from nl2sql_align.stdio import read_text

log = logging.getLogger(__name__)

POLICY_STAGES = ("sft", "dpo", "ppo", "grpo", "rloo")  # what writes SQL, so what compare scores
STAMP = ".pipeline-step.json"


@dataclass
class StepSection:
    name: str = ""
    command: Literal["sft", "rm", "dpo", "ppo", "grpo", "rloo", "pairs"] = "sft"
    recipe: str = ""  # relative to the pipeline file
    set: list[str] = field(default_factory=list)  # --set overrides, after the pipeline's own
    compare: bool | None = None  # score it in the comparison (default: sft, dpo, ppo, grpo and rloo steps)
    # Training steps: run through `accelerate launch` on N processes (or as an Accelerate config says), like
    # the stage commands' --num-processes / --accelerate-config.
    num_processes: int = 1
    accelerate_config: str | None = None  # relative to the pipeline file
    # A compute-matched baseline: train for as long as the named earlier step did (its train_end row), by
    # "seconds" of the training loop or "tokens" seen; it must start from the same model ([budget] is set).
    match: str | None = None
    match_by: Literal["seconds", "tokens"] = "seconds"


@dataclass
class ComparePlanSection:
    data: str = ""  # the eval set every compared policy is scored on
    report: str = "out/compare"
    limit: int | None = None
    metric: Literal["spider", "bird", "bird-f1"] = "spider"
    db_dir: str | None = None
    baseline: str | None = None  # the step the others are tested against (default: the first sft step)
    # Rerun the whole pipeline with this many seeds (seeds.py): the spread across seeds beside the intervals.
    seeds: int = 1


@dataclass
class PipelineRecipe:
    set: list[str] = field(default_factory=list)  # overrides applied to every step's recipe
    compare: ComparePlanSection = field(default_factory=ComparePlanSection)
    steps: list[StepSection] = field(default_factory=list)
    source: str = field(default="<defaults>", metadata={"internal": True})


@dataclass
class Step:
    """One step, planned: its resolved recipe and where it reads and writes."""

    section: StepSection
    recipe: Any  # nl2sql_align.recipe.Recipe
    recipe_path: Path
    output: Path
    inputs: list[tuple[str, str]]  # (recipe key, path or data spec)
    overrides: list[str] = field(default_factory=list)  # the pipeline's `set`, then the step's
    accelerate_config: Path | None = None
    upstream: list[str] = field(default_factory=list)  # names of the steps it reads from
    external: dict[str, Any] = field(default_factory=dict)  # inputs no step writes: their size and mtime
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.section.name

    @property
    def command(self) -> str:
        return self.section.command

    @property
    def compared(self) -> bool:
        return _is_compared(self.section)


def is_pipeline_recipe(path: Path) -> bool:
    """A pipeline recipe has [[steps]]; a stage recipe never does."""
    try:
        return "steps" in tomllib.loads(read_text(path))
    except (OSError, UserError, tomllib.TOMLDecodeError):
        return False


def describe(steps: list[Step]) -> list[str]:
    """One line per step: what it runs, what it reads from which step, where it writes."""
    lines = []
    for s in steps:
        reads = f", after {', '.join(dict.fromkeys(s.upstream))}" if s.upstream else ""
        mark = " (compared)" if s.compared else ""
        lines.append(f"{s.name}: {s.command} --recipe {s.recipe_path} -> {s.output}{reads}{mark}")
    return lines


def load_pipeline(path: Path, overrides: list[str] | None = None) -> PipelineRecipe:
    """Read a pipeline recipe. `--set STEP.key=value` changes one step's recipe, `--set compare.key=value` the
    comparison; every key is checked like a stage recipe's."""
    from nl2sql_align.recipe import apply_override as _apply_override
    from nl2sql_align.recipe import build as _build
    from nl2sql_align.recipe import read_toml

    raw = read_toml(path, "pipeline recipe")
    step_sets = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        head, dot, rest = key.strip().partition(".")
        if not sep or not dot:
            raise RecipeError(f"--set {item!r}: expected STEP.key=value (a step's recipe) or compare.key=value")
        if head == "compare":
            _apply_override(raw, item, None)  # checked with the rest of the file by _build below
        else:
            step_sets.append((item, head, f"{rest}={value}"))
    pipe: PipelineRecipe = _build(PipelineRecipe, raw, str(path), prefix="")
    pipe.source = str(path)
    if not pipe.steps:
        raise RecipeError(
            f"{path}: no [[steps]]; each names a command (sft, rm, dpo, ppo, grpo, rloo, pairs) and a recipe"
        )
    names = [s.name for s in pipe.steps]
    for i, s in enumerate(pipe.steps):
        where = f"{path}: steps[{i}]"
        if not s.name or not s.name.replace("-", "").replace("_", "").isalnum():
            raise RecipeError(f"{where}: name = {s.name!r}; give each step a short name (letters, digits, - or _)")
        if names.count(s.name) > 1:
            raise RecipeError(f"{where}: two steps are named {s.name!r}; step names must be unique")
        if s.name == "compare":
            raise RecipeError(f"{where}: 'compare' is reserved for the [compare] table; rename the step")
        if (s.num_processes > 1 or s.accelerate_config) and s.command not in STAGES:
            raise RecipeError(
                f"{where} ({s.name}): num_processes/accelerate_config apply to training steps, not {s.command}"
            )
        if s.accelerate_config and not (path.parent / s.accelerate_config).is_file():
            raise RecipeError(
                f"{where} ({s.name}): accelerate_config {s.accelerate_config!r} not found (see recipes/accelerate/)"
            )
        if not s.recipe:
            raise RecipeError(f"{where} ({s.name}): recipe is not set; name the {s.command} recipe this step runs")
        if s.compare and s.command not in POLICY_STAGES:
            raise RecipeError(
                f"{where} ({s.name}): compare = true, but a {s.command} step writes no SQL to score; compare the "
                "policies trained from it instead"
            )
    for item, head, override in step_sets:
        if head not in names:
            raise RecipeError(f"--set {item!r}: no step named {head!r} in {path} (steps: {', '.join(names)})")
        pipe.steps[names.index(head)].set.append(override)
    if pipe.compare.seeds < 1:
        raise RecipeError(f"{path}: [compare] seeds = {pipe.compare.seeds}; give 1 (one run per step) or more")
    if not pipe.compare.data:
        raise RecipeError(f"{path}: [compare] data is not set: the eval set every policy is scored on, e.g. demo:dev")
    if not any(_is_compared(s) for s in pipe.steps):
        raise RecipeError(
            f"{path}: no step trains a policy to compare (an sft, dpo, ppo, grpo or rloo step without compare = false)"
        )
    compared = [s.name for s in pipe.steps if _is_compared(s)]
    if pipe.compare.baseline is not None and pipe.compare.baseline not in compared:
        raise RecipeError(
            f"{path}: [compare] baseline = {pipe.compare.baseline!r} is not a compared step ({', '.join(compared)})"
        )
    return pipe


def _is_compared(s: StepSection) -> bool:
    return s.compare if s.compare is not None else s.command in POLICY_STAGES


def _local_path(spec: str) -> str | None:
    """The filesystem path a data spec reads (spider:DIR -> DIR), None for the built-in demo."""
    kind, _, rest = spec.partition(":")
    if kind == "demo" and rest:
        return None
    if kind in ("spider", "bird") and rest:
        return rest
    return spec


def _step_io(section: StepSection, recipe) -> tuple[Path, list[tuple[str, str]]]:
    """(output folder, inputs as (recipe key, path)) of one step, as its command will read them."""
    from nl2sql_align.pairs import pairs_plan

    inputs = [("model.name_or_path", recipe.model.name_or_path)]
    template = recipe.model.chat_template or ""
    if template.endswith((".jinja", ".j2")):  # a template file: editing it must retrain the step
        inputs.append(("model.chat_template", template))
    if section.command == "pairs":
        _, data, output = pairs_plan(recipe)
        inputs.append(("pairs.data", data))
        return output, inputs
    d = recipe.data
    inputs += [(f"data.{k}", v) for k, v in (("train", d.train), ("eval", d.eval), ("eval_pairs", d.eval_pairs)) if v]
    if section.command in ("ppo", "grpo", "rloo") and recipe.reward is not None and recipe.reward.model:
        inputs.append(("reward.model", recipe.reward.model))
    if not recipe.output_dir:
        raise RecipeError(
            f"{recipe.source}: output_dir is not set; the pipeline needs to know where {section.name} writes"
        )
    return Path(recipe.output_dir), inputs


def _writer(path: str, steps: list[Step]) -> Step | None:
    """The step whose output holds `path`; of nested outputs (out/x and out/x/pairs), the deepest."""
    p = Path(path)
    holders = [s for s in steps if p == s.output or s.output in p.parents]
    return max(holders, key=lambda s: len(s.output.parts), default=None)


def plan(pipe: PipelineRecipe, extra: dict[str, list[str]] | None = None) -> list[Step]:
    """Load and validate every step's recipe, trace which step feeds which, and fingerprint them. Nothing runs.
    `extra`: more overrides per step name, after the pipeline's and the step's own (a seed's copy, seeds.py)."""
    from nl2sql_align.recipe import load_recipe
    from nl2sql_align.stages import load_stage_recipe

    base = Path(pipe.source).parent
    steps: list[Step] = []
    for sec in pipe.steps:
        path = base / sec.recipe
        if not path.is_file():
            raise RecipeError(f"{pipe.source}: step {sec.name}: recipe {sec.recipe!r} not found (looked at {path})")
        overrides = [*pipe.set, *sec.set, *(extra or {}).get(sec.name, [])]
        try:
            recipe = (
                load_recipe(path, overrides)
                if sec.command == "pairs"
                else load_stage_recipe(sec.command, path, overrides)[0]
            )
            output, inputs = _step_io(sec, recipe)
        except UserError as e:
            raise type(e)(f"step {sec.name} ({sec.command}): {e}") from None
        accel = base / sec.accelerate_config if sec.accelerate_config else None
        steps.append(Step(sec, recipe, path, output, inputs, overrides, accel))
    for i, step in enumerate(steps):
        if (clash := _writer(str(step.output), steps[:i])) is not None and clash.output == step.output:
            raise RecipeError(f"{pipe.source}: steps {clash.name} and {step.name} both write {step.output}")
        for key, spec in step.inputs:
            local = _local_path(spec)
            if local is None:
                continue
            writer = _writer(local, steps[:i])
            if writer is not None:
                step.upstream.append(writer.name)
                continue
            later = _writer(local, steps[i + 1 :])
            if later is not None:
                raise RecipeError(
                    f"{pipe.source}: step {step.name} reads {key} = {spec!r}, which step {later.name} writes after it; "
                    f"move {later.name} before {step.name}"
                )
            if Path(local).exists():
                step.external[key] = _signature(Path(local))
            elif key != "model.name_or_path" or _looks_local(local):
                raise RecipeError(
                    f"step {step.name} ({step.recipe_path}): {key} = {spec!r} does not exist and no earlier step writes "
                    "it; fix the path, or add the step that makes it"
                )
        if step.section.match is not None:
            _check_match(pipe, step, steps[:i])
        step.fingerprint = _fingerprint(step, {s.name: s.fingerprint for s in steps[:i]})
    return steps


def plan_seeds(pipe: PipelineRecipe) -> list[list[Step]]:
    """The planned steps of each seed's copy of the pipeline ([compare] seeds; seed 0 is the pipeline as written)."""
    from nl2sql_align.seeds import seed_overrides

    first = plan(pipe)
    seeded = [first, *(plan(pipe, seed_overrides(first, k)) for k in range(1, pipe.compare.seeds))]
    written: dict[Path, str] = {}
    for k, steps in enumerate(seeded):
        for s in steps:
            who = f"{s.name} (seed +{k})"
            if s.output in written:  # another step's <output_dir>-seed<k> is this one's output_dir
                raise RecipeError(
                    f"{pipe.source}: {written[s.output]} and {who} would both write {s.output}; rename the "
                    "output_dir that ends in -seed<k>"
                )
            written[s.output] = who
    return seeded


def _check_match(pipe: PipelineRecipe, step: Step, before: list[Step]) -> None:
    """`match = STEP`: an earlier training step that starts from the same model; its result feeds this one."""
    sec = step.section
    other = next((s for s in before if s.name == sec.match), None)
    if other is None or other.command == "pairs":
        raise RecipeError(f"{pipe.source}: step {step.name}: match = {sec.match!r} is not an earlier training step")
    if sec.command == "pairs":
        raise RecipeError(f"{pipe.source}: step {step.name}: pairs does not train; match needs a training step")
    if step.recipe.model.name_or_path != other.recipe.model.name_or_path:
        raise RecipeError(
            f"{pipe.source}: step {step.name} matches {other.name}'s compute but starts from "
            f"{step.recipe.model.name_or_path!r}, not {other.recipe.model.name_or_path!r}: a compute-matched "
            "baseline starts where the step it matches starts"
        )
    step.upstream.append(other.name)  # its budget comes from that run: retrain when it changes


def match_budget(step: Step, steps: list[Step]) -> list[str]:
    """The `--set budget.*` item a matching step runs with: the matched step's training seconds or tokens."""
    sec = step.section
    if sec.match is None:
        return []
    other = next(s for s in steps if s.name == sec.match)
    rows = [json.loads(x) for x in (other.output / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    ends = [r for r in rows if r.get("event") == "train_end"]
    if not ends:
        raise UserError(f"step {step.name}: {other.name} has no train_end row in its metrics.jsonl to match")
    value = ends[-1].get("train_seconds") if sec.match_by == "seconds" else ends[-1].get("num_tokens")
    if value is None:
        raise UserError(f"step {step.name}: {other.name}'s train_end row has no {sec.match_by} to match")
    return [f"budget.{sec.match_by}={int(value) if sec.match_by == 'tokens' else value}"]


def _signature(path: Path) -> Any:
    """Size and mtime of an input file, or of a folder's files: a rebuilt model or an edited data file makes the
    steps that read it stale (contents are not hashed: a multi-GB model would take minutes)."""

    def stat(p: Path) -> list[int]:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]

    try:
        if path.is_dir():
            return {c.name: stat(c) for c in sorted(path.iterdir()) if c.is_file()}
        return stat(path)
    except OSError:
        return None


def _looks_local(path: str) -> bool:
    """A model path that cannot be a hub id (org/name), so it must exist on disk."""
    return path.startswith((".", "/", "~")) or path.count("/") != 1


def _fingerprint(step: Step, done: dict[str, str]) -> str:
    from nl2sql_align.recipe import dump_toml

    blob = json.dumps(
        {
            "command": step.command,
            "recipe": dump_toml(step.recipe.to_dict()),
            "upstream": {n: done[n] for n in sorted(set(step.upstream))},
            "external": step.external,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def step_state(step: Step) -> str:
    """'missing', 'current' (made by this step with these settings and inputs) or 'stale'."""
    out = step.output
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return "missing"
    try:
        stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "stale"
    return "current" if stamp.get("fingerprint") == step.fingerprint else "stale"


def step_argv(step: Step, overwrite: bool, resume: bool) -> list[str]:
    """The step as the command a user would type: `nl2sql-align <command> --recipe R --set ...`."""
    argv = [step.command, "--recipe", str(step.recipe_path)]
    argv += [a for o in step.overrides for a in ("--set", o)]
    argv += ["--overwrite"] if overwrite else []
    argv += ["--resume"] if resume else []
    return argv


_PRELOAD = ["nl2sql_align._preload"]  # what every step imports before it trains, loaded once
# The environment and the stdio files the forkserver started with: libraries read some variables once, at import
# (HF_HUB_OFFLINE, cache paths, thread counts), and a forked step writes to the forkserver's fds 0-2.
_forkserver_state: tuple[dict[str, str], list[tuple[int, int] | None]] | None = None


def _stdio_ids() -> list[tuple[int, int] | None]:
    ids = []
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
            ids.append((st.st_dev, st.st_ino))
        except OSError:
            ids.append(None)
    return ids


def _can_fork_steps() -> bool:
    """Whether a step may be forked from the forkserver rather than started as a fresh interpreter: Linux; a
    CPU-only torch (bitsandbytes, which peft imports, initialises CUDA at import, and a process forked after that
    cannot use CUDA); a main script known to be safe to re-import (multiprocessing re-imports the parent's main
    script in each child: ours and pytest's are guarded); and the environment and stdio the forkserver started
    with, if it has started."""
    import multiprocessing

    if sys.platform != "linux" or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    import torch

    if torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None:
        return False
    main = sys.modules.get("__main__")
    spec = getattr(getattr(main, "__spec__", None), "name", None)
    script = os.path.basename(getattr(main, "__file__", "") or "")
    if spec not in ("nl2sql_align.__main__", "pytest.__main__") and script not in ("nl2sql-align", "pytest"):
        return False
    return _forkserver_state is None or _forkserver_state == (dict(os.environ), _stdio_ids())


def _step_main(argv: list[str]) -> None:
    """A step's command in a process forked from the forkserver, as `python -m nl2sql_align ARGV` would run it."""
    import atexit
    import threading

    sys.argv = ["nl2sql-align", *argv]
    sys.path.insert(0, os.getcwd())  # as `python -m` does: a reward function's module in the working directory
    from nl2sql_align.cli import main

    try:
        main()
    finally:
        # multiprocessing ends its children with os._exit, which skips atexit (logging's flush, the SQL
        # workers' shutdown); a command run by hand gets them, after its threads end, and so does a step.
        getattr(threading, "_shutdown", lambda: None)()  # private; joins the non-daemon threads, as exit does
        atexit._run_exitfuncs()


def _run_step_process(argv: list[str]) -> int:
    """Run one step's command in its own process and return its exit status (negative: killed by that signal):
    forked from a forkserver that has the heavy modules loaded where that is safe (`_can_fork_steps`), else a
    fresh interpreter."""
    import subprocess

    global _forkserver_state
    if not _can_fork_steps():
        return subprocess.call([sys.executable, "-m", "nl2sql_align", *argv])
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    if _forkserver_state is None:
        _forkserver_state = (dict(os.environ), _stdio_ids())
    proc = ctx.Process(target=_step_main, args=(argv,), name=f"nl2sql-align {argv[0]}")
    proc.start()
    try:
        proc.join()
    except BaseException:  # interrupted here (a signal to this process only): stop the step, as subprocess does
        proc.join(0.25)
        if proc.is_alive():
            proc.kill()
            proc.join()
        raise
    return proc.exitcode


def run_step(step: Step, overwrite: bool, resume: bool) -> None:
    """Run one step as its own command in a child process, then stamp its output.

    A child process per step, not a call in this one: each stage's train_end row then measures that stage alone
    (peak RSS is a per-process high-water mark, so in one process every later stage would report the largest
    peak so far), a crash or leak stays inside its step, and the step is exactly the command a user could
    rerun by hand (its recipe.resolved.toml says so). Where it is safe, the process is forked from a forkserver
    that has torch, transformers and TRL loaded already (`_run_step_process`), which saves each step their import."""
    import subprocess

    from nl2sql_align.launch import launch_command, launch_env
    from nl2sql_align.stages.runner import complete_checkpoints, partial_dir

    sec = step.section
    resume_it = resume and step.command != "pairs" and bool(complete_checkpoints(partial_dir(step.output)))
    argv = step_argv(step, overwrite, resume_it)
    if sec.num_processes > 1 or sec.accelerate_config:
        code = subprocess.call(launch_command(sec.num_processes, step.accelerate_config, argv), env=launch_env())
    else:
        code = _run_step_process(argv)
    if code != 0:
        raise UserError(
            f"step {step.name} failed (exit {code}): nl2sql-align {' '.join(argv)}; the error is above. Fix it and "
            "run the pipeline again: the steps before it are reused"
        )
    stamp = {
        "step": step.name,
        "command": step.command,
        "recipe": str(step.recipe_path),
        "fingerprint": step.fingerprint,
    }
    (step.output / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def run_pipeline(
    path: Path,
    overrides: list[str] | None = None,
    *,
    report: Path | None = None,
    overwrite: bool = False,
    reuse: bool = True,
    resume: bool = False,
    command: str = "nl2sql-align compare",
) -> dict[str, Any]:
    """Plan, run the steps that are not current, compare the policies; returns compare's summary with a
    `pipeline` entry (each step's status and wall time)."""
    from rich.console import Console

    from nl2sql_align.compare import score_runs, write_comparison

    console = Console()
    pipe = load_pipeline(path, overrides)
    seeded = plan_seeds(pipe)
    states = {(k, s.name): step_state(s) for k, steps in enumerate(seeded) for s in steps}
    if not overwrite:
        stale = [
            s
            for k, steps in enumerate(seeded)
            for s in steps
            if states[k, s.name] == "stale" or (not reuse and states[k, s.name] == "current")
        ]
        if stale:
            raise UserError(
                "these outputs exist but were not made by this pipeline with these settings and inputs: "
                + ", ".join(f"{s.name} -> {s.output}" for s in stale)
                + "; pass --overwrite to retrain them (or point the step's output_dir elsewhere)"
            )
    report = report or Path(pipe.compare.report)
    t0 = time.time()
    rows = []
    total = sum(len(steps) for steps in seeded) + 1
    for k, steps in enumerate(seeded):
        rerun: set[str] = set()
        for step in steps:
            rows.append(
                _run_or_reuse(
                    console,
                    step,
                    steps,
                    k,
                    len(rows) + 1,
                    total,
                    states[k, step.name],
                    rerun,
                    reuse,
                    overwrite=overwrite,
                    resume=resume,
                    seeds=len(seeded),
                )
            )
    c = pipe.compare
    console.rule(
        f"[bold]{total}/{total}[/] compare {', '.join(s.name for s in seeded[0] if s.compared)} on {c.data}"
        + (f", {len(seeded)} seeds" if len(seeded) > 1 else ""),
        align="left",
    )
    t = time.time()
    scored = [
        score_runs(
            [s.output for s in steps if s.compared],
            c.data,
            report if k == 0 else report / f"seed{k}",
            limit=c.limit,
            metric=c.metric,
            db_dir=c.db_dir,
            command=command,
            names=[s.name for s in steps if s.compared],
            baseline=c.baseline,
        )
        for k, steps in enumerate(seeded)
    ]
    summary, runs = scored[0]
    if len(seeded) > 1:
        from nl2sql_align.seeds import add_seed_stats

        add_seed_stats(summary, [s for s, _ in scored])
    summary["pipeline"] = {
        "recipe": str(path),
        "report": str(report),
        "steps": rows,
        "compare_seconds": round(time.time() - t, 1),
        "total_seconds": round(time.time() - t0, 1),
    }
    for k, (summary_k, runs_k) in enumerate(scored[1:], 1):
        write_comparison(summary_k, runs_k, report / f"seed{k}")  # each seed's own tables, beside seed 0's
    write_comparison(summary, runs, report)
    return summary


def _run_or_reuse(
    console,
    step: Step,
    steps: list[Step],
    k: int,
    i: int,
    total: int,
    state: str,
    rerun: set[str],
    reuse: bool,
    *,
    overwrite: bool,
    resume: bool,
    seeds: int,
) -> dict[str, Any]:
    """Run one step of seed k's pipeline unless its output is current and nothing it reads was rerun; its row
    for the report. `rerun` collects the names of seed k's steps that ran."""
    seed = f"seed +{k}: " if seeds > 1 else ""
    label = f"[bold]{i}/{total}[/] {seed}{step.name}: {step.command} --recipe {step.recipe_path} -> {step.output}"
    row = {
        "name": step.name if k == 0 else f"{step.name}-seed{k}",
        "command": step.command,
        "output": str(step.output),
        "status": "reused",
        "seconds": None,
        "recipe": str(step.recipe_path),
    }
    if reuse and state == "current" and not rerun & set(step.upstream):
        console.print(f"{label} [green](up to date: reused)[/]")
        return row
    console.rule(label, align="left")
    t = time.time()
    step.overrides = [*step.overrides, *match_budget(step, steps)]  # after the step it matches has run
    run_step(step, overwrite=overwrite or state != "missing", resume=resume)
    rerun.add(step.name)
    row.update(status="ran", seconds=round(time.time() - t, 1))
    return row


def run_demo(recipe: Path, model_dir: Path, overrides: list[str] | None, reuse: bool) -> dict[str, Any]:
    """`nl2sql-align demo` / `make demo`: build the tiny model (reused if present), then the demo pipeline.

    The math kernels' code path is pinned first (environment.PINNED_KERNELS, before torch loads here or in a
    step's process): the same seed then trains the same weights on any x86 CPU with AVX2, instead of weights
    that depend on whether this CPU has AVX-512 (BENCHMARKS.md, "Reproducibility"). A variable already set wins."""
    for key, value in PINNED_KERNELS.items():
        os.environ.setdefault(key, value)
    from nl2sql_align.stages.runner import resolved_command
    from nl2sql_align.tiny_model import ensure_tiny_model

    log.info("demo: tiny model -> %s", model_dir)
    ensure_tiny_model(model_dir)
    return run_pipeline(
        recipe,
        [f"sft.model.name_or_path={json.dumps(str(model_dir))}", *(overrides or [])],
        overwrite=True,
        reuse=reuse,
        command=resolved_command(),
    )
