"""Static analysis of SQL with sqlglot: is it exactly one read-only query? Plus transpile and remove_distinct.

This is the first of three layers (the others: hardened read-only connections in `backends.py`, killable
worker processes in `sandbox.py`). DuckDB's own security page says its settings are defence in depth, not
a sandbox (docs/DESIGN.md, "Executing untrusted SQL"), so nothing here is trusted alone: the guard refuses what
it can recognise, and the connection settings block what it misses.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

DEFAULT_MAX_SQL_CHARS = 20_000
# Brackets ((, [, {) nested deeper than this are refused before sqlglot's recursive-descent parser sees them.
# sqlglot recurses once or more per level: ~800 levels of "(" already exceed Python's default recursion limit
# (compiled sqlglot; pure-Python sqlglot fails near 50), and where a process has raised that limit (torch's
# inductor raises it to 2000, user code may go higher) 5000 levels overflowed the C stack and killed the
# interpreter with SIGSEGV, which no except clause can catch. A fixed cap gives the same verdict whatever the
# caller's stack depth and limit. Chained subscripts count as nesting too: sqlglot's DuckDB parser types the
# whole chain again at each `[...]` (to apply the 1-based index offset), so `SELECT [x][x]...` with 6000 links
# took 66 s (quadratic) inside the guard, in the training process. Real queries nest a few levels (at most 3
# in the Spider and BIRD samples' gold SQL); SQLite 3.40's own parser stops at 94 levels of "(" with "parser
# stack overflow".
MAX_NESTING = 100
_OPENERS = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE})
_CLOSERS = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE})
# Text longer than this is not tokenised at all (the guard refuses anything over max_sql_chars first; this
# bounds what transpile, remove_distinct, hardness and de-duplication spend on a runaway completion).
MAX_PARSE_CHARS = 1_000_000
_MAX_REASON_CHARS = 300  # refusals quote pieces of the query (a 19k-character identifier must not flood logs)


class UnsafeSQLError(ValueError):
    """Raised by `ensure_read_only` when a statement is not exactly one read-only query."""


class TranspileError(ValueError):
    """Raised by `transpile` for any text it cannot translate into exactly one statement."""


# --- parsing untrusted text ---------------------------------------------------------------------------------
#
# Model output is untrusted and can take any shape: thousands of nested brackets, NUL characters, lone UTF-16
# surrogates, unterminated strings and comments, huge literals. sqlglot answers some of these with its own
# errors and others with RecursionError, MemoryError or the odd TypeError or IndexError from a parser corner.
# Every parse of such text goes through `tokenize_untrusted` / `parse_untrusted`, which turn every failure
# into a reason (a string) and never raise, so that the guard, the reward engine in a training process and
# the scorers can only ever refuse or not match.


def _describe(exc: BaseException) -> str:
    """A short reason for a failure of sqlglot on untrusted text."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = _first_line(str(exc))
    return text if isinstance(exc, SqlglotError) else f"{type(exc).__name__}: {text}"


def _unreadable(sql: str) -> str | None:
    """Why no engine can be handed this text, before any tokenizer sees it: a NUL ends the statement early
    in C APIs (sqlite3 refuses it, and what DuckDB would run could differ from what the guard read), and a
    lone surrogate (a code point in U+D800..U+DFFF outside a pair) has no UTF-8 encoding, so neither engine
    can receive the query at all."""
    nul = sql.find("\x00")
    if nul >= 0:
        return f"it contains a NUL character (position {nul})"
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"it is not valid Unicode text (lone surrogate U+{ord(sql[e.start]):04X} at position {e.start})"
    return None


def _nesting(sql: str, tokens: list[Token]) -> int:
    """How deep the tree of `tokens` nests: brackets inside brackets, plus chained subscripts (`x[1][2][3]`
    nests Bracket(Bracket(Bracket(x))) just as deeply, with one level of brackets). Brackets in strings and
    comments are not tokens, so they do not count."""
    if sql.count("(") + sql.count("[") + sql.count("{") <= MAX_NESTING:
        return 0  # cannot exceed the cap: skip the walk over the tokens (nearly every query)
    depth = deepest = 0
    chains = [0]  # per open bracket level: the subscripts chained so far
    previous = None
    for t in tokens:
        kind = t.token_type
        if kind in _OPENERS:
            chained = kind == TokenType.L_BRACKET and previous == TokenType.R_BRACKET
            chains[-1] = chains[-1] + 1 if chained else 0
            depth += 1
            chains.append(0)
            deepest = max(deepest, depth + chains[-2])
        elif kind in _CLOSERS:
            if depth:
                depth -= 1
                chains.pop()
        else:
            chains[-1] = 0
        previous = kind
    return deepest


