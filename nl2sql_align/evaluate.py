"""Evaluation: execution scoring, metrics, reports (generation lives in `nl2sql_align.generation`).

Scoring follows the official semantics (`spider`: test-suite execution match; `bird`: set equality; `bird-f1`:
BIRD's set equality plus BIRD mini-dev's Soft-F1 per example), with gold and prediction executed on the same
engine, in the sandbox, each on its own cursor, and gold results computed once per (database, gold SQL) before
any prediction runs.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nl2sql_align.data import Example, examples_for, extract_sql
from nl2sql_align.errors import UserError, failing_gold_error
from nl2sql_align.generation import Generator, load_generator
from nl2sql_align.paths import refuse_existing
from nl2sql_align.predictions import format_for_path, read_predictions
from nl2sql_align.predictions import write_predictions as save_predictions
from nl2sql_align.recipe import Recipe, load_recipe, resolved_recipe_of
from nl2sql_align.sql import ExecResult, QueryRewriter, SQLExecutor, verdict
from nl2sql_align.sql.results import r_ves, soft_f1, ves_reward
from nl2sql_align.stats import bootstrap_ci
from nl2sql_align.stdio import is_stdio

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Scoring


def run_once(executor: SQLExecutor, jobs: list[tuple], memo: dict | None = None) -> list[ExecResult]:
    """Results aligned with `jobs`, each distinct (database, SQL, dialect) executed once: golds, predictions and
    samples repeat, and every execution costs a guard parse and a worker round trip. `memo` carries results
    across calls (compare scores several models on the same gold SQL, and they often write the same queries);
    the databases are read-only, so a query's result does not change between calls."""
    done = memo if memo is not None else {}
    todo = [j for j in dict.fromkeys(jobs) if j not in done]
    if todo:
        done.update(zip(todo, executor.execute_many(todo, progress=len(todo) > 200), strict=True))
    return [done[j] for j in jobs]


def gold_results(
    examples: list[Example], executor: SQLExecutor, rewriter: QueryRewriter, memo: dict | None = None
) -> tuple[list[ExecResult], list[str]]:
    """Execute each distinct (database, gold SQL) once, as the metric runs it. Returns results aligned with
    examples, and the errors."""
    aligned = run_once(executor, [rewriter.job(ex.db, ex.sql, ex.dialect) for ex in examples], memo)
    errors = [
        f"{ex.source or ex.id}: gold SQL fails on {ex.db.path}: {r.error}"
        for ex, r in zip(examples, aligned, strict=True)
        if not r.ok
    ]
    return aligned, errors


