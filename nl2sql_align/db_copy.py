"""Copy a SQLite or DuckDB database into PostgreSQL (`nl2sql-align db copy SRC DSN`), and make the read-only role
the sandbox needs.

What is copied: every table of the source (SQLite: its tables; DuckDB: schema main), with its rows, primary key,
NOT NULL flags and foreign keys, into one schema of the target database (created if missing, with the database
itself). Names are lower-cased: SQLite and DuckDB ignore the case of names, PostgreSQL folds unquoted names to
lower case, so the same SQL (gold written for SQLite, transpiled by `sql.guard.transpile`) finds them.

Column types. DuckDB's types are strict and are translated by sqlglot. SQLite's are not: a column declared
INTEGER may hold text, so each column's PostgreSQL type comes from what it holds (`typeof()` over its rows):
bigint when every value is an integer or text that is an integer written canonically ('2014', not '007' or ''),
SQLite comparing such text with numbers as numbers (Spider joins a TEXT concert.Stadium_ID to an INTEGER key);
otherwise, within the declared affinity: TEXT stays text, an INTEGER/NUMERIC/REAL/untyped column becomes double
precision when it holds numbers, bytea for blobs only, and text as soon as it holds any other text. Text values lose
NUL characters (PostgreSQL text cannot hold them) and undecodable bytes (as Spider's harness reads them).

Constraints are added after the rows; one the data breaks (SQLite does not enforce foreign keys, and lets NULL
and duplicates into some primary keys) is left out and reported, never an error. The whole copy is one
transaction: it lands completely or not at all.

`reader`: a role for the sandbox (sql/backends.py refuses anything more powerful): LOGIN, nothing but CONNECT on
the database, USAGE and SELECT on the schema's tables, temp_file_limit and read-only transactions as role
defaults, and CREATE on the schema revoked from PUBLIC (PostgreSQL before 15 granted it).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from nl2sql_align.data.schema import read_schema
from nl2sql_align.errors import DataError
from nl2sql_align.sql.backends import Database, is_dsn, redact_dsn

TEMP_FILE_LIMIT = "1GB"


@dataclass
class CopyReport:
    target: str  # the URI, password redacted
    schema: str
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    skipped_constraints: list[str] = field(default_factory=list)  # "table: constraint (why)"
    stripped_nul: int = 0  # text values that lost NUL characters
    reader: str | None = None

    def lines(self) -> list[str]:
        out = [f"{self.target} (schema {self.schema}): {len(self.tables)} tables, {sum(self.tables.values())} rows"]
        out += [f"  {t}: {n} rows" for t, n in self.tables.items()]
        out += [f"  skipped constraint {c}" for c in self.skipped_constraints]
        if self.stripped_nul:
            out.append(f"  {self.stripped_nul} text values lost NUL characters")
        if self.reader:
            out.append(f"  read-only role {self.reader}: SELECT on {self.schema}")
        return out


@dataclass
class _Table:
    name: str  # as in the source
    columns: list[tuple[str, str]]  # (source name, PostgreSQL type)
    primary_key: list[str]
    not_null: list[str]
    foreign_keys: list[tuple[list[str], str, list[str]]]


# --- reading the source -------------------------------------------------------------------------------------


def _affinity(declared: str) -> str:
    """SQLite's column affinity rules (https://sqlite.org/datatype3.html, 3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if not t or "BLOB" in t:
        return "blob"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "numeric"


