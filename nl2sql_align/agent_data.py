"""Warm-start data for the SQL agent (`sft` with an `[agent]` table): each training question becomes a short
trajectory in the same tool format the agent's GRPO and `eval --agent` use (nl2sql_align/agent.py):

    user: the usual prompt (schema + question), with the execute_sql tool declared
    assistant: <tool_call> execute_sql(an exploratory query derived from the gold SQL) </tool_call>
    tool: that query's real result, executed in the sandbox and rendered as the tool renders it
    assistant: ```sql <the gold SQL> ```

The exploratory query is what a careful analyst would run first: for the gold's first comparison of a column with
a string literal, the column's distinct values that match the literal case-insensitively (so the model learns to
look up how a value is really spelt before it copies it into its answer); without one, the first rows of the
gold's first table. It is built with sqlglot and rendered in the database's dialect. A question with no usable
query (the gold does not parse, or the query fails) keeps a single-turn row, and the count is logged. A random
model never calls a tool by itself, so without this RL has no tool call to reward (issue 20, part 4).

The loss covers the whole completion, tool results included (TRL masks the prompt only in prompt/completion
data): the model is also trained to predict what the database returns, which is noise it can live with for a
format warm start.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlglot
from sqlglot import exp

from nl2sql_align.agent import TOOL_NAME, SQLEnvironment, render_result, tool_settings
from nl2sql_align.sql import ExecResult, SQLExecutor

log = logging.getLogger(__name__)

PEEK_ROWS = 3  # rows of the gold's first table when there is no string literal to look up


def _tables(tree: exp.Expression) -> dict[str, exp.Table]:
    """Alias or name (lower-cased) -> table node, for every table of the database the query reads (a CTE's name
    is not one)."""
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    out: dict[str, exp.Table] = {}
    for t in tree.find_all(exp.Table):
        if t.name and not (t.name.lower() in ctes and not t.db):
            out.setdefault(t.name.lower(), t)
            if t.alias:
                out[t.alias.lower()] = t
    return out


def _literal_lookup(
    tree: exp.Expression, tables: dict[str, exp.Table]
) -> tuple[exp.Column, exp.Table, exp.Literal, bool] | None:
    """The first (column, its table, string literal, is a LIKE pattern) the gold compares."""
    distinct_tables = {id(t) for t in tables.values()}
    for cmp in tree.find_all(exp.EQ, exp.NEQ, exp.Like, exp.ILike):
        sides = (cmp.this, cmp.expression)
        col = next((s for s in sides if isinstance(s, exp.Column)), None)
        lit = next((s for s in sides if isinstance(s, exp.Literal) and s.is_string), None)
        if col is None or lit is None or not col.name:
            continue
        if col.table:
            table = tables.get(col.table.lower())
        elif len(distinct_tables) == 1:
            table = next(iter(tables.values()))
        else:
            continue  # an unqualified column of a join: which table it is needs the schema
        if table is not None:
            return col, table, lit, isinstance(cmp, (exp.Like, exp.ILike))
    return None


def exploratory_query(sql: str, dialect: str, max_rows: int, db_dialect: str | None = None) -> str | None:
    """The query the trajectory runs before answering `sql` (written in `dialect`; see the module docstring),
    rendered in `db_dialect` (default: `dialect`), the database's, as the tool expects; None when the gold does
    not parse or reads no table."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except sqlglot.errors.SqlglotError:
        return None
    if tree is None:
        return None
    if dialect == "sqlite":  # Spider's `WHERE country = "France"`: a string, as SQLite reads it
        from nl2sql_align.sql.guard import _sqlite_strings

        _sqlite_strings(tree)
    tables = _tables(tree)
    if not tables:
        return None
    found = _literal_lookup(tree, tables)
    if found is not None:
        col, table, lit, pattern = found
        column = exp.Column(this=col.this.copy())
        match = exp.Like if pattern else exp.EQ  # a LIKE pattern stays a pattern
        # CAST: DuckDB and PostgreSQL have no lower() of a number or a date (`year = '2014'`)
        as_text = exp.Lower(this=exp.Cast(this=column, to=exp.DataType.build("TEXT")))
        query = (
            exp.select(column.copy())
            .distinct()
            .from_(exp.Table(this=table.this.copy(), db=table.args.get("db")))
            .where(match(this=as_text, expression=exp.Lower(this=lit.copy())))
            .limit(max_rows)
        )
    else:
        first = next(iter(tables.values()))
        query = exp.select("*").from_(exp.Table(this=first.this.copy(), db=first.args.get("db"))).limit(PEEK_ROWS)
    return query.sql(dialect=db_dialect or dialect)


def tool_schema() -> list[dict[str, Any]]:
    """The execute_sql tool as the chat template is given it: the JSON schema transformers derives from the
    environment's method, exactly as the agent's prompts declare it (`agent_prompt_texts`, TRL's GRPO)."""
    from transformers.utils import get_json_schema

    return [get_json_schema(SQLEnvironment(None).execute_sql)]  # type: ignore[arg-type]


# (database, query) -> result: the preflight's length check and the training set build the same rows, and the
# databases are read-only, so each exploratory query runs once per process.
_RESULTS: dict[tuple, ExecResult] = {}


def _run(jobs: list[tuple], timeout: float) -> list[ExecResult]:
    from nl2sql_align.evaluate import run_once

    if all(j in _RESULTS for j in jobs):  # the second call (preflight, then training): no sandbox to start
        return [_RESULTS[j] for j in jobs]
    with SQLExecutor(timeout=timeout) as executor:
        return run_once(executor, jobs, _RESULTS)


def agent_sft_rows(examples, recipe) -> list[dict[str, Any]]:
    """SFT rows (conversational prompt/completion, plus `tools` as JSON) of the trajectories above. A question
    whose exploratory query cannot be built, or fails, keeps a single-turn row (answer straight away). Queries
    run in the sandbox with the tool's timeout ([agent] tool_timeout, else eval.timeout), as `eval --agent` runs
    them."""
    from nl2sql_align.data import build_messages, format_answer

    settings = tool_settings(recipe.agent)
    queries = [
        exploratory_query(ex.sql, ex.dialect or ex.db.dialect, settings.max_rows, ex.db.dialect) for ex in examples
    ]
    jobs = [(ex.db, q, None) for ex, q in zip(examples, queries, strict=True) if q is not None]
    results = iter(_run(jobs, recipe.agent.tool_timeout or recipe.eval.timeout))
    tools = json.dumps(tool_schema())
    rows, single = [], 0
    for ex, q in zip(examples, queries, strict=True):
        result = next(results) if q is not None else None
        answer = {"role": "assistant", "content": format_answer(ex.sql)}
        if result is None or not result.ok:
            single += 1
            completion = [answer]
        else:
            call = {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"query": q}}}
            completion = [
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "name": TOOL_NAME, "content": render_result(result, settings)},
                answer,
            ]
        rows.append({"prompt": build_messages(ex, recipe.data.schema, recipe.data.system_prompt),
                     "completion": completion, "tools": tools})  # fmt: skip
    if single:
        log.info("[agent] warm start: %d of %d questions answer without a tool call (no exploratory query)",
                 single, len(examples))  # fmt: skip
    return rows