def score_predictions(
    examples: list[Example],
    predictions: list[str],
    *,
    metric: str = "spider",
    keep_distinct: bool = False,
    executor: SQLExecutor | None = None,
    skip_bad_gold: bool = False,
    raw_outputs: list[str] | None = None,
    pred_dialect: str | None = None,
    candidates: list[list[str]] | None = None,
    memo: dict | None = None,
) -> list[dict[str, Any]]:
    """One row per example: index, id, db, gold, pred, correct, executable, error (and hardness, raw output);
    under metric "bird-f1" also soft_f1, BIRD mini-dev's Soft-F1 of the prediction (0.0 when it failed).

    With `candidates` (sampled SQL, a list per example), every candidate is executed too (each distinct
    (database, SQL) once) and the row gains the self-consistency answer (`vote`): voted_pred, voted_index,
    voted_correct, voted_executable, and `candidates`, one {sql, executable, error, correct, group,
    group_size} per candidate in sampling order (group: the candidate's result group, numbered by first
    appearance; None and group_size 0 when it failed). The vote never sees the gold; `correct` is scored after.
    `memo`: execution results shared across calls (run_once)."""
    if len(predictions) != len(examples):
        raise UserError(f"{len(predictions)} predictions for {len(examples)} examples: they must align one to one")
    if candidates is not None and len(candidates) != len(examples):
        raise UserError(f"candidates for {len(candidates)} examples, data has {len(examples)}")
    own = executor is None
    executor = executor or SQLExecutor()
    # One rewrite cache for golds and predictions: a correct prediction is often the gold's text.
    rewriter = QueryRewriter(keep_distinct, metric)
    try:
        golds, gold_errors = gold_results(examples, executor, rewriter, memo)
        if gold_errors and not skip_bad_gold:
            raise failing_gold_error(
                gold_errors,
                "those examples cannot be scored",
                "Fix the data, or pass --skip-bad-gold to leave those examples out.",
            )

        # pred_dialect: the dialect predictions are written in (None: each database's own); sqlglot transpiles.
        # Greedy predictions and sampled candidates in one batch: a greedy answer is often among the samples.
        jobs = [rewriter.job(ex.db, p, pred_dialect) for ex, p in zip(examples, predictions, strict=True)]
        for ex, cs in zip(examples, candidates or [], strict=False):
            jobs += [rewriter.job(ex.db, c, pred_dialect) for c in cs]
        results = iter(run_once(executor, jobs, memo))
        preds = [next(results) for _ in examples]
        cand_results = [[next(results) for _ in cs] for cs in candidates] if candidates is not None else None
    finally:
        if own:
            executor.close()
    rows = []
    for i, (ex, pred_sql, g, p) in enumerate(zip(examples, predictions, golds, preds, strict=True)):
        if not g.ok:
            continue  # only reachable with skip_bad_gold
        correct = verdict(g, p, ex.sql, metric)
        row = {
            "index": i,
            "id": ex.id,
            "db": ex.db_id,
            "hardness": ex.hardness,
            "question": ex.question,
            "gold": ex.sql,
            "pred": pred_sql,
            "correct": bool(correct),
            "executable": p.ok,
            "error": p.error,
        }
        if metric == "bird-f1":
            row["soft_f1"] = soft_f1(g, p)
        if ex.dialect:  # the gold's dialect, so its Spider level is read the way it executes
            row["dialect"] = ex.dialect
        if raw_outputs is not None:
            row["output"] = raw_outputs[i]
        if cand_results is not None:
            row.update(_voted_fields(ex, candidates[i], cand_results[i], g, metric))
        rows.append(row)
    return rows


def add_ves_rewards(
    rows: list[dict[str, Any]],
    examples: list[Example],
    rewriter: QueryRewriter,
    iterations: int,
    pred_dialect: str | None = None,
    timeout: float = 5.0,
) -> None:
    """BIRD mini-dev's R-VES inputs (evaluation_ves.py) on each scored row: a correct prediction and its gold are
    run `iterations` times each, alternately, one query at a time in one sandbox worker (two queries timed side
    by side would slow each other); `time_ratio` is gold time / prediction time per repetition (their mean) and
    `ves_reward` the bucketed reward of `ves_reward` (0 for a wrong prediction, or when a timed run fails). The
    verdict is the row's own, so R-VES never disagrees with EX about what is right; under `--metric bird` it is
    the official one. Timings are wall times inside the worker, of the SQL as scored, on whatever else the
    machine is doing: a busy machine moves the ratios, not the verdicts."""
    timed = [r for r in rows if r["correct"]]
    jobs: list[tuple] = []
    for r in timed:
        ex = examples[r["index"]]
        jobs += [rewriter.job(ex.db, r["pred"], pred_dialect), rewriter.job(ex.db, ex.sql, ex.dialect)] * iterations
    results: Iterator[ExecResult] = iter([])
    if jobs:
        with SQLExecutor(workers=1, timeout=timeout) as timer:
            results = iter(timer.execute_many(jobs, progress=len(jobs) > 200))
    for r in rows:
        r["ves_reward"], r["time_ratio"] = 0.0, None
    for r in timed:
        pairs = [(next(results), next(results)) for _ in range(iterations)]
        if not all(p.ok and g.ok for p, g in pairs):
            continue  # the official script scores an exception or a timeout as 0
        ratios = [g.elapsed / max(p.elapsed, 1e-9) for p, g in pairs]
        r["ves_reward"], r["time_ratio"] = ves_reward(ratios), round(sum(ratios) / len(ratios), 4)


def _voted_fields(
    ex: Example, sqls: list[str], results: list[ExecResult], gold: ExecResult, metric: str
) -> dict[str, Any]:
    groups = result_groups(results, metric)
    i, sizes = _pick(groups)
    cands = [
        {
            "sql": sql,
            "executable": r.ok,
            "error": r.error,
            "correct": verdict(gold, r, ex.sql, metric),
            "group": k,
            "group_size": sizes[k] if k is not None else 0,
        }
        for sql, r, k in zip(sqls, results, groups, strict=True)
    ]
    chosen = cands[i] if cands else {"sql": "", "executable": False, "correct": False}
    return {
        "voted_index": i,
        "voted_pred": chosen["sql"],
        "voted_correct": chosen["correct"],
        "voted_executable": chosen["executable"],
        "candidates": cands,
    }


