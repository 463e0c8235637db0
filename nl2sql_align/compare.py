"""`compare --runs`: score trained output folders on one eval set and put their accuracy beside their cost.

Each run is scored with the prompt it was trained with (its recipe.resolved.toml [data] settings) and greedy
decoding; its training cost is read from the `train_end` row that `MetricsLogger` wrote to metrics.jsonl, never
re-measured. Everything about a run is checked before any model loads.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nl2sql_align.data import load_examples
from nl2sql_align.errors import UserError
from nl2sql_align.evaluate import eval_overrides, eval_recipe, evaluate
from nl2sql_align.generation import load_generator
from nl2sql_align.paths import refuse_existing
from nl2sql_align.recipe import resolved_recipe_of


@dataclass
class Run:
    path: Path
    name: str
    stage: str
    train_end: dict[str, Any]
    recipe_path: Path | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)  # per question, in data order, once scored


def load_run(path: Path, name: str) -> Run:
    """Check a run folder and read what the comparison needs from it; a UserError says what is missing."""
    from nl2sql_align.plots import read_metrics

    if not path.is_dir():
        raise UserError(f"--runs {path}: no such folder")
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise UserError(
            f"--runs {path}: no metrics.jsonl in this folder; compare reads the training cost from it "
            "(give an output folder of sft, dpo, ppo, grpo or rloo)"
        )
    try:
        rows = read_metrics(metrics_path)
    except json.JSONDecodeError as e:
        raise UserError(f"--runs {path}: metrics.jsonl is not valid JSONL ({e})") from None
    ends = [r for r in rows if r.get("event") == "train_end"]
    if not ends:
        raise UserError(
            f"--runs {path}: metrics.jsonl has no train_end row (the run did not finish, or was trained by an "
            "older version); compare needs its training time, steps and memory"
        )
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise UserError(f"--runs {path}: no config.json or adapter_config.json, so no model to evaluate")
    stage = ends[-1].get("stage") or "?"
    if ends[-1].get("method") not in (None, stage):
        stage = f"{stage}/{ends[-1]['method']}"  # dpo/kto: the method a dpo run trained with
    if stage == "rm":
        raise UserError(
            f"--runs {path}: a reward model scores answers, it does not write SQL, so it has no EX; compare the "
            "policies trained with it (ppo with reward.model) instead"
        )
    return Run(path, name, stage, ends[-1], resolved_recipe_of(path), rows)


def run_names(paths: list[Path]) -> list[str]:
    """Folder names, made unique with the parent's name (then a number) where two runs share one."""
    names = [p.name or str(p) for p in paths]
    for i, p in enumerate(paths):
        if names.count(names[i]) > 1:
            names[i] = f"{p.parent.name}-{p.name}" if p.parent.name else p.name
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def machine() -> dict[str, Any]:
    """The machine this comparison ran on (where the evaluation happened)."""
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "gpu": gpu}


def main_curve_key(stage: str, rows: list[dict[str, Any]]) -> str | None:
    """The series that shows a run learning: the loss for sft/dpo/rm, the mean reward for grpo/rloo/ppo."""
    present = {k for r in rows if r.get("event") != "train_end" for k, v in r.items() if isinstance(v, (int, float))}
    order = ("reward", "rewards/execution/mean", "loss") if stage in ("grpo", "rloo", "ppo") else ("loss", "reward")
    return next((k for k in order if k in present), None)


def _peak_memory(end: dict[str, Any]) -> tuple[float | None, str]:
    if end.get("cuda_max_allocated_mb") is not None:
        return end["cuda_max_allocated_mb"], "CUDA"
    return end.get("peak_rss_mb"), "RSS"


