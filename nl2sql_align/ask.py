"""`nl2sql-align ask`: put questions about one database to a trained model and run its SQL.

Nothing here is ask's own but the printing: the recipe is the model's `recipe.resolved.toml` (`eval_recipe`:
the prompt, schema format and system prompt it was trained with, and its [eval] settings), the answers come
from the generator and the one `model_predictions` eval uses (greedy; with eval.samples, the self-consistency
vote of `evaluate.vote` over the samples' execution results), the SQL is `extract_sql`'s and it runs in the
sandbox (`SQLExecutor`, with [eval] timeout and workers), so a question asked here gets the SQL `eval` scores
for it. The answers are printed after all questions are generated, in one batch, as eval generates them.

Output follows the shell conventions (README, "In shell pipelines and CI"): without --json, each question's
SQL and a table of its first rows (or the error, or the guard's refusal) on stdout; with --json one JSON object
per question on stdout (JSON Lines) and the tables on stderr. Progress and logs always go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from nl2sql_align.data import Example, resolve_database
from nl2sql_align.errors import UserError
from nl2sql_align.evaluate import eval_flag_overrides, eval_recipe, model_predictions, result_groups, vote
from nl2sql_align.generation import load_generator
from nl2sql_align.recipe import Recipe
from nl2sql_align.sql import ExecResult, SQLExecutor
from nl2sql_align.stdio import print_result, read_stdin, result_stream, results_only_on_stdout

log = logging.getLogger(__name__)


def read_questions(questions: list[str] | None) -> list[str]:
    """The questions given as arguments, or else stdin's non-empty lines, one question each."""
    if not questions:
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("no question: give questions as arguments, or pipe them in on stdin, one per line")
        questions = read_stdin().splitlines()
    questions = [q.strip() for q in questions if q.strip()]
    if not questions:
        raise UserError("no question: the questions given (or stdin's lines) are all empty")
    return questions


def ask_examples(questions: list[str], db: str, recipe: Recipe) -> list[Example]:
    """One Example per question on `db` (a file path from the current folder, a db_id under data.db_dir, or a
    postgresql:// URI), with no gold SQL: what the prompt builder needs."""
    d = recipe.data
    database, db_id = resolve_database(
        db, Path(d.db_dir) if d.db_dir else None, Path.cwd(), "--db", paths_from=Path.cwd(), postgres=d.postgres
    )
    return [Example(id=f"ask:{i}", question=q, sql="", db=database, db_id=db_id) for i, q in enumerate(questions, 1)]


def answer(ex: Example, output: str, sql: str, result: ExecResult, rows: int) -> dict[str, Any]:
    """The JSON object of one question: its SQL, the first `rows` rows of the result (or the error)."""
    return {
        "question": ex.question,
        "db": ex.db_id,
        "sql": sql,
        "output": output,
        "columns": result.columns,
        "rows": [list(r) for r in (result.rows or [])[:rows]] if result.ok else None,
        "row_count": len(result.rows or []) if result.ok else None,
        "truncated": result.truncated,
        "error": result.error,
    }


def answer_questions(
    generator, examples: list[Example], recipe: Recipe, executor: SQLExecutor, rows: int
) -> list[dict[str, Any]]:
    """Generate (greedy, and with eval.samples the sampled candidates, as eval does), pick each question's SQL
    (greedy, or the vote over the candidates' results) and run it."""
    outputs, greedy, candidates = model_predictions(generator, examples, recipe)
    if candidates is None:
        results = executor.execute_many([(ex.db, sql) for ex, sql in zip(examples, greedy, strict=True)])
        return [answer(*args, rows) for args in zip(examples, outputs, greedy, results, strict=True)]
    answers = []
    for ex, output, g, cands in zip(examples, outputs, greedy, candidates, strict=True):
        results = executor.execute_many([(ex.db, c) for c in cands])
        i = vote(cands, results, recipe.eval.metric)
        groups = result_groups(results, recipe.eval.metric)  # the vote's groups: how many samples agree with i
        row = answer(ex, output, cands[i], results[i], rows)
        votes = groups.count(groups[i]) if groups[i] is not None else 0
        row.update(greedy_sql=g, samples=len(cands), votes=votes, candidates=cands)
        answers.append(row)
    return answers


def print_answer(a: dict[str, Any], console) -> None:
    """One answer for people: the question, the SQL, then a table of the first rows or the error."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{escape(a['question'])}[/]")
    voted = f"  [dim](voted: {a['votes']} of {a['samples']} samples)[/]" if "samples" in a else ""
    console.print(escape(a["sql"] or "(no SQL in the answer)") + voted, soft_wrap=True)
    if a["error"] is not None:
        console.print(f"[red]error:[/] {escape(a['error'])}\n")
        return
    table = Table(*[escape(str(c)) for c in a["columns"] or []])
    for r in a["rows"]:
        table.add_row(*[escape("NULL" if v is None else str(v)) for v in r])
    n = a["row_count"]
    total = f"{n}{'+' if a['truncated'] else ''} row{'' if n == 1 else 's'}"
    table.caption = total if len(a["rows"]) == n else f"first {len(a['rows'])} of {total}"
    console.print(table)
    console.print()


def ask_command(
    model: str,
    db: str,
    questions: list[str] | None,
    recipe: Path | None = None,
    overrides: list[str] | None = None,
    *,
    rows: int = 10,
    json_: bool = False,
    **eval_flags: Any,
) -> list[dict[str, Any]]:
    """`nl2sql-align ask`: everything is checked (recipe, flags, database, questions) before the model loads;
    then one batch of generation, the SQL executed, the answers printed. `eval_flags` (samples, temperature,
    backend, timeout) override [eval] keys, as eval's flags do. Returns the answers."""
    from rich.console import Console

    if rows < 0:
        raise UserError(f"--rows {rows}: give 0 or more")
    r, source = eval_recipe(model, recipe, eval_flag_overrides(model, overrides, **eval_flags))
    log.info("prompt and [eval] settings from %s", source)
    examples = ask_examples(read_questions(questions), db, r)
    with results_only_on_stdout():  # stdout carries the answers only; progress and library output to stderr
        generator = load_generator(model, r)
        try:
            with SQLExecutor(workers=r.eval.workers, timeout=r.eval.timeout) as executor:
                answers = answer_questions(generator, examples, r, executor, rows)
        finally:
            generator.close()
        console = Console(stderr=True) if json_ else Console(file=result_stream())
        for a in answers:
            print_answer(a, console)
            if json_:
                print_result(json.dumps(a, ensure_ascii=False, default=str))
    return answers