def sqlite_column_type(declared: str, held: set[str]) -> str:
    """The PostgreSQL type for a SQLite column declared `declared` holding values of the typeof() kinds `held`
    ("integer", "real", "text", "blob", "null"; "int-text" for text that is an integer written canonically)."""
    affinity = _affinity(declared)
    held = held - {"null"}
    if held and held <= {"int-text", "integer"}:
        # Numbers kept as text (Spider: concert.Year '2014' joined with and compared to integers). SQLite
        # compares them with integers as numbers; so does a bigint column in PostgreSQL, and '2014' too.
        return "bigint"
    held = {"text" if h == "int-text" else h for h in held}
    if affinity == "text":
        return "text"
    if not held:  # no values: the affinity decides
        return {"integer": "bigint", "real": "double precision", "numeric": "numeric"}.get(affinity, "text")
    if held <= {"integer"}:
        return "bigint"
    if held <= {"integer", "real"}:
        return "double precision"
    if held == {"blob"}:
        return "bytea"
    return "text"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_sqlite(path: str) -> tuple[list[_Table], Any]:
    conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode(errors="ignore")
    tables = []
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
    ]
    for name in names:
        info = conn.execute(f"PRAGMA table_info({_q(name)})").fetchall()  # cid, name, type, notnull, dflt, pk
        columns = []
        for _cid, col, declared, _nn, _d, _pk in info:
            held = {r[0] for r in conn.execute(f"SELECT DISTINCT typeof({_q(col)}) FROM {_q(name)}")}
            if "text" in held:
                odd = conn.execute(
                    f"SELECT 1 FROM {_q(name)} WHERE typeof({_q(col)}) = 'text' "
                    f"AND {_q(col)} IS NOT CAST(CAST({_q(col)} AS INTEGER) AS TEXT) LIMIT 1"
                ).fetchone()
                if odd is None:
                    held = (held - {"text"}) | {"int-text"}
            columns.append((col, sqlite_column_type(declared or "", held)))
        pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        fks: dict[int, tuple[list[str], str, list[str]]] = {}
        for r in sorted(conn.execute(f"PRAGMA foreign_key_list({_q(name)})").fetchall(), key=lambda r: (-r[0], r[1])):
            entry = fks.setdefault(r[0], ([], r[2], []))
            entry[0].append(r[3])
            entry[2].append(r[4] or "")
        tables.append(_Table(name, columns, pk, [r[1] for r in info if r[3]], list(fks.values())))
    return tables, conn


def _duckdb_type(declared: str) -> str:
    from sqlglot import exp

    try:
        return exp.DataType.build(declared, dialect="duckdb").sql(dialect="postgres")
    except Exception:  # noqa: BLE001  a type sqlglot cannot read (a STRUCT, a UNION): keep its text form
        return "text"


def _read_duckdb(path: str) -> tuple[list[_Table], Any]:
    """The tables, keys and NOT NULL flags as data/schema.py reads them for prompts (one DuckDB catalogue
    reader), and a read-only connection for the rows."""
    import duckdb

    tables = [
        _Table(
            t.name,
            [(c.name, _duckdb_type(c.type)) for c in t.columns],
            list(t.primary_key),
            [c.name for c in t.columns if c.not_null or c.name in t.primary_key],
            list(t.foreign_keys),
        )
        for t in read_schema(Database(path, "duckdb"), example_values=0)
    ]
    return tables, duckdb.connect(path, read_only=True, config={"enable_external_access": False})


# --- writing ------------------------------------------------------------------------------------------------


def _clean(value: Any, pg_type: str, report: CopyReport) -> Any:
    if isinstance(value, str) and "\x00" in value:
        report.stripped_nul += 1
        return value.replace("\x00", "")
    if pg_type == "text" and value is not None and not isinstance(value, str):
        if isinstance(value, bytes):
            return value.decode(errors="ignore").replace("\x00", "")
        return str(value)  # a number in a column that also holds text: as SQLite would print it
    return value


def _connect_creating(dsn: str, create: bool) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=False)
    except psycopg.OperationalError as e:
        missing = 'database "' in str(e) and "does not exist" in str(e)
        if not (create and missing):
            raise DataError(f"cannot connect to {redact_dsn(dsn)}: {str(e).strip().splitlines()[-1]}") from None
    dbname = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    with psycopg.connect(dsn, dbname="postgres", autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))
    return psycopg.connect(dsn, autocommit=False)