def _tokenize(d: Dialect, sql: str) -> tuple[list[Token] | None, str | None]:
    if not isinstance(sql, str):
        return None, f"expected SQL text, got {type(sql).__name__}"
    if len(sql) > MAX_PARSE_CHARS:
        return None, f"too long to parse ({len(sql)} characters, limit {MAX_PARSE_CHARS})"
    problem = _unreadable(sql)
    if problem is not None:
        return None, problem
    try:
        return d.tokenize(sql), None
    except Exception as e:  # noqa: BLE001  any failure of the tokenizer on this text is a reason
        return None, _describe(e)


def tokenize_untrusted(sql: str, dialect: str | None = None) -> tuple[list[Token] | None, str | None]:
    """(sqlglot's tokens of `sql`, None), or (None, why not). Never raises for any `sql`; an unknown
    `dialect` (the caller's mistake, not the text's) raises ValueError."""
    return _tokenize(Dialect.get_or_raise(dialect), sql)


def parse_untrusted(sql: str, dialect: str | None = None) -> tuple[list[exp.Expression | None] | None, str | None]:
    """(the statements sqlglot parses `sql` into, exactly as `sqlglot.parse(sql, read=dialect)`, None), or
    (None, why it cannot be parsed). Never raises for any `sql` (see `tokenize_untrusted`): too deep
    nesting (`MAX_NESTING`), NUL characters, lone surrogates, RecursionError, MemoryError and any exception
    sqlglot raises all become the reason."""
    d = Dialect.get_or_raise(dialect)
    tokens, problem = _tokenize(d, sql)
    if tokens is None:
        return None, problem
    depth = _nesting(sql, tokens)
    if depth > MAX_NESTING:
        return None, f"nested too deeply ({depth} levels of brackets, limit {MAX_NESTING})"
    try:
        return d.parser().parse(tokens, sql), None
    except Exception as e:  # noqa: BLE001
        return None, _describe(e)


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

# PostgreSQL (checked when the dialect is postgres): functions that read server files (pg_read_file,
# pg_ls_dir, lo_import), reach other servers (dblink), change settings for the session (set_config survives
# into later queries unless rolled back), run SQL text of their own (query_to_xml('DELETE ...')), sleep,
# take session locks that outlive the query (pg_advisory_lock), signal other backends, or write sequences and
# replication state. The connection is a read-only transaction under a role with SELECT only (backends.py),
# so most of these would fail there too; the guard refuses them first with a clear reason.
_PG_DENIED_FUNCTIONS = frozenset(
    """set_config nextval setval lastval pg_notify pg_stat_file pg_terminate_backend pg_cancel_backend
    pg_reload_conf pg_rotate_logfile pg_switch_wal pg_promote pg_export_snapshot pg_log_backend_memory_contexts
    pg_import_system_collations pg_logdir_ls txid_current pg_current_xact_id pg_stat_statements_reset
    pg_drop_replication_slot pg_cancel_query current_query""".split()
)
_PG_DENIED_PREFIXES = (
    "pg_read_",  # pg_read_file, pg_read_binary_file
    "pg_ls_",  # pg_ls_dir, pg_ls_logdir, pg_ls_waldir, pg_ls_tmpdir, ...
    "pg_file_",  # adminpack: pg_file_write, pg_file_rename, pg_file_unlink
    "pg_sleep",  # pg_sleep, pg_sleep_for, pg_sleep_until: no answer needs them; the timeout stops them too
    "pg_advisory",
    "pg_try_advisory",
    "pg_create_",
    "pg_replication_",
    "pg_logical_",
    "pg_backup_",
    "pg_wal_",
    "pg_copy_",
    "pg_stat_",  # pg_stat_get_activity(NULL) / pg_stat_get_backend_activity: other sessions' query text (gold SQL)
    "pg_show_",
    "pg_get_",
    "lo_",  # large objects: lo_import/lo_export read and write server files
    "dblink",
    "query_to_",  # query_to_xml(text, ...) runs its text as a query
    "cursor_to_",
    "table_to_xml",
    "schema_to_",
    "database_to_",
)
# Catalogue schemas: pg_stat_activity shows the text of the queries other workers run (gold queries among
# them), pg_settings and pg_roles describe the server. No text-to-SQL answer reads them.
_PG_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

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


