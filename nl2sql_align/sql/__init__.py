"""Executing untrusted SQL safely, and judging its results.

    with SQLExecutor(timeout=5.0) as ex:
        gold = ex.execute(db, gold_sql)
        pred = ex.execute(db, predicted_sql)
        correct = verdict(gold, pred, gold_sql, metric="spider")

Three layers (see docs/DESIGN.md, "Executing untrusted SQL"): `guard` refuses anything but one read-only
query (sqlglot AST), `backends` opens hardened read-only connections with deadlines and row caps, and
`sandbox` runs them in killable worker processes. `results` holds the official Spider and BIRD result
comparisons and the one `verdict`. Never imports torch.
"""

from nl2sql_align.sql.backends import Database, ExecResult
from nl2sql_align.sql.guard import (
    TranspileError,
    UnsafeSQLError,
    check_read_only,
    ensure_read_only,
    parse_untrusted,
    remove_distinct,
    tables_used,
    transpile,
)
from nl2sql_align.sql.results import (
    QueryRewriter,
    as_scored,
    bird_exec_match,
    normalize_rows,
    results_match,
    spider_exec_match,
    verdict,
)
from nl2sql_align.sql.sandbox import SQLExecutor

__all__ = [
    "Database",
    "QueryRewriter",
    "TranspileError",
    "ExecResult",
    "SQLExecutor",
    "tables_used",
    "as_scored",
    "UnsafeSQLError",
    "bird_exec_match",
    "check_read_only",
    "ensure_read_only",
    "normalize_rows",
    "parse_untrusted",
    "remove_distinct",
    "results_match",
    "spider_exec_match",
    "transpile",
    "verdict",
]