def run_record(run: Run, summary: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    end = run.train_end
    peak, kind = _peak_memory(end)
    key = main_curve_key(run.stage, run.metrics)
    return {
        "name": run.name,
        "path": str(run.path),
        "stage": run.stage,
        "prompt_from": str(run.recipe_path) if run.recipe_path else "defaults (no recipe.resolved.toml)",
        "n": summary["n"],
        "ex": summary["ex"],
        "ex_complex": summary["ex_complex"]["ex"] if "ex_complex" in summary else None,
        "n_complex": summary["ex_complex"]["n"] if "ex_complex" in summary else 0,
        "executable": summary["executable"],
        "soft_f1": summary.get("soft_f1"),  # metric bird-f1 only
        "r_ves": summary.get("r_ves"),  # eval.ves_iterations only
        "agent_tool_calls": (summary.get("agent") or {}).get("mean_tool_calls"),  # eval.agent runs only
        "ex_by_hardness": {k: v["ex"] for k, v in summary.get("ex_by_hardness", {}).items()},
        "train_seconds": end.get("train_seconds"),
        "steps": end.get("steps"),
        "seconds_per_step": end.get("seconds_per_step"),
        "peak_memory_mb": peak,
        "peak_memory_kind": kind,
        "peak_rss_mb": end.get("peak_rss_mb"),
        "cuda_max_allocated_mb": end.get("cuda_max_allocated_mb"),
        "num_tokens": end.get("num_tokens"),
        "tokens_per_second": end.get("tokens_per_second"),
        "curve": key,
        "report": str(report_dir),
    }


# ---------------------------------------------------------------------------------------------------------
# Error bars and paired tests (nl2sql_align.stats): every run's EX with a bootstrap interval over questions, and
# every run against one baseline on the same questions.


def correct_vector(report_dir: Path) -> list[bool]:
    """A scored run's per-question verdicts, in data order, from the per_example.jsonl `evaluate` wrote."""
    rows = [json.loads(line) for line in (report_dir / "per_example.jsonl").read_text("utf-8").splitlines() if line]
    return [bool(r["correct"]) for r in sorted(rows, key=lambda r: r["index"])]


def pick_baseline(names: list[str], stages: list[str], baseline: str | None = None) -> int:
    """The index of the run the others are tested against: the one named `baseline` (compare --baseline), else
    the first sft run, else the first run."""
    if baseline is not None:
        if baseline not in names:
            raise UserError(f"--baseline {baseline!r}: no run of that name; the runs are {', '.join(names)}")
        return names.index(baseline)
    return next((i for i, st in enumerate(stages) if st.split("/")[0] == "sft"), 0)


def add_paired_stats(records: list[dict[str, Any]], vectors: list[list[bool]], base: int) -> None:
    """Set each record's "ex_ci" (95% percentile bootstrap over questions) and "vs_baseline": against the
    baseline `records[base]`, the EX difference in points ("diff") with its paired bootstrap 95% interval
    ("diff_ci"), the discordant questions ("wins": only this run right, "losses": only the baseline), the exact
    McNemar p ("p") and the word ("verdict": better / worse / no detectable difference; "baseline" on its own)."""
    from nl2sql_align.stats import BASELINE, bootstrap_ci, paired_comparison

    name = records[base]["name"]
    for i, (rec, vec) in enumerate(zip(records, vectors, strict=True)):
        rec["ex_ci"] = [round(x, 2) for x in bootstrap_ci(vec)]
        if i == base:
            rec["vs_baseline"] = {"baseline": name, "verdict": BASELINE}
            continue
        cmp = paired_comparison(vectors[base], vec)
        rec["vs_baseline"] = {
            "baseline": name,
            "diff": round(cmp["diff"], 2),
            "diff_ci": [round(x, 2) for x in cmp["diff_ci"]],
            "wins": cmp["wins"],
            "losses": cmp["losses"],
            "p": cmp["p"],
            "verdict": cmp["verdict"],
            # what a training minute of this run bought over the baseline: the question the user brings
            "per_minute": round(cmp["diff"] / (rec["train_seconds"] / 60), 3) if rec.get("train_seconds") else None,
        }


def stats_settings() -> dict[str, Any]:
    from nl2sql_align.stats import ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

    return {
        "interval": "95% percentile bootstrap over questions (paired for differences)",
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "test": "exact two-sided McNemar (binomial on the discordant questions)",
        "alpha": ALPHA,
    }


# ---------------------------------------------------------------------------------------------------------
# Tables: report.md has every column; the terminal has two narrower tables that fit 80 columns.


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def _fmt_ci(ci: list[float] | None) -> str:
    """ "[46.7, 62.7]": with a space, so a narrow terminal wraps it rather than cutting it."""
    return "-" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _memory_kinds(records: list[dict[str, Any]]) -> set[str]:
    return {r["peak_memory_kind"] for r in records if r["peak_memory_mb"] is not None}


def _memory(r: dict[str, Any], mixed: bool) -> str:
    from nl2sql_align.plots import MEMORY_UNITS, format_quantity

    if r["peak_memory_mb"] is None:
        return "-"
    return format_quantity(r["peak_memory_mb"], MEMORY_UNITS) + (f" ({r['peak_memory_kind']})" if mixed else "")


def _baseline_name(records: list[dict[str, Any]]) -> str | None:
    return next((r["vs_baseline"]["baseline"] for r in records if r.get("vs_baseline")), None)


def accuracy_cells(r: dict[str, Any]) -> list[str]:
    """EX %, its 95% CI, the difference to the baseline (points) and its CI, McNemar's p, the word."""
    vs = r.get("vs_baseline") or {}
    return [
        _fmt(r["ex"]),
        _fmt_ci(r.get("ex_ci")),
        "-" if vs.get("diff") is None else f"{vs['diff']:+.1f}",
        _fmt_ci(vs.get("diff_ci")),
        _fmt_p(vs.get("p")),
        vs.get("verdict", "-"),
    ]


def cost_cells(r: dict[str, Any], mixed: bool) -> list[str]:
    return [
        _fmt(r["train_seconds"]),
        _fmt(r["steps"], "d"),
        _fmt(r["seconds_per_step"], ".3f"),
        _memory(r, mixed),
        _fmt(r["tokens_per_second"], ".0f"),
    ]


def columns(records: list[dict[str, Any]]) -> list[str]:
    """report.md's columns."""
    base = _baseline_name(records) or "baseline"
    return [
        "run",
        "stage",
        "EX %",
        "EX 95% CI",
        f"Δ EX vs {base}",
        "Δ 95% CI",
        "McNemar p",
        f"vs {base}",
        "Δ EX / train min",
        "hard+ EX %",
        "exec %",
        "train s",
        "steps",
        "s/step",
        "peak mem",
        "tok/s",
    ]


def table_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """report.md's rows, one per run, in the order given (no ranking)."""
    mixed = len(_memory_kinds(records)) > 1  # runs from a GPU and a CPU side by side: say which is which
    return [
        [
            r["name"],
            r["stage"],
            *accuracy_cells(r),
            _fmt((r.get("vs_baseline") or {}).get("per_minute"), "+.2f"),
            _fmt(r["ex_complex"]),
            _fmt(r["executable"]),
            *cost_cells(r, mixed),
        ]
        for r in records
    ]


def table_notes(records: list[dict[str, Any]]) -> str:
    """What the columns measure, for under the table."""
    n = max((r["n_complex"] for r in records), default=0)
    kinds = _memory_kinds(records)
    memory = {"RSS": "the training process's peak RSS", "CUDA": "CUDA max allocated"}
    mem = memory.get(next(iter(kinds)), "") if len(kinds) == 1 else "CUDA max allocated on a GPU, else peak RSS"
    notes = ""
    base = _baseline_name(records)
    if base is not None:
        from nl2sql_align.stats import ALPHA, BOOTSTRAP_RESAMPLES

        notes = (
            f"CI: 95% percentile bootstrap over the questions ({BOOTSTRAP_RESAMPLES} resamples, fixed seed); "
            f"Δ: EX points minus {base}'s on the same questions, CI from a paired bootstrap; p: exact McNemar test "
            f"on the questions exactly one of the two gets right; better / worse: p < {ALPHA:g}, else no "
            "detectable difference; Δ EX / train min: Δ divided by the run's own training minutes (what its "
            "compute bought over the baseline); "
        )
    return notes + (
        f"hard+ EX: EX on the {n} questions of Spider's hard and extra levels; exec: executable SQL; peak mem: "
        f"{mem}; train s, steps, s/step, tok/s (tokens per second): from each run's train_end row"
    )


def result_tables(recs: list[dict[str, Any]]) -> list[str]:
    """The comparison table and the EX-per-level table, as markdown lines (report.md, the README's demo)."""
    cols = columns(recs)
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if i < 2 or c.startswith("vs ") else "---:" for i, c in enumerate(cols)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(recs)]
    lines += ["", table_notes(recs) + "."]
    levels = list(dict.fromkeys(k for r in recs for k in r["ex_by_hardness"]))
    if levels:
        lines += [
            "",
            "EX % per level:",
            "",
            "| run | " + " | ".join(levels) + " |",
            "|---|" + "|".join("---:" for _ in levels) + "|",
        ]
        lines += [
            f"| {r['name']} | " + " | ".join(_fmt(r["ex_by_hardness"].get(k)) for k in levels) + " |" for r in recs
        ]
    return lines


