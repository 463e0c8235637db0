"""What the nl2sql-align wrapper costs over raw TRL: the same training work through `nl2sql-align sft|grpo|dpo` and
through scripts/raw_trl.py (TRL, datasets and transformers alone), in alternating runs, each its own process.

    python scripts/bench_overhead.py [--stages sft,grpo,dpo] [--steps 20] [--reps 2] [--model DIR]

Held equal for each stage: the model (default out/tiny-model, built if missing), the dataset rows (built here by
our own row builders from the same recipe: stages/sft.sft_rows, stages/rl.rl_rows, stages/dpo.training_rows),
the keyword arguments given to the TRL config class (captured from the CLI's own make_train_args), and for GRPO
the reward functions (our reward engine's callables, on both sides). Evaluation after training and held-out
pairs are off on both sides (they are optional work, not training). DPO trains on pairs written here: the gold
query as chosen, another question's gold query as rejected.

Seconds per step is the training loop's wall time / optimizer steps and peak RSS is the process's ru_maxrss at
the end of training, measured the same way on both sides (the CLI's `train_end` row; raw_trl.py's copy of it).
CPU seconds per step (the process's CPU time, all its threads, inside Trainer.train, / steps) is measured by the
same shim on both sides (`bench_overhead.py clocked FILE -- COMMAND`): on a shared machine it moves less than
wall time when other jobs compete for the cores.
Also reported: each process's whole wall time and whole-life peak RSS (from wait4), which include what the CLI
does before and after the loop (preflight, gold audit, saving, plots, model card). Ratios are CLI / raw, medians
over --reps alternating pairs. Results: out/bench/overhead/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("sft", "grpo", "dpo")


def stage_sets(
    stage: str, model: Path, out: Path, steps: int, pairs: Path | None = None, train_limit: int = 256
) -> list[str]:
    """The --set overrides of recipes/tiny-<stage>.toml for a short, CPU-sized run of `steps` optimizer steps."""
    sets = [
        f"model.name_or_path={model}",
        f"output_dir={out}",
        'data.eval=""',
        f"train.max_steps={steps}",
        "train.logging_steps=1",
    ]
    if stage != "dpo":  # dpo's pairs file is already that long
        sets.append(f"data.train_limit={train_limit}")
    if stage == "sft":
        sets += ["train.per_device_train_batch_size=4"]
    elif stage == "grpo":
        sets += [
            "train.per_device_train_batch_size=8",
            "train.num_generations=4",
            "train.max_completion_length=32",
            "reward.log_completions=0",
        ]
    elif stage == "dpo":
        sets += [f"data.train={pairs}", "data.holdout=0", "train.per_device_train_batch_size=4"]
    return sets


def write_pairs(path: Path, n: int = 256) -> Path:
    """Preference pairs in our layout from demo:train: the gold query chosen, another question's gold rejected."""
    from nl2sql_align.data import load_examples

    examples = load_examples("demo:train")[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, ex in enumerate(examples):
            other = next(o for o in examples[i + 1 :] + examples[:i] if o.sql != ex.sql)
            f.write(
                json.dumps(
                    {"id": ex.id, "question": ex.question, "db": ex.db.path, "sql": ex.sql}
                    | {"chosen": ex.sql, "rejected": other.sql}
                )
                + "\n"
            )
    return path


def raw_spec(stage: str, sets: list[str], raw_out: Path) -> dict:
    """What raw_trl.py needs to do the CLI's training work: the rows our row builders make from the recipe (after
    every check the CLI makes, so the same examples), and the exact kwargs the CLI gives the TRL config class."""
    from nl2sql_align.stages import get_stage, load_stage_recipe
    from nl2sql_align.stages.preflight import check_stage
    from nl2sql_align.stages.setup import make_train_args

    recipe, cls, defaults = load_stage_recipe(stage, REPO / "recipes" / f"tiny-{stage}.toml", sets)
    st = get_stage(stage)
    train = check_stage(st, recipe).data[0]
    if stage == "sft":
        from nl2sql_align.stages.sft import sft_rows

        rows = sft_rows(train, recipe)
    elif stage == "grpo":
        from nl2sql_align.stages.rl import rl_rows

        rows = rl_rows(train, recipe)
    else:
        from nl2sql_align.stages.dpo import training_rows

        rows = training_rows(train, recipe.preference.method)
    captured: dict = {}

    def capture(**values):
        captured.update(values)
        return cls(**values)

    make_train_args(capture, recipe, raw_out, defaults)
    return {
        "stage": stage,
        "model": recipe.model.name_or_path,
        "config": captured,
        "rows": rows,
        "reward": dataclasses.asdict(recipe.reward) if stage == "grpo" and recipe.reward is not None else None,
    }


def clocked(clock: Path, command: list[str]) -> None:
    """Run `command` (`-m module ...` or `script.py ...`) in this process with Trainer.train timed: its wall and CPU
    seconds (this process, all threads) and the optimizer steps go to `clock` as JSON. Both sides run under it."""
    import runpy

    from transformers import Trainer

    train = Trainer.train

    def timed_train(self, *args, **kwargs):
        c0, t0 = time.process_time(), time.time()
        try:
            return train(self, *args, **kwargs)
        finally:
            cpu, wall = time.process_time() - c0, time.time() - t0
            clock.write_text(json.dumps({"cpu_seconds": cpu, "wall_seconds": wall, "steps": self.state.global_step}))

    Trainer.train = timed_train
    sys.argv = command[1:] if command[0] == "-m" else command
    if command[0] == "-m":
        sys.argv[0] = command[1]
        runpy.run_module(command[1], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(command[0], run_name="__main__")


def _run(args: list[str], log: Path) -> tuple[float, float, dict]:
    """Run a command in its own process, clocked; (wall seconds, whole-life peak RSS in MB from wait4, the clock)."""
    clock = log.with_suffix(".clock.json")
    clock.unlink(missing_ok=True)
    args = [args[0], str(Path(__file__).resolve()), "clocked", str(clock), "--", *args[1:]]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with log.open("w", encoding="utf-8") as f:
        p = subprocess.Popen(args, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed ({p.returncode}):\n{log.read_text()[-3000:]}")
    return time.time() - t0, usage.ru_maxrss / 1024, json.loads(clock.read_text())


def read_run(metrics: Path, wall: float, rss: float, clock: dict) -> dict:
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    end = next(r for r in rows if r.get("event") == "train_end")
    return {
        "steps": end["steps"],
        "seconds_per_step": end["seconds_per_step"],
        "cpu_seconds_per_step": round(clock["cpu_seconds"] / clock["steps"], 4),
        "peak_rss_mb": end["peak_rss_mb"],
        "process_seconds": round(wall, 2),
        "process_peak_rss_mb": round(rss, 1),
        "losses": {r["step"]: r["loss"] for r in rows if "loss" in r and r.get("event") is None},
        # the first logged step's numbers (loss, entropy, completion lengths...): what both sides must agree on
        "step1": next((r for r in rows if r.get("step") == 1 and "loss" in r), {}),
    }


def run_cli(stage: str, sets: list[str], out: Path) -> dict:
    args = [sys.executable, "-m", "nl2sql_align", stage, "--recipe", f"recipes/tiny-{stage}.toml", "--overwrite"]
    for s in sets:
        args += ["--set", s]
    return read_run(out / "metrics.jsonl", *_run(args, out.parent / f"{out.name}.log"))


def run_raw(spec_path: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(REPO / "scripts" / "raw_trl.py"), str(spec_path), str(out)]
    return read_run(out / "metrics.jsonl", *_run(args, out.parent / f"{out.name}.log"))


def prepare(stage: str, model: Path, root: Path, steps: int, train_limit: int = 256) -> tuple[list[str], Path]:
    """(the CLI's --set overrides, the raw side's spec file) for one stage."""
    root.mkdir(parents=True, exist_ok=True)
    pairs = write_pairs(root / "pairs.jsonl", train_limit) if stage == "dpo" else None
    sets = stage_sets(stage, model, root / f"cli-{stage}", steps, pairs, train_limit)
    spec = raw_spec(stage, sets, root / f"raw-{stage}")
    spec_path = root / f"spec-{stage}.json"
    spec_path.write_text(json.dumps(spec, default=str), encoding="utf-8")
    return sets, spec_path


def compare(stage: str, model: Path, root: Path, steps: int, reps: int = 1, train_limit: int = 256, say=print) -> dict:
    """Alternate CLI and raw runs of one stage (`reps` pairs, the CLI first in odd pairs, raw first in even)."""
    sets, spec_path = prepare(stage, model, root, steps, train_limit)
    runs: dict[str, list[dict]] = {"cli": [], "raw": []}
    for rep in range(reps):
        order = ("cli", "raw") if rep % 2 == 0 else ("raw", "cli")
        for side in order:
            say(f"{stage} rep {rep + 1}/{reps}: {side} ...")
            if side == "cli":
                runs["cli"].append(run_cli(stage, sets, root / f"cli-{stage}"))
            else:
                runs["raw"].append(run_raw(spec_path, root / f"raw-{stage}"))
    med = {
        side: {
            k: statistics.median(r[k] for r in rs)
            for k in (
                "seconds_per_step",
                "cpu_seconds_per_step",
                "peak_rss_mb",
                "process_seconds",
                "process_peak_rss_mb",
            )
        }
        for side, rs in runs.items()
    }
    ratios = {k: round(med["cli"][k] / med["raw"][k], 3) for k in med["cli"]}
    return {"stage": stage, "steps": steps, "runs": runs, "median": med, "ratios": ratios}


def main() -> None:
    if sys.argv[1:2] == ["clocked"]:  # bench_overhead.py clocked FILE -- COMMAND...
        return clocked(Path(sys.argv[2]), sys.argv[4:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="default: out/tiny-model (built if missing)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    ap.add_argument("--reps", type=int, default=2, help="alternating CLI/raw pairs per stage")
    ap.add_argument("--train-limit", type=int, default=256, help="training examples (dpo: pairs) given to both")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "overhead")
    a = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from nl2sql_align.tiny_model import ensure_tiny_model

    model = (a.model or ensure_tiny_model(REPO / "out" / "tiny-model")).resolve()
    console = Console()
    load = os.getloadavg()
    results = {"model": str(model), "loadavg_start": load, "cpus": os.cpu_count(), "stages": {}}
    for stage in a.stages.split(","):
        results["stages"][stage] = compare(stage, model, a.out, a.steps, a.reps, a.train_limit, say=console.print)
    results["loadavg_end"] = os.getloadavg()

    table = Table(title=f"CLI / raw TRL on {model.name}: {a.steps} steps, median of {a.reps} alternating pairs")
    for col in ("stage", "side", "s/step", "CPU s/step", "peak RSS MB", "process s", "process peak MB"):
        table.add_column(col, justify="left" if col in ("stage", "side") else "right")
    for stage, r in results["stages"].items():
        for side in ("cli", "raw"):
            m = r["median"][side]
            table.add_row(
                stage,
                side,
                f"{m['seconds_per_step']:.3f}",
                f"{m['cpu_seconds_per_step']:.3f}",
                f"{m['peak_rss_mb']:.0f}",
                f"{m['process_seconds']:.1f}",
                f"{m['process_peak_rss_mb']:.0f}",
            )
        q = r["ratios"]
        table.add_row(
            stage,
            "[bold]CLI/raw[/]",
            f"{q['seconds_per_step']:.3f}",
            f"{q['cpu_seconds_per_step']:.3f}",
            f"{q['peak_rss_mb']:.3f}",
            f"{q['process_seconds']:.2f}",
            f"{q['process_peak_rss_mb']:.3f}",
        )
    console.print(table)
    console.print(f"load average {load[0]:.1f} at the start, {results['loadavg_end'][0]:.1f} at the end")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results: {a.out / 'results.json'}")


if __name__ == "__main__":
    main()