def copy_database(
    source: str | os.PathLike[str] | Database,
    dsn: str,
    *,
    schema: str = "public",
    replace: bool = False,
    reader: str | None = None,
    create_database: bool = True,
) -> CopyReport:
    """Copy the SQLite/DuckDB database `source` into schema `schema` of the PostgreSQL database `dsn` (created
    when missing and `create_database`). Existing tables of the same names are an error unless `replace`.
    `reader`: also create (or update) that role as a SELECT-only login for the sandbox."""
    from psycopg import sql as pgsql

    src = source if isinstance(source, Database) else Database.from_path(source)
    if src.is_server:
        raise DataError(f"{src.label}: the source must be a SQLite or DuckDB file")
    if not os.path.isfile(src.path):
        raise DataError(f"database not found: {src.path}")
    if not is_dsn(dsn):
        raise DataError(f"{dsn!r}: the target must be a postgresql:// URI")
    tables, source_conn = _read_sqlite(src.path) if src.engine == "sqlite" else _read_duckdb(src.path)
    report = CopyReport(redact_dsn(dsn), schema)
    lowered = [t.name.lower() for t in tables]
    if len(set(lowered)) != len(lowered):
        raise DataError(f"{src.path}: table names that differ only in case cannot be copied to PostgreSQL")
    ident = pgsql.Identifier
    conn = _connect_creating(dsn, create_database)
    try:
        with conn.transaction():
            conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(schema)))
            for t in tables:
                target = ident(schema, t.name.lower())
                exists = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", (f"{_q(schema)}.{_q(t.name.lower())}",)
                ).fetchone()[0]
                if exists and not replace:
                    raise DataError(
                        f"table {schema}.{t.name.lower()} exists in {report.target} (replace it with --replace)"
                    )
                if exists:
                    conn.execute(pgsql.SQL("DROP TABLE {} CASCADE").format(target))
                names = [c.lower() for c, _ in t.columns]
                if len(set(names)) != len(names):
                    raise DataError(f"{src.path}: table {t.name} has columns that differ only in case")
                columns = pgsql.SQL(", ").join(
                    pgsql.SQL("{} {}").format(ident(n), pgsql.SQL(pg_type))
                    for n, (_, pg_type) in zip(names, t.columns, strict=True)
                )
                conn.execute(pgsql.SQL("CREATE TABLE {} ({})").format(target, columns))
                rows = source_conn.execute(
                    f"SELECT {', '.join(_q(c) for c, _ in t.columns)} FROM {_q(t.name)}"
                ).fetchall()
                types = [pg_type for _, pg_type in t.columns]
                with conn.cursor().copy(
                    pgsql.SQL("COPY {} ({}) FROM STDIN").format(target, pgsql.SQL(", ").join(map(ident, names)))
                ) as copy:
                    for row in rows:
                        copy.write_row([_clean(v, ty, report) for v, ty in zip(row, types, strict=True)])
                report.tables[t.name.lower()] = len(rows)
            for t in tables:
                _add_constraints(conn, schema, t, report)
            if reader:
                grant_reader(conn, reader, schema)
                report.reader = reader
    finally:
        conn.close()
        source_conn.close()
    return report


def _try(conn: Any, statement: Any, what: str, report: CopyReport) -> None:
    import psycopg

    try:
        with conn.transaction():  # a savepoint: a broken constraint rolls back only itself
            conn.execute(statement)
    except psycopg.Error as e:
        report.skipped_constraints.append(f"{what} ({str(e).strip().splitlines()[0]})")


def _add_constraints(conn: Any, schema: str, t: _Table, report: CopyReport) -> None:
    from psycopg import sql as pgsql

    ident = pgsql.Identifier
    target = ident(schema, t.name.lower())

    def cols(names: list[str]) -> Any:
        return pgsql.SQL(", ").join(ident(n.lower()) for n in names)

    if t.primary_key:
        statement = pgsql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(target, cols(t.primary_key))
        _try(conn, statement, f"{t.name.lower()}: PRIMARY KEY ({', '.join(t.primary_key)})", report)
    for c in t.not_null:
        if c in t.primary_key:
            continue
        statement = pgsql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(target, ident(c.lower()))
        _try(conn, statement, f"{t.name.lower()}: {c} NOT NULL", report)
    for fk_cols, ref, ref_cols in t.foreign_keys:
        refs = cols(ref_cols) if all(ref_cols) else None
        reference = ident(schema, ref.lower())
        statement = (
            pgsql.SQL("ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {} ({})").format(
                target, cols(fk_cols), reference, refs
            )
            if refs is not None
            else pgsql.SQL("ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {}").format(target, cols(fk_cols), reference)
        )
        what = f"{t.name.lower()}: FOREIGN KEY ({', '.join(fk_cols)}) REFERENCES {ref}({', '.join(ref_cols)})"
        _try(conn, statement, what, report)


def grant_reader(conn: Any, role: str, schema: str) -> None:
    """Create `role` if missing (LOGIN, no other attribute) and give it exactly what the sandbox allows:
    CONNECT on the current database, USAGE on `schema`, SELECT on its tables; temp_file_limit and read-only
    transactions as its defaults. Needs a superuser connection (temp_file_limit is superuser-only)."""
    from psycopg import sql as pgsql

    ident = pgsql.Identifier
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        conn.execute(pgsql.SQL("CREATE ROLE {} LOGIN").format(ident(role)))
    statements = [
        "ALTER ROLE {role} SET temp_file_limit = '" + TEMP_FILE_LIMIT + "'",
        "ALTER ROLE {role} SET default_transaction_read_only = on",
        "REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
        "GRANT CONNECT ON DATABASE {db} TO {role}",
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
    ]
    db = conn.execute("SELECT current_database()").fetchone()[0]
    for s in statements:
        conn.execute(pgsql.SQL(s).format(role=ident(role), schema=ident(schema), db=ident(db)))