# ---------------------------------------------------------------------------------------------------------
# Self-consistency (execution-based majority vote, as OmniSQL)


def result_key(result: ExecResult, metric: str = "spider") -> Hashable | None:
    """What two candidates must share to fall in one vote group; None when the candidate failed.

    Spider: the multiset of rows (order-insensitive, duplicates count, like the metric's comparison without an
    ORDER BY) plus whether the result was cut at the row cap (the metric never matches a cut result with an uncut
    one). BIRD (bird, bird-f1): the set of rows, as its metric. Column order matters in both: the Spider metric's
    column permutation search is not a hashable equivalence, and two results that only permute columns are rare."""
    if not result.ok:
        return None
    rows = result.rows or []
    try:
        hash(tuple(rows))
    except TypeError:  # a cell holding a list or map (DuckDB LIST/STRUCT): group on its text instead
        rows = [tuple(repr(v) for v in row) for row in rows]
    if metric != "spider":  # bird, bird-f1: BIRD's sets
        return frozenset(rows)
    return frozenset(Counter(rows).items()), bool(result.truncated)


def result_groups(results: Sequence[ExecResult], metric: str = "spider") -> list[int | None]:
    """Each candidate's group number (groups numbered in order of first appearance), None where it failed."""
    ids: dict[Hashable, int] = {}
    out: list[int | None] = []
    for r in results:
        key = result_key(r, metric)
        out.append(None if key is None else ids.setdefault(key, len(ids)))
    return out


def vote(candidates: Sequence[str], results: Sequence[ExecResult], metric: str = "spider") -> int:
    """Index of the self-consistency answer among `candidates` (sampling order), given their execution results.

    Candidates that fail are dropped; the rest are grouped by result (`result_key`); the answer is the first
    member of the largest group, ties going to the group whose first member was sampled earliest. When every
    candidate fails, the answer is candidate 0. The gold plays no part."""
    if len(candidates) != len(results):
        raise ValueError(f"{len(candidates)} candidates but {len(results)} results")
    return _pick(result_groups(results, metric))[0]


def _pick(groups: list[int | None]) -> tuple[int, Counter]:
    """(the voted index, each group's size) from the candidates' group numbers; see `vote`."""
    sizes = Counter(k for k in groups if k is not None)
    if not sizes:
        return 0, sizes
    best = min(sizes, key=lambda k: (-sizes[k], k))  # k is the order of first appearance
    return groups.index(best), sizes


def example_level(row: dict[str, Any]) -> str:
    """The level a report groups a scored row under: the data's own label when it has one (BIRD's difficulty:
    simple/moderate/challenging, or a `hardness` field), else the Spider level of the gold SQL
    (`nl2sql_align.sql.hardness`); "unknown" when sqlglot cannot parse the gold SQL."""
    from nl2sql_align.sql.hardness import level_of

    return level_of(row.get("hardness"), row["gold"], row.get("dialect"))


def add_levels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set each row's "level" (see `example_level`) where it is not set yet; returns the same rows."""
    for r in rows:
        if not r.get("level"):
            r["level"] = example_level(r)
    return rows


def _level_order(level: str) -> tuple[int, str]:
    from nl2sql_align.sql.hardness import BIRD_LEVELS, SPIDER_LEVELS, UNKNOWN

    known = SPIDER_LEVELS + BIRD_LEVELS
    return (known.index(level), "") if level in known else (len(known) + (level == UNKNOWN), level)


