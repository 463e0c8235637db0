"""Static analysis of SQL with sqlglot: is it exactly one read-only query? Plus transpile and remove_distinct.

This is the first of three layers (the others: hardened read-only connections in `backends.py`, killable
worker processes in `sandbox.py`). DuckDB's own security page says its settings are defence in depth, not
a sandbox (DESIGN.md, "Executing untrusted SQL"), so nothing here is trusted alone: the guard refuses what
it can recognise, and the connection settings block what it misses.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

DEFAULT_MAX_SQL_CHARS = 20_000


class UnsafeSQLError(ValueError):
    """Raised by `ensure_read_only` when a statement is not exactly one read-only query."""


# Top-level statements that may run: a SELECT (with or without WITH), a set operation over SELECTs, or a
# parenthesised one of those.
_QUERY_TYPES: tuple[type[exp.Expression], ...] = (exp.Select, exp.SetOperation, exp.Subquery)


def _classes(*names: str) -> tuple[type[exp.Expression], ...]:
    # getattr with a default: sqlglot renames node classes between versions; a missing one is simply not
    # checked by class, and still refused by the top-level allow list above.
    return tuple(cls for cls in (getattr(exp, n, None) for n in names) if isinstance(cls, type))


# Node types refused anywhere in the tree (DML inside a CTE, SELECT ... INTO, unparsed commands, ...).
_FORBIDDEN_NODES = _classes(
    *"""Insert Update Delete Merge Create Drop Alter TruncateTable Command Copy Attach Detach Pragma Set Use
    Install Transaction Commit Rollback Analyze Describe Show Summarize Into LoadData Cache Uncache Refresh
    Grant Revoke Export Kill Comment Declare Execute Lock""".split()
)

# Functions that read or write files or reach external data or engine state, matched on the lower-cased
# name wherever the call appears: DuckDB table functions first, then SQLite's fileio/CLI extension functions
# (load_extension is also off in Python's sqlite3 by default).
_DENIED_FUNCTIONS = frozenset(
    """glob sniff_csv parquet_scan parquet_metadata parquet_schema parquet_file_metadata parquet_kv_metadata
    parquet_bloom_probe sqlite_scan sqlite_attach sqlite_query postgres_scan postgres_scan_pushdown
    postgres_attach postgres_query postgres_execute mysql_scan mysql_query mysql_execute query query_table
    iceberg_scan iceberg_metadata iceberg_snapshots delta_scan json_execute_serialized_sql duckdb_extensions
    getenv load_aws_credentials checkpoint force_checkpoint install load
    readfile writefile load_extension fsdir edit zipfile lsmode""".split()
)
# Whole families: every DuckDB read_* reads files (read_csv, read_csv_auto, read_parquet, read_json*,
# read_ndjson*, read_text, read_blob, read_xlsx, ...); fileio_* (sqlean); pragma_* are the table-valued
# forms of PRAGMA, which is refused as a statement too.
_DENIED_PREFIXES = ("read_", "parquet_", "iceberg_", "delta_", "postgres_", "mysql_", "fileio_", "pragma_")

# A table reference whose name looks like a path or a file: DuckDB turns FROM 'x.csv', FROM "x.parquet"
# and FROM '/etc/passwd' into file reads (replacement scans). sqlglot parses both quotings to the same
# quoted Identifier, so the name is all there is to judge.
_PATH_CHARS = ("/", "\\", ".", ":", "~", "*", "?")


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _is_denied_function(name: str) -> bool:
    return name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES)


def _statement_kind(root: exp.Expression, sql: str) -> str:
    """A readable name for a refused top-level statement: the node class (Insert, Pragma, ...), or the
    leading keyword where sqlglot fell back to a generic node (Command for LOAD/VACUUM/CALL, a Column for
    CHECKPOINT, an Alias for SAVEPOINT)."""
    if isinstance(root, exp.Command):
        return str(root.this).upper()
    if isinstance(root, _FORBIDDEN_NODES + (exp.Values, exp.Pivot)):
        return type(root).__name__
    words = sql.split()
    return words[0].upper().rstrip(";") if words else type(root).__name__


def _first_line(message: str, limit: int = 200) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return line[:limit]


def check_read_only(sql: str, dialect: str, max_sql_chars: int = DEFAULT_MAX_SQL_CHARS) -> str | None:
    """Return None if `sql` is exactly one read-only query in `dialect`, else why it is refused."""
    if not isinstance(sql, str) or not sql.strip():
        return "empty query"
    # Cap the length before parsing: a 20k-arm UNION ALL took DuckDB 119 s just to plan (DESIGN.md), and
    # sqlglot's parse time grows with the text too.
    if len(sql) > max_sql_chars:
        return f"query too long ({len(sql)} characters, limit {max_sql_chars})"
    try:
        parsed = sqlglot.parse(sql, read=dialect)
    except SqlglotError as e:
        return f"could not parse as {dialect} SQL: {_first_line(str(e))}"
    # `SELECT 1;` yields a trailing None, `SELECT 1; -- c` a Semicolon node holding the comment.
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if not statements:
        return "empty query"
    if len(statements) > 1:
        # `execute("CREATE ...; SELECT ...")` runs both statements in DuckDB (DESIGN.md).
        return f"only one statement may run (found {len(statements)})"
    root = statements[0]
    if not isinstance(root, _QUERY_TYPES):
        return f"only SELECT queries may run (found {_statement_kind(root, sql)})"
    for node in root.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            return f"only SELECT queries may run (found {type(node).__name__})"
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if _is_denied_function(name):
                return f"function {name}() is not allowed (it reaches files, external data or engine state)"
        elif isinstance(node, exp.Table):
            if isinstance(node.this, exp.Literal):
                return f"table reference {node.this.sql()} reads a file"
            if isinstance(node.this, exp.Identifier) and any(c in node.name for c in _PATH_CHARS):
                return f"table reference {node.name!r} looks like a file path"
    return None


def ensure_read_only(sql: str, dialect: str, max_sql_chars: int = DEFAULT_MAX_SQL_CHARS) -> None:
    """Like `check_read_only`, but raises `UnsafeSQLError` with the reason."""
    reason = check_read_only(sql, dialect, max_sql_chars)
    if reason is not None:
        raise UnsafeSQLError(reason)


def transpile(sql: str, read: str, write: str) -> str:
    """Translate one statement from dialect `read` to `write`; returns `sql` unchanged when they are equal."""
    if read == write:
        return sql
    out = [s for s in sqlglot.transpile(sql, read=read, write=write) if s.strip()]
    if len(out) != 1:
        raise ValueError(f"expected one statement, found {len(out)}")
    return out[0]


def remove_distinct(sql: str, dialect: str | None = None) -> str:
    """Drop every DISTINCT keyword, as test-suite-sql-eval does before executing (unless keep_distinct).

    The official `parse.remove_distinct` flattens sqlparse tokens and drops those equal to 'distinct',
    keeping the surrounding whitespace; here sqlglot's tokenizer finds the keyword positions and they are
    cut out of the original string, so string literals and quoted identifiers spelled 'distinct' survive.
    If the text cannot be tokenised it is returned unchanged (it will fail to execute anyway).
    """
    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
    except SqlglotError:
        return sql
    spans = [(t.start, t.end + 1) for t in tokens if t.token_type == TokenType.DISTINCT]
    if not spans:
        return sql
    pieces, cursor = [], 0
    for start, end in spans:
        pieces.append(sql[cursor:start])
        cursor = end
    pieces.append(sql[cursor:])
    return "".join(pieces)
