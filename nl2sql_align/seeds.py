"""`[compare] seeds = N` (`compare --seeds N`): the pipeline's training steps rerun with N seeds, and the spread of
each method's EX across seeds reported beside the per-question interval.

The per-question interval (bootstrap over questions) says how much a score would move on other questions of the
same kind; it says nothing about how much it moves when the same recipe trains again with another seed, which on
small data is often larger. Seed k > 0 reruns every step with `seed = recipe seed + k` into `<output_dir>-seed<k>`,
its inputs rewired to the same seed's upstream outputs (dpo reads that seed's pairs, sft-more starts from that
seed's sft), so each seed is a whole independent pipeline; seed 0 is the pipeline as written. The main table (and
its McNemar verdicts) stays seed 0's; the seeds table adds per-seed EX, mean, sample standard deviation and range,
and each run's difference to the baseline per seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def seed_output(output: Path, k: int) -> Path:
    """Where seed k's run of a step writes (seed 0: the step's own output_dir)."""
    return output if k == 0 else output.with_name(f"{output.name}-seed{k}")


def seed_overrides(steps: list, k: int) -> dict[str, list[str]]:
    """Per step name, the `--set` items that make seed k's copy of the pipeline planned in `steps` (seed 0):
    its own seed, its own output folder, and every input an earlier step writes read from that step's seed-k
    output instead. Inputs that no step writes (the base model, the data) are shared by all seeds."""
    from nl2sql_align.pipeline import _local_path, _writer

    if k == 0:
        return {s.name: [] for s in steps}
    out: dict[str, list[str]] = {}
    for i, s in enumerate(steps):
        key = "pairs.output" if s.command == "pairs" else "output_dir"
        sets = [f"seed={s.recipe.seed + k}", f"{key}={json.dumps(str(seed_output(s.output, k)))}"]
        for name, spec in s.inputs:
            local = _local_path(spec)
            writer = _writer(local, steps[:i]) if local is not None else None
            if writer is None:
                continue
            rel = Path(local).relative_to(writer.output)
            moved = seed_output(writer.output, k) / rel if rel != Path(".") else seed_output(writer.output, k)
            moved_spec = spec[: len(spec) - len(local)] + str(moved)  # keeps a spider:/bird: prefix
            sets.append(f"{name}={json.dumps(moved_spec)}")
        out[s.name] = sets
    return out


def _sd(xs: list[float]) -> float | None:
    """The sample standard deviation (n - 1), None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def add_seed_stats(summary: dict[str, Any], per_seed: list[dict[str, Any]]) -> None:
    """Give each of seed 0's run records (summary["runs"]) a "seeds" entry from the summaries of all seeds
    (per_seed[0] is `summary` itself): EX per seed, mean, sd, min, max; and against the baseline, the
    difference per seed and its mean. Sets summary["seeds"] = N."""
    base = summary["baseline"]
    for rec in summary["runs"]:
        ex = [next(r["ex"] for r in s["runs"] if r["name"] == rec["name"]) for s in per_seed]
        base_ex = [next(r["ex"] for r in s["runs"] if r["name"] == base) for s in per_seed]
        entry: dict[str, Any] = {
            "ex": ex,
            "mean": round(sum(ex) / len(ex), 2),
            "sd": None if (sd := _sd(ex)) is None else round(sd, 2),
            "min": min(ex),
            "max": max(ex),
        }
        if rec["name"] != base:
            diffs = [round(a - b, 2) for a, b in zip(ex, base_ex, strict=True)]
            entry["diff"] = diffs
            entry["diff_mean"] = round(sum(diffs) / len(diffs), 2)
            entry["diff_sd"] = None if (sd := _sd(diffs)) is None else round(sd, 2)
        rec["seeds"] = entry
    summary["seeds"] = len(per_seed)


def _cell(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def seed_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per run: run, EX per seed, mean, sd, range, Δ vs the baseline per seed, mean Δ."""
    rows = []
    for r in summary["runs"]:
        s = r["seeds"]
        diffs = s.get("diff")
        rows.append(
            [
                r["name"],
                " ".join(_cell(x) for x in s["ex"]),
                _cell(s["mean"]),
                _cell(s["sd"]),
                f"{s['min']:.1f}-{s['max']:.1f}",
                "-" if diffs is None else " ".join(f"{d:+.1f}" for d in diffs),
                "-" if diffs is None else f"{s['diff_mean']:+.1f}",
            ]
        )
    return rows


SEED_COLUMNS = ["run", "EX % per seed", "mean", "sd", "range", "Δ vs {base} per seed", "mean Δ"]


def seed_columns(summary: dict[str, Any]) -> list[str]:
    return [c.format(base=summary["baseline"]) for c in SEED_COLUMNS]


def seed_markdown(summary: dict[str, Any]) -> list[str]:
    """report.md's seeds section (nothing for a one-seed comparison)."""
    if summary.get("seeds", 1) < 2:
        return []
    cols = seed_columns(summary)
    lines = [
        "",
        f"## Across {summary['seeds']} seeds",
        "",
        "Every training step rerun with seeds +0 ... +"
        f"{summary['seeds'] - 1} (`<output_dir>-seed<k>`), scored on the same questions. The table above is seed "
        "+0's; sd is the sample standard deviation across seeds, which the per-question interval does not include.",
        "",
        "| " + " | ".join(cols) + " |",
        "|---|" + "|".join("---:" for _ in cols[1:]) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in seed_rows(summary)]
    return lines


def seed_table(summary: dict[str, Any]):
    """The terminal's seeds table (None for a one-seed comparison)."""
    if summary.get("seeds", 1) < 2:
        return None
    from rich.table import Table

    t = Table(title=f"EX across {summary['seeds']} seeds (Δ: against {summary['baseline']})", show_edge=False)
    for i, col in enumerate(["run", "EX per seed", "mean", "sd", "range", "Δ per seed", "mean Δ"]):
        t.add_column(col, justify="left" if i == 0 else "right", no_wrap=i in (0, 2, 3, 6))
    for row in seed_rows(summary):
        t.add_row(*row)
    return t