def _per_run_line(recs: list[dict[str, Any]], key: str, label: str, spec: str) -> list[str]:
    """One line listing each run's `key` beside the EX table, when any run has it."""
    if not any(r.get(key) is not None for r in recs):
        return []
    return ["", f"{label}: " + ", ".join(f"{r['name']} {_fmt(r.get(key), spec)}" for r in recs) + "."]


def soft_f1_lines(recs: list[dict[str, Any]]) -> list[str]:
    """Under --metric bird-f1: each run's mean Soft-F1 (BIRD mini-dev's partial credit) beside the EX above."""
    return _per_run_line(recs, "soft_f1", "Soft-F1 % (BIRD mini-dev, mean per question)", ".1f")


def r_ves_lines(recs: list[dict[str, Any]]) -> list[str]:
    """With eval.ves_iterations: each run's R-VES (BIRD mini-dev's timed efficiency score) beside the EX above."""
    return _per_run_line(recs, "r_ves", "R-VES (BIRD mini-dev, timed against the gold)", ".2f")


def agent_lines(recs: list[dict[str, Any]]) -> list[str]:
    """Agent runs (eval.agent): how many execute_sql calls each made per question before answering."""
    return _per_run_line(recs, "agent_tool_calls", "Tool calls per question (agent runs)", ".2f")


