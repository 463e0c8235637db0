"""The DDL schema prompt is valid SQL for its database: reserved words and odd names quoted, NOT NULL kept,
foreign keys in declaration order, and running it recreates the same tables."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from nl2sql_align.data.schema import _RESERVED_EXTRA, _ident, _schema_text, create_table, read_schema, schema_text
from nl2sql_align.sql import Database

# Reserved words as names, a name with a space, NOT NULL columns, a composite primary key, a composite and a
# single-column foreign key declared in that order, and a column that is part of the key and NOT NULL.
DDL = [
    'CREATE TABLE "group" (gid INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, note TEXT)',
    "CREATE TABLE cust (a INTEGER, b INTEGER, label TEXT NOT NULL, PRIMARY KEY (a, b))",
    'CREATE TABLE "order" (id INTEGER NOT NULL, "select" TEXT, "two words" INTEGER NOT NULL, ca INTEGER, '
    'cb INTEGER, g INTEGER, "key" DECIMAL(8,2), PRIMARY KEY (id, "select"), '
    'FOREIGN KEY (ca, cb) REFERENCES cust(a, b), FOREIGN KEY (g) REFERENCES "group"(gid))',
]
ROWS = [
    # A line break inside an example value: DuckDB ends a `--` comment at \r as well as at \n.
    "INSERT INTO \"group\" VALUES (1, 'Admins', 'first line\rsecond line'), (2, 'Users', 'x\ny')",
    "INSERT INTO cust VALUES (1, 1, 'one'), (1, 2, 'two')",
    "INSERT INTO \"order\" VALUES (10, 'it''s', 5, 1, 2, 1, 2.5), (11, 'b', 6, 1, 1, 2, 3.25)",
]


def _make(engine: str, path: Path, with_rows: bool = True) -> Database:
    conn = sqlite3.connect(path) if engine == "sqlite" else duckdb.connect(str(path))
    for sql in DDL + (ROWS if with_rows else []):
        conn.execute(sql)
    if engine == "sqlite":
        conn.commit()
    conn.close()
    return Database(str(path), engine)


@pytest.fixture(params=["sqlite", "duckdb"])
def db(request, tmp_path: Path) -> Database:
    return _make(request.param, tmp_path / f"orig.{request.param}", with_rows=True)


def _catalog(db: Database) -> dict:
    """{table: (columns [(name, type, not null)], primary key, foreign keys in the catalog's own order)},
    read straight from the engine's catalog (not through nl2sql_align.data.schema)."""
    out = {}
    if db.engine == "sqlite":
        conn = sqlite3.connect(db.path)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        for t in names:
            info = conn.execute(f'PRAGMA table_info("{t}")').fetchall()
            cols = [(r[1], r[2], bool(r[3])) for r in info]
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            fks = [r[:5] for r in conn.execute(f'PRAGMA foreign_key_list("{t}")')]  # id, seq, table, from, to
            out[t] = (cols, pk, fks)
    else:
        conn = duckdb.connect(db.path, read_only=True)
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT internal ORDER BY table_oid"
            ).fetchall()
        ]
        for t in names:
            cols = conn.execute(
                "SELECT column_name, data_type, NOT is_nullable FROM duckdb_columns() WHERE table_name = ? "
                "ORDER BY column_index",
                [t],
            ).fetchall()
            cons = conn.execute(
                "SELECT constraint_type, constraint_column_names, referenced_table, referenced_column_names "
                "FROM duckdb_constraints() WHERE table_name = ? AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') "
                "ORDER BY constraint_index",
                [t],
            ).fetchall()
            pk = [c[1] for c in cons if c[0] == "PRIMARY KEY"]
            fks = [c[1:] for c in cons if c[0] == "FOREIGN KEY"]
            out[t] = (cols, pk, fks)
    conn.close()
    return out


def _recreate(ddl: str, engine: str, path: Path) -> Database:
    """Run the prompt text, comments and all, in a fresh empty database."""
    if engine == "sqlite":
        conn = sqlite3.connect(path)
        conn.executescript(ddl)
        conn.commit()
    else:
        conn = duckdb.connect(str(path))
        conn.execute(ddl)
    conn.close()
    return Database(str(path), engine)


