"""Evaluation: greedy generation, execution scoring, metrics, reports.

Scoring follows the official semantics (`spider`: test-suite execution match; `bird`: set equality), with gold
and prediction executed on the same engine, in the sandbox, each on its own cursor, and gold results computed
once per (database, gold SQL) before any prediction runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from nl2sql_align.data import Example, build_messages, extract_sql
from nl2sql_align.errors import UserError, failing_gold_error
from nl2sql_align.recipe import SchemaSection
from nl2sql_align.sql import ExecResult, SQLExecutor, as_scored, results_match

# ---------------------------------------------------------------------------------------------------------
# Generation


def generate_sql(
    model,
    tokenizer,
    examples: list[Example],
    *,
    schema: SchemaSection | None = None,
    system_prompt: str | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """Greedy completions (raw text) for each example, in order."""
    return [
        outs[0]
        for outs in sample_completions(
            model, tokenizer, examples, schema=schema, system_prompt=system_prompt, max_new_tokens=max_new_tokens,
            batch_size=batch_size, progress=progress,
        )
    ]


def sample_completions(
    model,
    tokenizer,
    examples: list[Example],
    *,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    schema: SchemaSection | None = None,
    system_prompt: str | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: bool = True,
    seed: int | None = None,
) -> list[list[str]]:
    """`num_samples` completions (raw text) per example, in order; temperature 0 means greedy.

    `batch_size` counts sequences, so a batch holds batch_size // num_samples prompts (at least one)."""
    import torch
    from rich.progress import Progress

    if num_samples > 1 and temperature <= 0:
        raise UserError(f"{num_samples} samples per question need a sampling temperature above 0")
    if seed is not None:
        torch.manual_seed(seed)
    tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so generation continues the prompt
    prompts = [
        tokenizer.apply_chat_template(
            build_messages(ex, schema, system_prompt), tokenize=False, add_generation_prompt=True
        )
        for ex in examples
    ]
    # Sorting by length wastes less compute on padding; results are put back in order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[str]] = [[] for _ in prompts]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    per_batch = max(1, batch_size // num_samples)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with Progress(disable=not progress, transient=True) as bar, torch.inference_mode():
        task = bar.add_task("sampling" if num_samples > 1 else "generating", total=len(prompts))
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            enc = tokenizer(
                [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, i in enumerate(idx):  # generate returns each prompt's samples consecutively
                outputs[i] = texts[j * num_samples : (j + 1) * num_samples]
            bar.advance(task, len(idx))
    if was_training:
        model.train()
    return outputs


def generate_for_recipe(model, tokenizer, examples: list[Example], recipe) -> list[str]:
    """`generate_sql` with the prompt and generation settings of a recipe ([data] and [eval])."""
    return generate_sql(
        model,
        tokenizer,
        examples,
        schema=recipe.data.schema,
        system_prompt=recipe.data.system_prompt,
        max_new_tokens=recipe.eval.max_new_tokens,
        batch_size=recipe.eval.batch_size,
    )


def load_model_for_eval(model_dir: str):
    """A full model or a PEFT adapter directory (the base model is named in adapter_config.json)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if path.exists() and (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise UserError(f"{model_dir}: the tokenizer has no chat template; eval needs one to build prompts")
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------
# Scoring


def gold_results(
    examples: list[Example], executor: SQLExecutor, keep_distinct: bool = False, metric: str = "spider"
) -> tuple[list[ExecResult], list[str]]:
    """Execute each distinct (database, gold SQL) once. Returns results aligned with examples, and the errors."""
    keys = [(ex.db, as_scored(ex.sql, keep_distinct, metric), ex.dialect) for ex in examples]
    unique = list(dict.fromkeys(keys))
    results = executor.execute_many(unique, progress=len(unique) > 200)
    by_key = dict(zip(unique, results, strict=True))
    aligned = [by_key[k] for k in keys]
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
) -> list[dict[str, Any]]:
    """One row per example: index, id, db, gold, pred, correct, executable, error (and hardness, raw output)."""
    if len(predictions) != len(examples):
        raise UserError(f"{len(predictions)} predictions for {len(examples)} examples: they must align one to one")
    own = executor is None
    executor = executor or SQLExecutor()
    try:
        golds, gold_errors = gold_results(examples, executor, keep_distinct, metric)
        if gold_errors and not skip_bad_gold:
            raise failing_gold_error(
                gold_errors, "those examples cannot be scored",
                "Fix the data, or pass --skip-bad-gold to leave those examples out.",
            )
        # pred_dialect: the dialect predictions are written in (None: each database's own); sqlglot transpiles.
        jobs = [
            (ex.db, as_scored(p, keep_distinct, metric), pred_dialect) for ex, p in zip(examples, predictions, strict=True)
        ]
        preds = executor.execute_many(jobs, progress=len(jobs) > 200)
    finally:
        if own:
            executor.close()
    rows = []
    for i, (ex, pred_sql, g, p) in enumerate(zip(examples, predictions, golds, preds, strict=True)):
        if not g.ok:
            continue  # only reachable with skip_bad_gold
        correct = p.ok and results_match(ex.sql, g.rows, p.rows, metric)
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
        if raw_outputs is not None:
            row["output"] = raw_outputs[i]
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    n = len(rows)

    def pct(xs) -> float:
        xs = list(xs)
        return round(100.0 * sum(xs) / len(xs), 2) if xs else 0.0

    out: dict[str, Any] = {
        "metric": metric,
        "n": n,
        "ex": pct(r["correct"] for r in rows),
        "executable": pct(r["executable"] for r in rows),
    }
    for field in ("hardness", "db"):
        groups = defaultdict(list)
        for r in rows:
            if r.get(field):
                groups[r[field]].append(r["correct"])
        if groups:
            out[f"ex_by_{field}"] = {k: {"n": len(v), "ex": pct(v)} for k, v in sorted(groups.items())}
    return out


def write_report(rows: list[dict[str, Any]], summary: dict[str, Any], report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / "per_example.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    groups = summary.get("ex_by_hardness") or summary.get("ex_by_db")
    if groups:
        from nl2sql_align.plots import plot_ex_comparison

        plot_ex_comparison(
            ["all", *groups], [summary["ex"], *(g["ex"] for g in groups.values())], report_dir / "ex.png",
            f"EX ({summary['metric']}), n={summary['n']}",
        )


def print_summary(summary: dict[str, Any], title: str = "Execution accuracy") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("subset")
    table.add_column("n", justify="right")
    table.add_column("EX %", justify="right")
    table.add_row("all", str(summary["n"]), f"{summary['ex']:.1f}")
    for field in ("hardness", "db"):
        for k, v in summary.get(f"ex_by_{field}", {}).items():
            table.add_row(f"{field}={k}", str(v["n"]), f"{v['ex']:.1f}")
    table.caption = f"executable: {summary['executable']:.1f}%  ·  metric: {summary['metric']}"
    Console().print(table)


def evaluate_model(model, tokenizer, examples, recipe, report_dir: Path | None = None, title: str = "eval",
                   print_table: bool = True) -> dict[str, Any]:
    """Generate, score, write the report, print the table. Used by `eval --model` and after training."""
    e = recipe.eval
    outputs = generate_for_recipe(model, tokenizer, examples, recipe)
    with SQLExecutor(workers=e.workers, timeout=e.timeout) as ex:
        rows = score_predictions(
            examples, [extract_sql(o) for o in outputs], metric=e.metric, executor=ex, raw_outputs=outputs
        )
    summary = summarize(rows, e.metric)
    if report_dir is not None:
        write_report(rows, summary, report_dir)
    if print_table:
        print_summary(summary, title)
    return summary


def read_predictions(path: Path, n: int) -> list[str]:
    """JSONL {"index": i, "sql": ...} (missing indexes count as empty predictions), a BIRD-style JSON object
    {"0": "SQL\\t----- bird -----\\tdb_id"}, or a text file with one SQL per line aligned with the data."""
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        preds = [""] * n
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                i, sql = int(rec["index"]), rec["sql"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(f'{path}:{lineno}: expected {{"index": <int>, "sql": <string>}}') from None
            if not 0 <= i < n:
                raise UserError(f"{path}:{lineno}: index {i} is outside the data (0..{n - 1})")
            preds[i] = sql
        return preds
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f'{path}: expected a BIRD-style object {{"0": "SQL\\t----- bird -----\\tdb_id"}}')
        preds = [""] * n
        for k, v in obj.items():
            if not str(k).isdigit() or not 0 <= int(k) < n:
                raise UserError(f"{path}: key {k!r} is not an index into the data (0..{n - 1})")
            preds[int(k)] = str(v).split("\t----- bird -----\t")[0]
        return preds
    lines = text.splitlines()
    if len(lines) != n:
        raise UserError(f"{path}: {len(lines)} lines for {n} examples; a text predictions file has one SQL per line")
    # Spider's gold/pred files may carry "SQL<TAB>db_id".
    return [line.split("\t")[0].strip() for line in lines]