def write_markdown(summary: dict[str, Any], path: Path) -> None:
    from nl2sql_align.seeds import seed_markdown

    recs = summary["runs"]
    m = summary["machine"]
    lines = [
        f"# Comparison of {len(recs)} runs on {summary['data']}",
        "",
        f"Execution accuracy ({summary['metric']} semantics, greedy) on {summary['n']} examples of "
        f"`{summary['data']}`; each run is prompted with its own recipe's [data] settings. Training cost is read "
        "from each run's `metrics.jsonl` (`train_end` row), as measured where the run trained. Runs are listed "
        "in the order given, not ranked: a difference counts only where the test below the table finds one "
        f"(with {summary['n']} questions, one question is {100 / max(1, summary['n']):.2f} EX points).",
        "",
        *result_tables(recs),
        *soft_f1_lines(recs),
        *r_ves_lines(recs),
        *agent_lines(recs),
        *seed_markdown(summary),
        "",
        f"Machine (this comparison): {m['platform']}, Python {m['python']}, {m['cpus']} CPUs, {m['gpu']}.",
        "",
        f"Command: `{summary['command']}`",
        "",
        "Runs: " + ", ".join(f"{r['name']} = `{r['path']}` (per-example report: `runs/{r['name']}/`)" for r in recs),
        "",
        "Charts: `ex.png` (EX overall and per level), `cost.png` (training time, seconds per step, peak memory), "
        "`curves.png` (each run's main training curve).",
    ]
    lines += pipeline_lines(summary.get("pipeline"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def step_times(pipe: dict[str, Any]) -> str:
    """'sft 573 s, pairs 51 s, ...' (or 'sft reused') for a pipeline's steps."""
    return ", ".join(
        f"{r['name']} {r['seconds']:.0f} s" if r["seconds"] is not None else f"{r['name']} reused"
        for r in pipe["steps"]
    )


def pipeline_lines(pipe: dict[str, Any] | None) -> list[str]:
    """report.md's account of the steps that made the runs (compare --recipe)."""
    if not pipe:
        return []
    lines = [
        "",
        f"## Pipeline `{pipe['recipe']}`",
        "",
        f"Wall time {pipe['total_seconds']:.0f} s in all, of which {pipe['compare_seconds']:.0f} s scoring the runs "
        "above. A step's wall time includes loading, sampling and saving, beyond its training time.",
        "",
        "| step | command | recipe | output | status | wall time (s) |",
        "|---|---|---|---|---|---:|",
    ]
    lines += [
        f"| {r['name']} | {r['command']} | `{r['recipe']}` | `{r['output']}` | {r['status']} | {_fmt(r['seconds'])} |"
        for r in pipe["steps"]
    ]
    return lines


def terminal_tables(summary: dict[str, Any]) -> list:
    """The terminal's two rich tables, narrow enough for 80 columns without cutting a name or a number: names
    and figures never wrap; headers, bracketed intervals and the verdict wrap at spaces instead. First EX with
    its interval and the test against the baseline; then the stage, complex-question EX, executable rate and
    training cost. report.md has all of it in one table."""
    from rich.table import Table

    recs = summary["runs"]
    mixed = len(_memory_kinds(recs)) > 1
    base = _baseline_name(recs) or "baseline"

    def table(title: str, cols: list[tuple[str, str, bool]]) -> Table:
        t = Table(title=title, show_edge=False, pad_edge=False)
        for col, justify, wrap in cols:
            # A wrapping column keeps its longest word whole ("detectable", "[-26.7,").
            width = 10 if col == "verdict" else None
            t.add_column(col, justify=justify, no_wrap=not wrap, min_width=width)  # type: ignore[arg-type]
        return t

    acc = table(
        f"Compare on {summary['data']} (n={summary['n']}, {summary['metric']}); Δ, p, verdict: against {base}",
        [
            ("run", "left", False),
            ("EX %", "right", False),
            ("95% CI", "right", True),
            ("Δ EX", "right", False),
            ("Δ 95% CI", "right", True),
            ("p", "right", False),
            ("verdict", "left", True),
        ],
    )
    cost = table(
        "Stage, complex questions, executable SQL, training cost",
        [
            ("run", "left", False),
            ("stage", "left", False),
            ("hard+ EX %", "right", True),
            ("exec %", "right", True),
            ("train s", "right", True),
            ("s/step", "right", False),
            ("peak mem", "right", True),
            ("tok/s", "right", False),
        ],
    )
    for r in recs:
        ex, ci, diff, diff_ci, p, word = accuracy_cells(r)
        acc.add_row(r["name"], ex, ci, diff, diff_ci, p, word)
        train, _, per_step, mem, tps = cost_cells(r, mixed)
        cost.add_row(r["name"], r["stage"], _fmt(r["ex_complex"]), _fmt(r["executable"]), train, per_step, mem, tps)
    m = summary["machine"]
    cost.caption = f"{table_notes(recs)}\n{m['platform']}, {m['cpus']} CPUs, {m['gpu']}"
    pipe = summary.get("pipeline")
    if pipe:
        cost.caption += (
            f"\npipeline {pipe['total_seconds']:.0f} s: {step_times(pipe)}, compare {pipe['compare_seconds']:.0f} s"
        )
    from nl2sql_align.seeds import seed_table

    seeds = seed_table(summary)
    return [acc, cost] if seeds is None else [acc, seeds, cost]


def print_table(summary: dict[str, Any], console=None) -> None:
    from rich.console import Console

    console = console or Console()
    for table in terminal_tables(summary):
        console.print(table)


def compare_runs(
    paths: list[Path],
    data: str,
    report: Path,
    *,
    limit: int | None = None,
    metric: str | None = None,
    db_dir: str | None = None,
    command: str = "nl2sql-align compare",
    names: list[str] | None = None,
    overwrite: bool = False,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Score each run on `data` and write the report under `report` (write_comparison); returns the summary.
    `baseline`: the name of the run the others are tested against (default: the first sft run, else the first)."""
    refuse_existing(report, overwrite, "--report")
    summary, runs = score_runs(
        paths, data, report, limit=limit, metric=metric, db_dir=db_dir, command=command, names=names, baseline=baseline
    )
    write_comparison(summary, runs, report)
    return summary


def run_recipes(runs: list[Run], metric: str | None) -> tuple[list, str]:
    """Each run's own recipe (its prompt and [eval] settings, as `eval --model DIR` reads it); --metric, when
    given, overrides eval.metric for all of them. One comparison needs one metric: runs whose recipes disagree
    need --metric."""
    overrides = eval_overrides(metric=metric)
    recipes = [eval_recipe(str(r.path), None, overrides)[0] for r in runs]
    metrics = {r.eval.metric for r in recipes}
    if len(metrics) > 1:
        raise UserError(
            f"the runs were trained with different eval.metric values ({', '.join(sorted(metrics))}): pass --metric "
            "spider, bird or bird-f1 to score them all the same way"
        )
    return recipes, metrics.pop()


def score_runs(
    paths: list[Path],
    data: str,
    report: Path,
    *,
    limit: int | None = None,
    metric: str | None = None,
    db_dir: str | None = None,
    command: str = "nl2sql-align compare",
    names: list[str] | None = None,
    baseline: str | None = None,
) -> tuple[dict[str, Any], list[Run]]:
    """Evaluate each run on `data` (each run's per-example report under report/runs/<name>/) with the one
    `evaluate`, then test each against the baseline run on the same questions (`add_paired_stats`; `baseline`
    names it, default the first sft run, else the first); returns the summary and the runs, for write_comparison."""
    from nl2sql_align.sql.results import METRICS

    if metric not in (None, *METRICS):
        raise UserError(f"--metric {metric!r}: choose {', '.join(METRICS)}")
    if not paths:
        raise UserError("--runs: give at least one output folder")
    names = names or run_names(paths)
    runs = [load_run(p, n) for p, n in zip(paths, names, strict=True)]  # all checked before any model loads
    base = pick_baseline(names, [r.stage for r in runs], baseline)
    recipes, metric = run_recipes(runs, metric)
    examples = load_examples(data, db_dir=db_dir, limit=limit)
    records = []
    # Execution results shared between the runs: the gold SQL runs once, not once per run, and so does a query
    # that several models wrote. Keyed by the sandbox limits that can change a result.
    memos: dict[tuple, dict] = {}
    for run, recipe in zip(runs, recipes, strict=True):
        generator = load_generator(str(run.path), recipe)
        out_dir = report / "runs" / run.name
        memo = memos.setdefault((recipe.eval.timeout,), {})
        try:
            summary, _ = evaluate(
                examples, recipe, generator=generator, report_dir=out_dir, print_table=False, memo=memo
            )
        finally:
            generator.close()  # one model in memory at a time
        run.correct = correct_vector(out_dir)
        records.append(run_record(run, summary, out_dir))
    add_paired_stats(records, [r.correct for r in runs], base)
    summary = {
        "data": data,
        "limit": limit,
        "metric": metric,
        "n": records[0]["n"],
        "command": command,
        "machine": machine(),
        "baseline": records[base]["name"],
        "stats": stats_settings(),
        "runs": records,
    }
    return summary, runs


def write_comparison(summary: dict[str, Any], runs: list[Run], report: Path) -> None:
    """report.md, summary.json, ex.png, cost.png and curves.png under `report`."""
    from nl2sql_align.plots import plot_compare_cost, plot_compare_curves, plot_compare_ex

    records, metric = summary["runs"], summary["metric"]
    report.mkdir(parents=True, exist_ok=True)
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_markdown(summary, report / "report.md")
    data = summary["data"]
    short = data if len(data) <= 30 else "..." + data[-27:]  # a long path would run off the chart
    plot_compare_ex(records, report / "ex.png", f"EX ({metric}) on {short}, n={summary['n']}")
    plot_compare_cost(records, report / "cost.png")
    plot_compare_curves(
        [(r.name, r.stage, r.metrics) for r in runs], [rec["curve"] for rec in records], report / "curves.png"
    )


def compare_command(
    runs: list[Path] | None,
    extra: list[str],
    recipe: Path | None,
    *,
    data: str | None,
    report: Path | None,
    limit: int | None,
    metric: str | None,
    db_dir: str | None,
    overrides: list[str] | None,
    overwrite: bool,
    reuse: bool,
    resume: bool,
    baseline: str | None = None,
    seeds: int | None = None,
) -> dict[str, Any]:
    """`nl2sql-align compare`: --runs DIR... scores trained outputs; --recipe PIPELINE trains, then compares
    (options given on the command line override the pipeline's [compare]); `baseline` (--baseline NAME) names the
    run the others are tested against. The summary gains `report`."""
    from nl2sql_align.pipeline import run_pipeline
    from nl2sql_align.stages.runner import resolved_command

    if any(a.startswith("-") for a in extra):
        raise UserError(f"compare: unknown option(s) {' '.join(a for a in extra if a.startswith('-'))}")
    if (recipe is None) == (runs is None):
        raise UserError(
            "compare: give either --runs DIR... (trained outputs) or --recipe PIPELINE.toml (train, then compare)"
        )
    if recipe is not None:
        if extra:
            raise UserError(f"compare --recipe: unexpected argument(s) {' '.join(extra)}")
        flags = {"data": data, "limit": limit, "metric": metric, "db_dir": db_dir, "baseline": baseline, "seeds": seeds}
        sets = [*(overrides or []), *(f"compare.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None)]
        summary = run_pipeline(
            recipe, sets, report=report, overwrite=overwrite, reuse=reuse, resume=resume, command=resolved_command()
        )
        return {**summary, "report": summary["pipeline"]["report"]}
    if overrides or resume or not reuse or seeds is not None:
        raise UserError("compare --runs: --set, --seeds, --no-reuse and --resume apply to --recipe pipelines")
    if data is None:
        raise UserError("compare --runs: --data is required (the eval set every run is scored on, e.g. demo:dev)")
    report = report or Path("out/compare")
    summary = compare_runs(
        [*runs, *map(Path, extra)],
        data,
        report,
        limit=limit,
        metric=metric,
        db_dir=db_dir,
        command=resolved_command(),
        overwrite=overwrite,
        baseline=baseline,
    )
    return {**summary, "report": str(report)}