def _text(db: Database, format: str = "ddl") -> str:
    _schema_text.cache_clear()
    return schema_text(db, example_values=3, format=format)


def test_ddl_prompt_recreates_the_tables(db: Database, tmp_path: Path):
    text = _text(db)
    assert "-- examples:" in text  # the comments are there, and they are run along with the DDL
    copy = _recreate(text, db.engine, tmp_path / f"copy.{db.engine}")
    original, recreated = _catalog(db), _catalog(copy)
    # Tables in the catalog's order (DuckDB's changes when a file is reopened, the same way for both).
    assert list(recreated) == list(original) and set(original) == {"group", "cust", "order"}
    for t in original:
        assert recreated[t] == original[t], t  # columns, types, NOT NULL flags, keys, foreign keys in order


def test_ddl_prompt_quotes_reserved_words_and_keeps_not_null(db: Database):
    text = _text(db)
    sqlite = db.engine == "sqlite"
    assert 'CREATE TABLE "group" (' in text and 'CREATE TABLE "order" (' in text
    assert "  gid INTEGER PRIMARY KEY, -- examples: 1, 2" in text  # DuckDB's implied NOT NULL is not repeated
    name_type = "VARCHAR(20)" if sqlite else "VARCHAR"  # the type as the database reports it
    assert f"  name {name_type} NOT NULL, -- examples: 'Admins', 'Users'" in text
    # Declared NOT NULL on a key column: SQLite keeps the flag; in DuckDB the key implies it.
    assert f"  id INTEGER{' NOT NULL' if sqlite else ''}, -- examples: 10, 11" in text
    assert '  "two words" INTEGER NOT NULL, -- examples: 5, 6' in text
    assert "  key DECIMAL(8,2), -- examples:" in text  # both engines and sqlglot read `key` bare: left bare
    assert '  PRIMARY KEY (id, "select"),' in text
    assert "PRIMARY KEY (a, b)" in text
    # The example comments stay on their line.
    assert "first line second line" in text and "'x y'" in text


def test_foreign_keys_in_declaration_order(db: Database):
    text = _text(db)
    first = text.index("FOREIGN KEY (ca, cb) REFERENCES cust(a, b),")
    second = text.index('FOREIGN KEY (g) REFERENCES "group"(gid)\n);')
    assert first < second
    order = next(t for t in read_schema(db, 0) if t.name == "order")
    assert order.foreign_keys == [(["ca", "cb"], "cust", ["a", "b"]), (["g"], "group", ["gid"])]
    compact = _text(db, "compact")
    assert 'Table "order": id (primary key) (e.g. 10, 11), "select" (primary key)' in compact
    assert "ca -> cust.a" in compact and 'g -> "group".gid' in compact


def test_ddl_is_what_sqlglot_generates(db: Database):
    """Without its comments and line breaks, the prompt is the sqlglot generator's text for create_table(),
    and sqlglot reads it back to the same statements."""
    text = _text(db)
    bare = re.sub(r" -- [^\n]*", "", text)
    tables = read_schema(db, 0)
    generated = "; ".join(create_table(t, db.engine).sql(db.engine) for t in tables) + ";"
    assert re.sub(r"\s+", " ", bare).replace("( ", "(").replace(" )", ")") == generated
    parsed = sqlglot.parse(text, read=db.engine)
    assert [p.this.this.name for p in parsed] == [t.name for t in tables]
    assert {t.name for t in tables} == {"group", "cust", "order"}
    assert all(isinstance(p, exp.Create) for p in parsed)


def test_sqlite_reference_without_columns(tmp_path: Path):
    p = tmp_path / "r.sqlite"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE c (x INTEGER REFERENCES p, y INTEGER NOT NULL REFERENCES p(id))")
    conn.commit()
    conn.close()
    db = Database(str(p), "sqlite")
    text = _text(db)
    assert "FOREIGN KEY (x) REFERENCES p,\n  FOREIGN KEY (y) REFERENCES p(id)\n);" in text
    copy = _recreate(text, "sqlite", tmp_path / "copy.sqlite")
    assert _catalog(copy) == _catalog(db)


# ---------------------------------------------------------------------------------------------------------
# Which words are quoted