def _pg_system_table(node: exp.Table) -> str | None:
    """The name of a PostgreSQL catalogue relation `node` reads (pg_catalog.*, information_schema.*, or a bare
    pg_* name, which pg_catalog resolves first), else None."""
    schema = str(node.args["db"].name).lower() if node.args.get("db") is not None else ""
    name = str(node.name).lower()
    # A bare pg_* name resolves to pg_catalog first; a schema-qualified one is the user's own table.
    if schema in _PG_SYSTEM_SCHEMAS or schema.startswith("pg_temp") or (not schema and name.startswith("pg_")):
        return f"{schema}.{name}" if schema else name
    return None


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


def _clip(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 3] + "..."


def check_read_only(sql: str, dialect: str, max_sql_chars: int = DEFAULT_MAX_SQL_CHARS) -> str | None:
    """Return None if `sql` is exactly one read-only query in `dialect`, else why it is refused.

    Never raises for any `sql`, whatever its shape (see `parse_untrusted`); a failure while inspecting the
    tree refuses the query too (fail closed). Only an unknown `dialect` raises (ValueError)."""
    if not isinstance(sql, str) or not sql.strip():
        return "empty query"
    # Cap the length before parsing: a 20k-arm UNION ALL took DuckDB 119 s just to plan (docs/DESIGN.md), and
    # sqlglot's parse time grows with the text too.
    if len(sql) > max_sql_chars:
        return f"query too long ({len(sql)} characters, limit {max_sql_chars})"
    parsed, problem = parse_untrusted(sql, dialect)
    if parsed is None:
        return f"could not parse as {dialect} SQL: {problem}"
    try:
        reason = _refusal(parsed, sql)
        if reason is None and dialect == "postgres":
            reason = _postgres_refusal(parsed)
    except Exception as e:  # noqa: BLE001  a tree the checks cannot walk is not known to be read-only
        reason = f"could not parse as {dialect} SQL: {_describe(e)}"
    return None if reason is None else _clip(reason)


def _refusal(parsed: list[exp.Expression | None], sql: str) -> str | None:
    # `SELECT 1;` yields a trailing None, `SELECT 1; -- c` a Semicolon node holding the comment.
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if not statements:
        return "empty query"
    if len(statements) > 1:
        # `execute("CREATE ...; SELECT ...")` runs both statements in DuckDB (docs/DESIGN.md).
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


def _postgres_refusal(parsed: list[exp.Expression | None]) -> str | None:
    """What PostgreSQL adds to `_refusal` (run after it, on one read-only query): its file, session and signal
    functions and its catalogue relations."""
    for root in parsed:
        if root is None:
            continue
        for node in root.walk():
            if isinstance(node, exp.Func):
                name = _function_name(node)
                if name in _PG_DENIED_FUNCTIONS or name.startswith(_PG_DENIED_PREFIXES):
                    return f"function {name}() is not allowed (it reaches files, external data or engine state)"
            elif isinstance(node, exp.Table) and (system := _pg_system_table(node)) is not None:
                return f"table {system} is a system catalogue (not part of the database's data)"
    return None


def ensure_read_only(sql: str, dialect: str, max_sql_chars: int = DEFAULT_MAX_SQL_CHARS) -> None:
    """Like `check_read_only`, but raises `UnsafeSQLError` with the reason."""
    reason = check_read_only(sql, dialect, max_sql_chars)
    if reason is not None:
        raise UnsafeSQLError(reason)


# Dialects whose identifiers ignore case, quoted or not (SQLite; DuckDB). PostgreSQL folds unquoted names to
# lower case and keeps quoted ones as written, so `"Name"` from SQLite would miss the column `name` there.
_CASE_INSENSITIVE = frozenset({"sqlite", "duckdb"})


def _lower_identifiers(root: exp.Expression | None) -> None:
    """Lower-case every identifier (quoted ones too) in place: what SQLite and DuckDB mean by any spelling of a
    name is, in PostgreSQL, its lower-case spelling (the names `db copy` creates)."""
    if root is None:
        return
    for node in root.find_all(exp.Identifier):
        node.set("this", str(node.this).lower())


