"""Executing untrusted SQL safely, and judging its results.

    with SQLExecutor(timeout=5.0) as ex:
        gold = ex.execute(db, gold_sql)
        pred = ex.execute(db, predicted_sql)
        correct = pred.ok and results_match(gold_sql, gold.rows, pred.rows, metric="spider")

Three layers (see DESIGN.md, "Executing untrusted SQL"): `guard` refuses anything but one read-only
query (sqlglot AST), `backends` opens hardened read-only connections with deadlines and row caps, and
`sandbox` runs them in killable worker processes. `compare` holds the official Spider and BIRD result
comparisons. Never imports torch.
"""

from nl2sql_align.sql.backends import Database, ExecResult
from nl2sql_align.sql.compare import (
    as_scored,
    bird_exec_match,
    normalize_rows,
    results_match,
    spider_exec_match,
)
from nl2sql_align.sql.guard import (
    UnsafeSQLError,
    check_read_only,
    ensure_read_only,
    remove_distinct,
    transpile,
)
from nl2sql_align.sql.sandbox import SQLExecutor

__all__ = [
    "Database",
    "ExecResult",
    "SQLExecutor",
    "as_scored",
    "UnsafeSQLError",
    "bird_exec_match",
    "check_read_only",
    "ensure_read_only",
    "normalize_rows",
    "remove_distinct",
    "results_match",
    "spider_exec_match",
    "transpile",
]
