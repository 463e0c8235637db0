"""Schema text for prompts, read from the live database.

The format is what OmniSQL and DAIL-SQL found to work: CREATE TABLE DDL with primary keys, NOT NULL and foreign
keys, and a comment per column with a few distinct example values. The text is deterministic (tables, columns
and foreign keys in definition order, example values in row order) so that the same database always gives the
same prompt.

The DDL is built as sqlglot expressions and rendered by sqlglot's generator for the database's dialect, so
that it is valid SQL there: run without its `--` comments or with them, it recreates the tables' columns,
types, keys and NOT NULL flags. Identifiers are written bare where the database and sqlglot (the read-only
guard parses every query with it) both read them back bare, and quoted otherwise: names that are not plain
(spaces, punctuation, a leading digit) and the reserved words of `_reserved()` (see there). The compact format
quotes the same names the same way, since models copy identifiers from it into SQL too.

BIRD ships a `database_description/<table>.csv` per table next to each database; where that folder exists, the
column descriptions (and a shortened value description) join the DDL column comments. Those files come in
mixed encodings and occasionally broken; an unreadable file is skipped with one warning, never an error.

These are our own fixed catalogue queries, not model output, so they run on a plain read-only connection
rather than through the sandbox.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from nl2sql_align.errors import DataError
from nl2sql_align.sql import Database

log = logging.getLogger(__name__)


@dataclass
class Column:
    name: str
    type: str
    primary_key: bool = False
    examples: list = field(default_factory=list)
    description: str = ""  # from BIRD's database_description/<table>.csv, already shortened
    not_null: bool = False  # declared NOT NULL (in DuckDB, beyond what the primary key implies)


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str]
    # (columns, referenced table, referenced columns), in declaration order; referenced columns are "" where the
    # declaration names none (SQLite's `REFERENCES t`: the referenced table's primary key)
    foreign_keys: list[tuple[list[str], str, list[str]]]


def schema_text(
    db: Database,
    example_values: int = 3,
    max_value_chars: int = 40,
    format: str = "ddl",
    tables: tuple[str, ...] | None = None,
) -> str:
    """The schema text of `db`; `tables` (names, any case) keeps only those tables, in definition order."""
    return _schema_text(db.path, db.engine, example_values, max_value_chars, format, tables)


@lru_cache(maxsize=256)
def _schema_text(
    path: str, engine: str, example_values: int, max_value_chars: int, format: str, only: tuple[str, ...] | None
) -> str:
    tables = read_schema(Database(path, engine), example_values)
    if only is not None:
        keep = {name.lower() for name in only}
        tables = [t for t in tables if t.name.lower() in keep]
    if format == "compact":  # the short format for small models and contexts: no descriptions
        return "\n".join(render_compact(t, max_value_chars, engine) for t in tables)
    if engine != "postgres":  # BIRD's description files sit beside a database file
        attach_descriptions(tables, Path(path).parent / "database_description")
    return "\n\n".join(render_table(t, max_value_chars, engine) for t in tables)


def read_schema(db: Database, example_values: int = 3) -> list[Table]:
    if db.engine == "postgres":
        return _postgres_schema(db, example_values)
    if not Path(db.path).is_file():
        raise DataError(f"database not found: {db.path}")
    if db.engine == "sqlite":
        return _sqlite_schema(db.path, example_values)
    return _duckdb_schema(db.path, example_values)


def attach_descriptions(tables: list[Table], folder: Path) -> None:
    """Fill Column.description from BIRD's description files, where that folder exists (the DDL prompt only:
    schema probes and the compact format never read them)."""
    descriptions = read_descriptions(folder)
    for t in tables:
        by_column = descriptions.get(t.name.strip().lower(), {})
        for c in t.columns:
            c.description = by_column.get(c.name.strip().lower(), "")


# ---------------------------------------------------------------------------------------------------------
# BIRD column descriptions

_DESCRIPTION_CHARS = 120
_VALUE_DESCRIPTION_CHARS = 100
_warned_files: set[str] = set()


def read_descriptions(folder: Path) -> dict[str, dict[str, str]]:
    """{table (lower case): {column (lower case): comment text}} from BIRD's `database_description/*.csv`.

    Files are matched to tables by name without case; rows to columns by `original_column_name`, then by
    `column_name` (BIRD's expanded name), without case. A missing folder gives {}; a file that cannot be read
    or has no `original_column_name` header is skipped with a warning (once per file and process)."""
    if not folder.is_dir():
        return {}
    out: dict[str, dict[str, str]] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() != ".csv" or not f.is_file():
            continue
        try:
            cols = _read_description_file(f)
        except Exception as e:  # a broken description must never stop a run
            if str(f) not in _warned_files:
                _warned_files.add(str(f))
                log.warning("ignoring BIRD column descriptions in %s: %s", f, e)
            continue
        out.setdefault(f.stem.strip().lower(), {}).update(cols)
    return out


def _decode(raw: bytes) -> str:
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")  # never fails


def _clean(text: str | None, limit: int) -> str:
    s = re.sub(r"commonsense evidence:", " ", (text or "").replace("\ufeff", ""), flags=re.IGNORECASE)
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= limit else s[: limit - 3].rstrip() + "..."


def _read_description_file(f: Path) -> dict[str, str]:
    rows = list(csv.reader(io.StringIO(_decode(f.read_bytes()), newline="")))
    if not rows:
        raise ValueError("empty file")
    header = [_clean(h, 100).lower() for h in rows[0]]
    if "original_column_name" not in header:
        raise ValueError("no original_column_name header")
    idx = {name: header.index(name) for name in header}

    def get(row: list[str], name: str) -> str:
        i = idx.get(name)
        return row[i] if i is not None and i < len(row) else ""

    out: dict[str, str] = {}
    by_expanded: dict[str, str] = {}
    for row in rows[1:]:
        original = get(row, "original_column_name").strip()
        if not original:
            continue
        expanded = _clean(get(row, "column_name"), _DESCRIPTION_CHARS)
        desc = _clean(get(row, "column_description"), _DESCRIPTION_CHARS)
        if not desc and expanded.lower() not in ("", original.lower(), original.replace("_", " ").lower()):
            desc = expanded  # the expanded name says something the bare name does not
        values = _clean(get(row, "value_description"), _VALUE_DESCRIPTION_CHARS)
        if values and values.lower() != desc.lower():
            desc = f"{desc} ({values})" if desc else values
        if not desc:
            continue
        out.setdefault(original.lower(), desc)
        if expanded:
            by_expanded.setdefault(expanded.lower(), desc)
    # Some files name a column only in its expanded form; an original name always wins.
    return by_expanded | out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sqlite_schema(path: str, k: int) -> list[Table]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    # Old Spider databases hold latin-1 bytes in TEXT columns; keep them readable instead of failing.
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        tables = []
        for name in names:
            info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()  # cid, name, type, notnull, dflt, pk
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            cols = [Column(r[1], (r[2] or "").upper() or "TEXT", r[1] in pk, not_null=bool(r[3])) for r in info]
            fks: dict[int, tuple[list[str], str, list[str]]] = {}
            # id, seq, table, from, to, ...; SQLite numbers the foreign keys from the last declared one (id 0)
            # to the first, and the columns of one key by seq.
            rows = conn.execute(f"PRAGMA foreign_key_list({_q(name)})").fetchall()
            for r in sorted(rows, key=lambda r: (-r[0], r[1])):
                entry = fks.setdefault(r[0], ([], r[2], []))
                entry[0].append(r[3])
                entry[2].append(r[4] or "")
            for c in cols:
                c.examples = _examples(conn, name, c.name, k, "rowid")
            tables.append(Table(name, cols, pk, list(fks.values())))
        return tables
    finally:
        conn.close()


def _duckdb_schema(path: str, k: int) -> list[Table]:
    import duckdb

    conn = duckdb.connect(path, read_only=True, config={"enable_external_access": False})
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT internal ORDER BY table_oid"
            ).fetchall()
        ]
        tables = []
        for name in names:
            cols_raw = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE schema_name = 'main' "
                "AND table_name = ? ORDER BY column_index",
                [name],
            ).fetchall()
            pk: list[str] = []
            fks = []
            for ctype, cols, ref_table, ref_cols in conn.execute(
                "SELECT constraint_type, constraint_column_names, referenced_table, referenced_column_names "
                "FROM duckdb_constraints() WHERE schema_name = 'main' AND table_name = ? "
                "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY constraint_index",
                [name],
            ).fetchall():
                if ctype == "PRIMARY KEY":
                    pk = list(cols)
                else:
                    fks.append((list(cols), ref_table, list(ref_cols)))
            # DuckDB makes primary-key columns NOT NULL by itself (is_nullable false, an implied NOT NULL
            # constraint); the DDL says NOT NULL only where the key does not already imply it.
            columns = [Column(c, t, c in pk, not_null=not nullable and c not in pk) for c, t, nullable in cols_raw]
            for c in columns:
                c.examples = _examples(conn, name, c.name, k, "rowid")
            tables.append(Table(name, columns, pk, fks))
        return tables
    finally:
        conn.close()


_PG_TABLES = """
SELECT c.oid, c.relname FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.oid
"""
_PG_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
# Keys with their columns in key order (conkey/confkey are column numbers, paired by position).
_PG_KEYS = """
SELECT k.contype, k.conname,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       k.confrelid::regclass::text,
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k WHERE k.conrelid = %s AND k.contype IN ('p', 'f') ORDER BY k.oid
"""


def _postgres_schema(db: Database, k: int) -> list[Table]:
    """The tables of the connection's schema (the first on its search_path, as the sandbox pins it), from
    pg_catalog: columns in attribute order, types as format_type() writes them, keys in declaration order."""
    try:
        import psycopg
    except ImportError:
        raise DataError(
            f"{db.label}: reading a PostgreSQL database needs psycopg: pip install 'psycopg[binary]'"
        ) from None
    try:
        conn = psycopg.connect(db.path, autocommit=True, connect_timeout=10, application_name="nl2sql-schema")
    except psycopg.Error as e:
        raise DataError(f"cannot connect to {db.label}: {str(e).strip().splitlines()[0]}") from None
    try:
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET statement_timeout = '60s'")
        tables = []
        for oid, name in conn.execute(_PG_TABLES).fetchall():
            cols_raw = conn.execute(_PG_COLUMNS, (oid,)).fetchall()
            pk: list[str] = []
            fks = []
            for kind, _name, cols, ref_table, ref_cols in conn.execute(_PG_KEYS, (oid,)).fetchall():
                if kind == "p":
                    pk = list(cols)
                else:
                    fks.append((list(cols), ref_table.rpartition(".")[2].strip('"'), list(ref_cols)))
            # As in DuckDB, a primary key implies NOT NULL; the DDL says it only where the key does not.
            columns = [Column(c, t, c in pk, not_null=bool(nn) and c not in pk) for c, t, nn in cols_raw]
            for c in columns:
                c.examples = _examples(conn, name, c.name, k, "ctid")
            tables.append(Table(name, columns, pk, fks))
        return tables
    finally:
        conn.close()


def _examples(conn, table: str, column: str, k: int, order_col: str) -> list:
    if k <= 0:
        return []
    # First k distinct values in storage order: deterministic, and closer to "typical" than MIN/MAX.
    sql = (
        f"SELECT {_q(column)} FROM {_q(table)} WHERE {_q(column)} IS NOT NULL "
        f"GROUP BY {_q(column)} ORDER BY MIN({order_col}) LIMIT {int(k)}"
    )
    try:
        return [r[0] for r in conn.execute(sql).fetchall()]
    except Exception:  # WITHOUT ROWID tables and views: fall back to value order
        sql = f"SELECT DISTINCT {_q(column)} FROM {_q(table)} WHERE {_q(column)} IS NOT NULL ORDER BY 1 LIMIT {int(k)}"
        try:
            return [r[0] for r in conn.execute(sql).fetchall()]
        except Exception:
            return []


# ---------------------------------------------------------------------------------------------------------
# Rendering

# Words written quoted as identifiers, per engine (lower case), besides names that are not plain. Measured with
# SQLite 3.40, DuckDB 2.0 and sqlglot 30.30 by creating a table and a column of that name unquoted and reading
# it back bare in ordinary queries (SELECT list, WHERE, GROUP BY, ORDER BY, qualified, joined, in a function
# call): each word here fails, or reads as something else, in the engine or in sqlglot's parser for the
# dialect. SQLite: 64 of its 147 keywords fail in SQLite itself, 11 more (cross, for, glob, inner, like, offset,
# outer, regexp, rollback, window, with) in sqlglot; its other keywords (key, first, last, match, action, ...)
# work bare in both and stay bare. DuckDB: its reserved and type_function keywords fail in DuckDB; sqlglot's
# DuckDB generator quotes those (and a few more) itself (Generator.RESERVED_KEYWORDS, added below), and 13 words
# fail in sqlglot's DuckDB parser only. tests/test_schema_ddl.py checks both lists against the installed
# engines and sqlglot.
_RESERVED_EXTRA = {
    "sqlite": frozenset(
        """add all alter and as autoincrement between case cast check collate commit constraint create cross
        current_date current_time current_timestamp default deferrable delete distinct drop else escape except
        exists for foreign from glob group having if in index inner insert intersect into is isnull join like
        limit not nothing notnull null offset on or order outer primary raise references regexp returning
        rollback select set table then to transaction union unique update using values when where window
        with""".split()
    ),
    "duckdb": frozenset("alter between cube drop force if insert install lock revoke rollback rollup values".split()),
    # PostgreSQL 15's reserved and type_func_name keywords (Appendix C); sqlglot's Postgres generator lists none.
    "postgres": frozenset(
        """all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate
        collation column concurrently constraint create cross current_catalog current_date current_role
        current_schema current_time current_timestamp current_user default deferrable desc distinct do else end
        except false fetch for foreign freeze from full grant group having ilike in initially inner intersect into
        is isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on
        only or order outer overlaps placing primary references returning right select session_user similar some
        symmetric system_user table tablesample then to trailing true union unique user using variadic verbose when
        where window with""".split()
    ),
}


@cache
def _dialect(engine: str) -> Dialect:
    return Dialect.get_or_raise(engine)


@cache
def _reserved(engine: str) -> frozenset[str]:
    return _RESERVED_EXTRA.get(engine, frozenset()) | frozenset(_dialect(engine).generator_class.RESERVED_KEYWORDS)


def _plain(name: str) -> bool:
    """Letters (any script), digits and underscores, not starting with a digit: what both engines and sqlglot
    read as one bare identifier."""
    return bool(name) and name.replace("_", "").isalnum() and not name[0].isdigit()


def identifier(name: str, engine: str = "sqlite") -> exp.Identifier:
    """`name` as a sqlglot identifier, quoted where `engine` (or sqlglot) would not read it back bare (in
    PostgreSQL also a name with capitals: a bare one is folded to lower case)."""
    quoted = not _plain(name) or name.lower() in _reserved(engine) or (engine == "postgres" and name != name.lower())
    return exp.Identifier(this=name, quoted=quoted)


def _sql(e: exp.Expr, engine: str) -> str:
    return _dialect(engine).generate(e, identify=False)


def _ident(name: str, engine: str = "sqlite") -> str:
    return _sql(identifier(name, engine), engine)


def create_table(t: Table, engine: str = "sqlite") -> exp.Create:
    """The CREATE TABLE statement for `t` as a sqlglot expression: columns with their declared types (verbatim)
    and PRIMARY KEY / NOT NULL constraints, a table-level PRIMARY KEY for a composite key, then the foreign
    keys in declaration order."""

    def ids(names: list[str]) -> list[exp.Identifier]:
        return [identifier(n, engine) for n in names]

    single_pk = len(t.primary_key) == 1
    parts: list[exp.Expr] = []
    for c in t.columns:
        constraints = []
        if single_pk and c.primary_key:
            constraints.append(exp.ColumnConstraint(kind=exp.PrimaryKeyColumnConstraint()))
        if c.not_null:
            constraints.append(exp.ColumnConstraint(kind=exp.NotNullColumnConstraint()))
        # The type as the database declares it: sqlglot's own types would rename it (SQLite: VARCHAR -> TEXT).
        kind = exp.DataType(this=exp.DataType.Type.USERDEFINED, kind=c.type)
        parts.append(exp.ColumnDef(this=identifier(c.name, engine), kind=kind, constraints=constraints))
    if len(t.primary_key) > 1:
        parts.append(exp.PrimaryKey(expressions=ids(t.primary_key)))
    for cols, ref, ref_cols in t.foreign_keys:
        reference = exp.Reference(
            this=exp.Table(this=identifier(ref, engine)), expressions=ids([c for c in ref_cols if c])
        )
        parts.append(exp.ForeignKey(expressions=ids(cols), reference=reference))
    schema = exp.Schema(this=exp.Table(this=identifier(t.name, engine)), expressions=parts)
    return exp.Create(this=schema, kind="TABLE")


# Line breaks end a `--` comment (DuckDB ends one at \r too); none may get into one.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def _literal(v, max_chars: int) -> str:
    if isinstance(v, str):
        s = v if len(v) <= max_chars else v[: max_chars - 3] + "..."
        s = _LINE_BREAKS.sub(" ", s)
        return "'" + s.replace("'", "''") + "'"
    if isinstance(v, bytes):
        return "<blob>"
    return _LINE_BREAKS.sub(" ", str(v))


def render_table(t: Table, max_value_chars: int = 40, engine: str = "sqlite") -> str:
    """`create_table(t)` as the generator writes it for `engine`, one column or key per line, with a `--`
    comment after each column that has a description or example values. Valid SQL as it stands."""
    create = create_table(t, engine)
    schema = create.this
    parts = schema.expressions
    out = [f"CREATE TABLE {_sql(schema.this, engine)} ("]
    for i, part in enumerate(parts):
        line = "  " + _sql(part, engine) + ("," if i < len(parts) - 1 else "")
        if i < len(t.columns):
            c = t.columns[i]
            notes = [c.description] if c.description else []
            if c.examples:
                notes.append(f"examples: {', '.join(_literal(v, max_value_chars) for v in c.examples)}")
            if notes:
                line += " -- " + _LINE_BREAKS.sub(" ", "; ".join(notes))
        out.append(line)
    out.append(");")
    return "\n".join(out)


def render_compact(t: Table, max_value_chars: int = 40, engine: str = "sqlite") -> str:
    """`Table orders: id (primary key), customer_id -> customers.id, status (e.g. 'paid')`."""
    refs = {}
    for cols, ref, ref_cols in t.foreign_keys:
        for c, rc in zip(cols, ref_cols, strict=False):
            refs[c] = f"{_ident(ref, engine)}.{_ident(rc, engine)}" if rc else _ident(ref, engine)
    parts = []
    for c in t.columns:
        part = _ident(c.name, engine)
        if c.primary_key:
            part += " (primary key)"
        if c.name in refs:
            part += f" -> {refs[c.name]}"
        if c.examples:
            part += f" (e.g. {', '.join(_literal(v, max_value_chars) for v in c.examples)})"
        parts.append(part)
    return f"Table {_ident(t.name, engine)}: {', '.join(parts)}"