def _sqlite_strings(root: exp.Expression | None) -> None:
    """Turn SQLite's double-quoted strings into string literals, in place. SQLite reads `"Aberdeen"` as a
    string when no column has that name (Spider's gold SQL relies on it: `WHERE T2.City = "Aberdeen"`), while
    sqlglot, like PostgreSQL, reads it as a column. Without the schema, the rule is positional: an unqualified
    quoted name compared with something that is not a literal (the right side of =, <>, <, >, LIKE, ...; the
    values of IN; the bounds of BETWEEN) is a string. A quoted column compared with a literal stays a column."""
    if root is None:
        return

    def is_quoted_name(node: exp.Expression | None) -> bool:
        return (
            isinstance(node, exp.Column)
            and not node.table
            and isinstance(node.this, exp.Identifier)
            and node.this.quoted
        )

    def to_string(node: exp.Column) -> None:
        node.replace(exp.Literal.string(node.name))

    comparisons = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Glob)
    for node in list(root.find_all(*comparisons, exp.In, exp.Between)):
        if isinstance(node, exp.In):
            for value in node.expressions:
                if is_quoted_name(value):
                    to_string(value)
        elif isinstance(node, exp.Between):
            for key in ("low", "high"):
                if is_quoted_name(node.args.get(key)):
                    to_string(node.args[key])
        elif is_quoted_name(node.expression) and not isinstance(node.this, exp.Literal):
            to_string(node.expression)


def transpile(sql: str, read: str, write: str) -> str:
    """Translate one statement from dialect `read` to `write`; returns `sql` unchanged when they are equal.
    Into postgres from sqlite or duckdb, identifiers are lower-cased (see `_lower_identifiers`), and from sqlite
    double-quoted values become strings (`_sqlite_strings`).

    Raises `TranspileError` (a ValueError) for any text it cannot turn into exactly one statement, whatever
    sqlglot raised on the way (parse errors, unsupported syntax, RecursionError on deep trees, ...)."""
    if read == write:
        return sql
    writer = Dialect.get_or_raise(write)
    parsed, problem = parse_untrusted(sql, read)
    if parsed is None:
        raise TranspileError(problem)
    try:
        if write == "postgres" and read in _CASE_INSENSITIVE:
            for e in parsed:
                if read == "sqlite":
                    _sqlite_strings(e)
                _lower_identifiers(e)
        out = [s for s in (writer.generate(e, copy=False) if e else "" for e in parsed) if s.strip()]
    except Exception as e:  # noqa: BLE001  the generator recurses too, and may reject what it cannot write
        raise TranspileError(_describe(e)) from None
    if len(out) != 1:
        raise TranspileError(f"expected one statement, found {len(out)}")
    return out[0]


def remove_distinct(sql: str, dialect: str | None = None) -> str:
    """Drop every DISTINCT keyword, as test-suite-sql-eval does before executing (unless keep_distinct).

    The official `parse.remove_distinct` flattens sqlparse tokens and drops those equal to 'distinct',
    keeping the surrounding whitespace; here sqlglot's tokenizer finds the keyword positions and they are
    cut out of the original string, so string literals and quoted identifiers spelled 'distinct' survive.
    If the text cannot be tokenised it is returned unchanged (it will fail to execute anyway). Never raises.
    """
    tokens, _ = tokenize_untrusted(sql, dialect)
    if not tokens:
        return sql
    try:
        spans = [(t.start, t.end + 1) for t in tokens if t.token_type == TokenType.DISTINCT]
        if not spans:
            return sql
        pieces, cursor = [], 0
        for start, end in spans:
            pieces.append(sql[cursor:start])
            cursor = end
        pieces.append(sql[cursor:])
        return "".join(pieces)
    except Exception:  # noqa: BLE001  odd token positions: leave the text as it is
        return sql


def tables_used(sql: str, dialect: str | None = None) -> tuple[str, ...] | None:
    """The tables `sql` reads, lower-cased and sorted (CTE names left out), or None when it cannot be parsed.
    Never raises."""
    parsed, _ = parse_untrusted(sql, dialect)
    if not parsed:
        return None
    try:
        ctes = {c.alias_or_name.lower() for root in parsed if root is not None for c in root.find_all(exp.CTE)}
        names = {t.name.lower() for root in parsed if root is not None for t in root.find_all(exp.Table)}
        return tuple(sorted(n for n in names - ctes if n))
    except Exception:  # noqa: BLE001  an odd tree: nothing known
        return None