def add_sample_counts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set "samples_correct" (how many of the row's sampled candidates the verdict counts correct) on each row
    that has candidates (eval with [eval] samples); returns the same rows."""
    for r in rows:
        if "candidates" in r:
            r["samples_correct"] = sum(bool(c["correct"]) for c in r["candidates"])
    return rows


def pass_at_k_by_k(rows: list[dict[str, Any]]) -> dict[str, float]:
    """{"1": pass@1, "2": pass@2, ...} in percent (`stats.pass_k_values` of the sample count), averaged over the
    rows, from each row's candidates; {} when a row has no candidates."""
    from nl2sql_align.stats import mean_pass_at_k, pass_k_values

    if not rows or any(not r.get("candidates") for r in rows):
        return {}
    counts = [(len(r["candidates"]), sum(bool(c["correct"]) for c in r["candidates"])) for r in rows]
    n = min(n for n, _ in counts)
    return {str(k): round(100.0 * mean_pass_at_k(counts, k), 2) for k in pass_k_values(n)}


def summarize(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """EX and executable rate (percent) overall, per level ("ex_by_hardness"), for the complex Spider levels
    hard + extra together ("ex_complex", when there are any) and per database ("ex_by_db"). With sampled
    candidates (eval samples), each group also has the voted EX ("ex_voted", maj@N) and "pass_at_k" ({k: percent},
    `pass_at_k_by_k`). Under metric "bird-f1" each group also has "soft_f1", the mean Soft-F1 in percent; with
    timed rows (eval --ves, `add_ves_rewards`) "r_ves", BIRD mini-dev's R-VES. Fills in
    each row's "level" (`add_levels`) and "samples_correct" (`add_sample_counts`)."""
    from nl2sql_align.sql.hardness import COMPLEX_LEVELS

    add_levels(rows)
    add_sample_counts(rows)
    n = len(rows)

    def pct(xs) -> float:
        xs = list(xs)
        return round(100.0 * sum(xs) / len(xs), 2) if xs else 0.0

    voted = bool(rows) and all("voted_correct" in r for r in rows)
    soft = bool(rows) and all("soft_f1" in r for r in rows)
    ves = bool(rows) and all("ves_reward" in r for r in rows)
    overall_pass = pass_at_k_by_k(rows)
    sampled = bool(overall_pass)

    def group(rs: list[dict[str, Any]]) -> dict[str, Any]:
        g = {"n": len(rs), "ex": pct(r["correct"] for r in rs), "executable": pct(r["executable"] for r in rs)}
        if soft:
            g["soft_f1"] = pct(r["soft_f1"] for r in rs)
        if voted:
            g["ex_voted"] = pct(r["voted_correct"] for r in rs)
        if sampled:
            g["pass_at_k"] = pass_at_k_by_k(rs)
        if ves:
            g["r_ves"] = round(r_ves([r["ves_reward"] for r in rs]), 2)
        return g

    out: dict[str, Any] = {
        "metric": metric,
        "n": n,
        "ex": pct(r["correct"] for r in rows),
        "executable": pct(r["executable"] for r in rows),
    }
    if rows:  # the same interval compare gives every run: an accuracy without one invites reading noise as a result
        out["ex_ci"] = [round(x, 2) for x in bootstrap_ci([bool(r["correct"]) for r in rows])]
    if soft:
        out["soft_f1"] = pct(r["soft_f1"] for r in rows)
    if voted:
        out["ex_voted"] = pct(r["voted_correct"] for r in rows)
    if sampled:
        out["pass_at_k"] = overall_pass
    if ves:  # BIRD mini-dev's R-VES: the mean of sqrt(reward) x 100 over all questions, wrong ones counting 0
        out["r_ves"] = round(r_ves([r["ves_reward"] for r in rows]), 2)
    by_level: dict[str, list] = defaultdict(list)
    by_db: dict[str, list] = defaultdict(list)
    for r in rows:
        by_level[r["level"]].append(r)
        if r.get("db"):
            by_db[r["db"]].append(r)
    if by_level:
        out["ex_by_hardness"] = {k: group(by_level[k]) for k in sorted(by_level, key=_level_order)}
    complex_rows = [r for r in rows if r["level"] in COMPLEX_LEVELS]
    if complex_rows:
        out["ex_complex"] = group(complex_rows)
    if by_db:
        out["ex_by_db"] = {k: group(v) for k, v in sorted(by_db.items())}
    return out


def write_report(rows: list[dict[str, Any]], summary: dict[str, Any], report_dir: Path) -> None:
    """per_example.jsonl (each row with its level, and with samples its "samples_correct"), summary.json, ex.png
    (EX per level), ex_by_db.png, and with samples pass_at_k.png (pass@k against greedy EX and maj@N)."""
    from nl2sql_align.plots import plot_ex_by_level, plot_ex_comparison, plot_pass_at_k

    add_levels(rows)
    add_sample_counts(rows)
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / "per_example.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot_ex_by_level(summary, report_dir / "ex.png")
    dbs = summary.get("ex_by_db")
    if dbs:
        plot_ex_comparison(
            [*dbs],
            [g["ex"] for g in dbs.values()],
            report_dir / "ex_by_db.png",
            f"EX ({summary['metric']}) per database, n={summary['n']}",
        )
    if summary.get("pass_at_k"):
        plot_pass_at_k(summary, report_dir / "pass_at_k.png")


def print_summary(summary: dict[str, Any], title: str = "Execution accuracy") -> None:
    """Two tables: EX per level (with hard + extra as "complex"), then EX per database. With samples, greedy
    EX, maj@N (the voted EX) and pass@k side by side; under metric "bird-f1", Soft-F1 beside EX."""
    from rich.console import Console
    from rich.table import Table

    voted = "ex_voted" in summary
    soft = "soft_f1" in summary
    samples = summary.get("samples", "?")
    ks = list(summary.get("pass_at_k") or {})

    def new_table(title: str, first: str) -> Table:
        table = Table(title=title)
        table.add_column(first, overflow="fold")
        # Short headers with samples (percent said in the caption), so the pass@k columns fit 80 columns.
        cols = ["n", "EX %", *(["Soft-F1 %"] if soft else []), "executable %"]
        if voted or ks:
            cols = ["n", "EX", *(["F1"] if soft else []), *([f"maj@{samples}"] if voted else [])]
            cols += [*(f"pass@{k}" for k in ks), "exec"]
        for col in cols:
            table.add_column(col, justify="right", overflow="fold")
        return table

    def add(table: Table, name: str, g: dict[str, Any], style: str | None = None) -> None:
        executable = f"{g['executable']:.1f}" if "executable" in g else ""
        cells = [str(g["n"]), f"{g['ex']:.1f}"]
        if soft:
            cells.append(f"{g['soft_f1']:.1f}" if "soft_f1" in g else "")
        if voted:
            cells.append(f"{g['ex_voted']:.1f}" if "ex_voted" in g else "")
        pass_at = g.get("pass_at_k") or {}
        cells += [f"{pass_at[k]:.1f}" if k in pass_at else "" for k in ks]
        table.add_row(name, *cells, executable, style=style)

    console = Console()
    levels = new_table(title, "level")
    add(levels, "all", summary, style="bold")
    for k, v in summary.get("ex_by_hardness", {}).items():
        add(levels, k, v)
    if "ex_complex" in summary:
        add(levels, "complex (hard+extra)", summary["ex_complex"], style="italic")
    levels.caption = f"metric: {summary['metric']}"
    if soft:
        levels.caption += " (EX: set equality; Soft-F1: BIRD mini-dev's, mean per question)"
    if summary.get("ex_ci") and summary.get("n"):
        lo, hi = summary["ex_ci"]
        levels.caption += f"; EX 95% CI [{lo:.1f}, {hi:.1f}] (bootstrap over the {summary['n']} questions)"
    agent = summary.get("agent") or {}
    if "mean_tool_calls" in agent:
        levels.caption += (
            f"; agent: {agent['mean_tool_calls']:.2f} tool calls and {agent['mean_assistant_turns']:.2f} turns "
            f"per question (at most {agent['max_turns']} rounds of calls)"
        )
    if "r_ves" in summary:
        levels.caption += (
            f"; R-VES {summary['r_ves']:.2f} (BIRD mini-dev's, {summary.get('ves_iterations', '?')} timed runs of each"
            " correct prediction and its gold; per level: "
            + ", ".join(f"{k} {v['r_ves']:.2f}" for k, v in summary.get("ex_by_hardness", {}).items() if "r_ves" in v)
            + ")"
        )
    if voted or ks:
        levels.caption += "; all figures in percent; exec: executable" + ("; F1: Soft-F1" if soft else "")
    if voted:
        levels.caption += (
            f"; EX: greedy; maj@{samples}: the voted EX, the majority of {samples} samples at temperature "
            f"{summary.get('temperature')} by execution result"
        )
    if ks:
        levels.caption += f"; pass@k: unbiased estimate (Chen et al. 2021) from the {samples} samples"
    console.print(levels)
    if summary.get("ex_by_db"):
        dbs = new_table("EX per database", "database")
        for k, v in summary["ex_by_db"].items():
            add(dbs, k, v)
        console.print(dbs)


def check_self_consistency(e) -> None:
    """An [eval] section's self-consistency settings (eval --samples/--temperature set them), checked before a
    model loads."""
    if e.samples is not None:
        if e.samples < 1:
            raise UserError(
                f"eval.samples (--samples) = {e.samples}: give 1 or more (or leave it unset for greedy only)"
            )
        if e.temperature <= 0:
            raise UserError(
                f"eval.temperature (--temperature) = {e.temperature}: self-consistency samples need a temperature above 0"
            )


def model_predictions(
    generator: Generator, examples, recipe, agent_facts: list[dict] | None = None
) -> tuple[list[str], list[str], list[list[str]] | None]:
    """(raw greedy outputs, their SQL, sampled SQL candidates per question or None): what a model answers under
    a recipe's [data] prompt and [eval] settings (`eval.samples` adds the self-consistency candidates).
    Under eval.agent, `agent_facts` (a list) receives each question's tool_calls and turns."""
    e = recipe.eval
    check_self_consistency(e)
    if e.agent:  # the [agent] loop: tool calls on the question's database, then the answer (nl2sql_align/agent.py)
        from nl2sql_align.agent import agent_outputs

        outputs, sqls, facts = agent_outputs(generator, examples, recipe)
        if agent_facts is not None:
            agent_facts.extend(facts)
        return outputs, sqls, None
    prompt = {
        "schema": recipe.data.schema,
        "system_prompt": recipe.data.system_prompt,
        "max_new_tokens": e.max_new_tokens,
        "batch_size": e.batch_size,
    }
    outputs = [outs[0] for outs in generator.complete(examples, **prompt)]
    candidates = None
    if e.samples is not None:
        sampled = generator.complete(
            examples, num_samples=e.samples, temperature=e.temperature, seed=recipe.seed, **prompt
        )
        candidates = [[extract_sql(o) for o in outs] for outs in sampled]
    return outputs, [extract_sql(o) for o in outputs], candidates


def eval_recipe(model: str | None, recipe: Path | None, overrides: list[str] | None = None) -> tuple[Recipe, str]:
    """The recipe an evaluation uses, and where it came from: `recipe` when given, else the model folder's own
    `recipe.resolved.toml` (the prompt, schema format, system prompt and [eval] settings it was trained with;
    a mid-run checkpoint's is its run's), else the defaults. `overrides` (--set and the eval flags) apply on top,
    as everywhere else."""
    if recipe is not None:
        source = str(recipe)
    elif model is not None and (recipe := resolved_recipe_of(model)) is not None:
        source = str(recipe)
    elif model is not None:
        source = "defaults (no --recipe, and the model folder has no recipe.resolved.toml)"
    else:
        source = "defaults (no --recipe)"
    return load_recipe(recipe, overrides), source


def eval_flag_overrides(model: str | None, overrides: list[str] | None, **flags: Any) -> list[str]:
    """`--set` items plus the eval flags as [eval] overrides; generation flags need a model to generate with."""
    for flag in ("samples", "backend", "temperature", "agent"):
        if flags.get(flag) is not None and model is None:
            raise UserError(f"--{flag} needs --model: it sets how the model generates")
    return [*(overrides or []), *eval_overrides(**flags)]


def eval_overrides(**flags: Any) -> list[str]:
    """`--set eval.KEY=VALUE` for each eval flag given on the command line (None: not given). Flags are
    overrides of [eval] keys, never parallel defaults: an unset flag leaves the recipe's value."""
    return [f"eval.{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]


def evaluate(
    examples: list[Example],
    recipe: Recipe,
    *,
    generator: Generator | None = None,
    predictions: list[str] | None = None,
    report_dir: Path | None = None,
    title: str = "eval",
    print_table: bool = True,
    memo: dict | None = None,
    skip_bad_gold: bool = False,
    pred_dialect: str | None = None,
    info: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The one evaluation: generate with `generator` (greedy, plus [eval] samples) or take `predictions`, score
    them under the recipe's [eval] metric, keep_distinct and sandbox settings, write the report, print the table.
    Used by `eval`, after training, by `compare` and the pipeline (compare shares `memo`, execution results,
    between the models it scores). `info` goes into the summary (e.g. which recipe was used). Returns the summary
    and the predictions scored."""
    if (generator is None) == (predictions is None):
        raise UserError("give exactly one of --model (generate) or --predictions (score a file)")
    e = recipe.eval
    outputs = candidates = None
    facts: list[dict] = []
    if generator is not None:
        outputs, predictions, candidates = model_predictions(generator, examples, recipe, facts)
    with SQLExecutor(workers=e.workers, timeout=e.timeout) as ex:
        rows = score_predictions(
            examples,
            predictions,
            metric=e.metric,
            keep_distinct=e.keep_distinct,
            executor=ex,
            skip_bad_gold=skip_bad_gold,
            raw_outputs=outputs,
            pred_dialect=pred_dialect,
            candidates=candidates,
            memo=memo,
        )
        if e.ves_iterations:
            add_ves_rewards(rows, examples, QueryRewriter(e.keep_distinct, e.metric), e.ves_iterations, pred_dialect,
                            timeout=e.timeout)  # fmt: skip
    if facts:  # per question; rows may skip questions whose gold fails (skip_bad_gold), so match by index
        for row in rows:
            row.update(facts[row["index"]])
    summary = summarize(rows, e.metric)
    if e.ves_iterations:
        summary["ves_iterations"] = e.ves_iterations
    summary.update(keep_distinct=e.keep_distinct, timeout=e.timeout, **(info or {}))
    if generator is not None:
        summary["backend"] = generator.backend
        if e.agent:
            from nl2sql_align.recipe import AgentSection

            summary["agent"] = {"max_turns": (recipe.agent or AgentSection()).max_turns}
            if facts and rows:  # how much the model looked before answering, over the questions scored
                for key, name in (("tool_calls", "mean_tool_calls"), ("assistant_turns", "mean_assistant_turns")):
                    summary["agent"][name] = round(sum(r[key] for r in rows) / len(rows), 3)
    if e.samples is not None:
        summary.update(samples=e.samples, temperature=e.temperature)
    if report_dir is not None:
        write_report(rows, summary, report_dir)
    if print_table:
        print_summary(summary, title)
    return summary, predictions


def check_min_ex(summary: dict[str, Any], min_ex: float | None) -> bool:
    """`eval --min-ex`: False (the command exits 1) when EX is below the threshold, saying so on stderr."""
    if min_ex is None or summary["ex"] >= min_ex:
        return True
    log.error("EX %.2f%% is below --min-ex %g (n=%d)", summary["ex"], min_ex, summary["n"])
    return False


def eval_command(
    data: str,
    report: Path | None,
    *,
    model: str | None = None,
    predictions: Path | None = None,
    recipe: Path | None = None,
    overrides: list[str] | None = None,
    write_predictions: Path | None = None,
    limit: int | None = None,
    db_dir: str | None = None,
    skip_bad_gold: bool = False,
    dialect: str | None = None,
    overwrite: bool = False,
    json_: bool = False,
) -> dict[str, Any]:
    """`nl2sql-align eval`: everything is checked (report folder, recipe, sampling settings, predictions format,
    data) before a model loads; then the one `evaluate`."""
    if (model is None) == (predictions is None):
        raise UserError("give exactly one of --model (generate) or --predictions (score a file)")
    if json_ and is_stdio(write_predictions):
        raise UserError("--json and --write-predictions - both write to stdout: write the predictions to a file")
    if is_stdio(data) and is_stdio(predictions):
        raise UserError("--data - and --predictions - both read stdin: give one of them as a file")
    if report is not None:
        refuse_existing(report, overwrite, "--report")
    if write_predictions is not None:
        format_for_path(write_predictions)  # a bad extension fails now, not after a long generation
    r, source = eval_recipe(model, recipe, overrides)
    check_self_consistency(r.eval)
    log.info("prompt and [eval] settings from %s", source)
    d = r.data
    examples = examples_for(d, data, limit=limit, db_dir=db_dir)
    db_ids = [e.db_id for e in examples]
    generator = load_generator(model, r) if model is not None else None
    try:
        preds = read_predictions(predictions, len(examples), db_ids) if predictions is not None else None
        summary, preds = evaluate(
            examples,
            r,
            generator=generator,
            predictions=preds,
            report_dir=report,
            title=f"EX on {data}",
            skip_bad_gold=skip_bad_gold,
            pred_dialect=dialect,
            info={"data": data, "recipe": source, "report": str(report) if report is not None else None},
        )
    finally:
        if generator is not None:
            generator.close()
    if write_predictions is not None:
        fmt = save_predictions(write_predictions, preds, db_ids)
        log.info("predictions (%s format): %s", fmt, write_predictions)
    return summary