# SQLite's keywords (sqlite3_keyword_name, SQLite 3.40); the sqlite3 module cannot list them.
SQLITE_KEYWORDS = """abort action add after all alter always analyze and as asc attach autoincrement before begin
between by cascade case cast check collate column commit conflict constraint create cross current current_date
current_time current_timestamp database default deferrable deferred delete desc detach distinct do drop each else
end escape except exclude exclusive exists explain fail filter first following for foreign from full generated
glob group groups having if ignore immediate in index indexed initially inner insert instead intersect into is
isnull join key last left like limit match materialized natural no not nothing notnull null nulls of offset on or
order others outer over partition plan pragma preceding primary query raise range recursive references regexp
reindex release rename replace restrict returning right rollback row rows savepoint select set table temp temporary
then ties to transaction trigger unbounded union unique update using vacuum values view virtual when where window
with without""".split()
ORDINARY = ["name", "year", "date", "type", "value", "text", "key", "first", "last", "rank", "match", "action"]

PROBES = [
    "SELECT {w} FROM {w}",
    "SELECT x.{w} FROM {w} AS x WHERE x.{w} = 42",
    "SELECT {w} FROM t2 WHERE {w} = 42 AND b = 1",
    "SELECT {w} FROM t2 WHERE b = 1 GROUP BY {w} ORDER BY {w}",
    "SELECT {w}.{w}, b FROM {w} JOIN t2 USING (b) ORDER BY {w}.{w} DESC",
    "SELECT COUNT({w}) FROM t2 HAVING MAX({w}) > 0",
    "SELECT {w} FROM {w} GROUP BY {w} HAVING COUNT({w}) > 0",
]


def _bare_fails(engine: str, w: str) -> str | None:
    """Why `w` cannot be a bare table and column name in `engine` or in sqlglot's parser; None if it can."""
    conn = sqlite3.connect(":memory:") if engine == "sqlite" else duckdb.connect()
    try:
        try:
            conn.execute(f"CREATE TABLE {w} ({w} INT, b INT)")
            conn.execute(f"INSERT INTO {w} VALUES (42, 1)")
        except Exception as e:
            return f"CREATE: {e}"
        conn.execute(f'CREATE TABLE t2 ("{w}" INT, b INT)')
        conn.execute("INSERT INTO t2 VALUES (42, 1)")
        for probe in PROBES:
            q = probe.format(w=w)
            try:
                rows = conn.execute(q).fetchall()
            except Exception as e:
                return f"{q}: {e}"
            if rows and rows[0][0] not in (42, 1):
                return f"{q} reads {rows[0][0]!r}"
            try:
                tree = sqlglot.parse_one(q, read=engine)
            except Exception as e:
                return f"sqlglot {q}: {e}"
            if w not in {i.name.lower() for i in tree.find_all(exp.Identifier)}:
                return f"sqlglot {q} reads {tree.sql(engine)}"
        return None
    finally:
        conn.close()


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_quoting_covers_every_keyword_and_no_more(engine: str):
    if engine == "sqlite":
        words = SQLITE_KEYWORDS
    else:
        words = [r[0] for r in duckdb.sql("SELECT keyword_name FROM duckdb_keywords()").fetchall()]
    unquoted_but_failing = {}
    for w in set(words) | set(ORDINARY):
        quoted = _ident(w, engine).startswith('"')
        if not quoted and (why := _bare_fails(engine, w)):
            unquoted_but_failing[w] = why
    assert not unquoted_but_failing
    # Our own additions are each needed (sqlglot's generator list is sqlglot's business).
    assert sorted(w for w in _RESERVED_EXTRA[engine] if _bare_fails(engine, w) is None) == []
    assert [w for w in ORDINARY if _ident(w, engine) != w] == []


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_odd_names_are_quoted(engine: str):
    assert _ident("two words", engine) == '"two words"'
    assert _ident("1st", engine) == '"1st"'
    assert _ident('say "hi"', engine) == '"say ""hi"""'
    assert _ident("Order", engine) == '"Order"'
    assert _ident("名前", engine) == "名前"  # letters of any script read bare in both engines and sqlglot
    assert _ident("Singer_ID", engine) == "Singer_ID"
