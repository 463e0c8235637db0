"""The sqlglot guard: exactly one read-only query passes; everything else is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_align.sql import UnsafeSQLError, check_read_only, ensure_read_only, remove_distinct, transpile

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPIDER_DEV = DATA / "spider_sample" / "dev.json"
BIRD_DEV = DATA / "bird_sample" / "dev.json"

ALLOWED = [
    "SELECT 1",
    "SELECT count(*) FROM singer",
    "select name from singer where age > 30 order by age desc limit 3;",
    "SELECT 1; -- trailing comment",
    "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT n FROM r",
    "SELECT name FROM singer UNION SELECT name FROM stadium",
    "SELECT a FROM t INTERSECT SELECT a FROM u",
    "SELECT a FROM t EXCEPT SELECT a FROM u",
    "(SELECT 1)",
    "SELECT * FROM singer AS s JOIN concert AS c ON s.id = c.id WHERE s.name LIKE 'distinct%'",
    "SELECT * FROM t WHERE name GLOB 'a*'",
    "SELECT * FROM (SELECT a, count(DISTINCT b) FROM t GROUP BY a) AS sub",
    'SELECT "Name" FROM "singer"',
]


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb"])
@pytest.mark.parametrize("sql", ALLOWED)
def test_read_only_queries_pass(sql: str, dialect: str) -> None:
    assert check_read_only(sql, dialect) is None


# (sql, dialect, words the reason must contain)
REFUSED = [
    ("", "sqlite", "empty"),
    ("   ;  ", "duckdb", "empty"),
    ("-- only a comment", "sqlite", "empty"),
    ("SELECT 1; DROP TABLE singer", "sqlite", "one statement"),
    ("SELECT 1; SELECT 2", "duckdb", "one statement"),
    ("SELEC name FROM singer", "sqlite", "parse"),
    ("SELECT * FROM singer WHERE", "duckdb", "parse"),
    ("INSERT INTO singer VALUES (1)", "sqlite", "only SELECT queries may run (found Insert)"),
    ("UPDATE singer SET name = 'x'", "duckdb", "Update"),
    ("DELETE FROM singer", "sqlite", "Delete"),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "duckdb", "Merge"),
    ("CREATE TABLE x AS SELECT 1", "sqlite", "Create"),
    ("CREATE TEMP VIEW singer AS SELECT 1", "duckdb", "Create"),
    ("CREATE MACRO m() AS 1", "duckdb", "Create"),
    ("DROP TABLE singer", "sqlite", "Drop"),
    ("ALTER TABLE singer ADD COLUMN x INT", "duckdb", "Alter"),
    ("ATTACH 'x.db' AS x", "sqlite", "Attach"),
    ("ATTACH DATABASE 'x.db' AS x", "duckdb", "Attach"),
    ("DETACH x", "duckdb", "Detach"),
    ("PRAGMA journal_mode=delete", "sqlite", "Pragma"),
    ("PRAGMA user_version=5", "sqlite", "Pragma"),
    ("PRAGMA table_info('singer')", "duckdb", "Pragma"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "duckdb", "Copy"),
    ("INSTALL httpfs", "duckdb", "Install"),
    ("LOAD httpfs", "duckdb", "found LOAD"),
    ("SET threads=8", "duckdb", "Set"),
    ("RESET threads", "duckdb", "found RESET"),
    ("EXPORT DATABASE '/tmp/x'", "duckdb", "parse"),
    ("IMPORT DATABASE '/tmp/x'", "duckdb", "parse"),
    ("VACUUM", "sqlite", "found VACUUM"),
    ("VACUUM INTO 'v.db'", "sqlite", "found VACUUM"),
    ("CALL pragma_version()", "duckdb", "found CALL"),
    ("USE other", "duckdb", "Use"),
    ("CHECKPOINT", "duckdb", "found CHECKPOINT"),
    ("BEGIN", "sqlite", "Transaction"),
    ("DESCRIBE singer", "duckdb", "Describe"),
    ("SHOW TABLES", "duckdb", "Show"),
    ("SUMMARIZE singer", "duckdb", "Summarize"),
    ("EXPLAIN SELECT 1", "duckdb", "found EXPLAIN"),
    ("SELECT 1 INTO x", "duckdb", "Into"),
    ("SAVEPOINT a", "sqlite", "found SAVEPOINT"),
    ("VALUES (1), (2)", "sqlite", "found Values"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "duckdb", "Delete"),
    ("SELECT * FROM read_csv('/etc/passwd')", "duckdb", "read_csv"),
    ("SELECT * FROM read_csv_auto('x.csv')", "duckdb", "read_csv_auto"),
    ("SELECT * FROM read_parquet('x.parquet')", "duckdb", "read_parquet"),
    ("SELECT * FROM read_json_auto('x.json')", "duckdb", "read_json_auto"),
    ("SELECT content FROM read_text('/etc/passwd')", "duckdb", "read_text"),
    ("SELECT * FROM (SELECT * FROM read_blob('/etc/passwd'))", "duckdb", "read_blob"),
    ("SELECT * FROM singer, glob('/etc/*')", "duckdb", "glob"),
    ("SELECT * FROM parquet_scan('x')", "duckdb", "parquet_scan"),
    ("SELECT * FROM sqlite_scan('x.db', 't')", "duckdb", "sqlite_scan"),
    ("SELECT * FROM postgres_scan('dsn', 'public', 't')", "duckdb", "postgres_scan"),
    ("SELECT * FROM query_table('singer')", "duckdb", "query_table"),
    ("SELECT * FROM query('SELECT 1')", "duckdb", "query"),
    ("SELECT * FROM iceberg_scan('x')", "duckdb", "iceberg_scan"),
    ("SELECT readfile('/etc/passwd')", "sqlite", "readfile"),
    ("SELECT writefile('/tmp/x', 'y')", "sqlite", "writefile"),
    ("SELECT load_extension('/tmp/evil')", "sqlite", "load_extension"),
    ("SELECT * FROM pragma_table_info('singer')", "sqlite", "pragma_table_info"),
    ("SELECT * FROM '/etc/passwd'", "duckdb", "file"),
    ("SELECT * FROM 'answers.csv'", "duckdb", "file"),
    ('SELECT * FROM "answers.parquet"', "duckdb", "file"),
    ("SELECT * FROM singer JOIN 's3://bucket/x.parquet' ON true", "duckdb", "file"),
    ("SELECT * FROM '/etc/passwd'", "sqlite", "file"),
]


@pytest.mark.parametrize(("sql", "dialect", "words"), REFUSED)
def test_unsafe_statements_are_refused_with_a_reason(sql: str, dialect: str, words: str) -> None:
    reason = check_read_only(sql, dialect)
    assert reason is not None, f"{sql!r} was allowed"
    assert words.lower() in reason.lower(), reason
    with pytest.raises(UnsafeSQLError, match="."):
        ensure_read_only(sql, dialect)


def test_unsafe_sql_error_is_a_value_error() -> None:
    assert issubclass(UnsafeSQLError, ValueError)


def test_sql_length_is_capped() -> None:
    sql = "SELECT 1" + " UNION ALL SELECT 1" * 2000
    assert check_read_only(sql, "sqlite") is not None
    assert "too long" in check_read_only(sql, "sqlite")
    assert check_read_only(sql, "sqlite", max_sql_chars=len(sql)) is None
    assert check_read_only("SELECT 1", "sqlite", max_sql_chars=5) is not None


@pytest.mark.skipif(not SPIDER_DEV.exists(), reason="Spider sample not found")
def test_every_spider_gold_query_is_allowed() -> None:
    examples = json.loads(SPIDER_DEV.read_text())
    refused = [(e["query"], check_read_only(e["query"], "sqlite")) for e in examples]
    refused = [r for r in refused if r[1] is not None]
    assert len(examples) > 200
    assert refused == []


@pytest.mark.skipif(not BIRD_DEV.exists(), reason="BIRD sample not found")
def test_every_bird_gold_query_is_allowed() -> None:
    examples = json.loads(BIRD_DEV.read_text())
    assert len(examples) >= 60
    assert [e["SQL"] for e in examples if check_read_only(e["SQL"], "sqlite") is not None] == []


def test_transpile() -> None:
    assert transpile("SELECT a FROM t WHERE b = 1", "sqlite", "sqlite") == "SELECT a FROM t WHERE b = 1"
    # DuckDB's ILIKE has no SQLite spelling; sqlglot rewrites it.
    out = transpile("SELECT name FROM singer WHERE name ILIKE 'j%'", "duckdb", "sqlite")
    assert "ILIKE" not in out.upper() and "LIKE" in out.upper()
    assert transpile("SELECT CAST(a AS TEXT) FROM t", "sqlite", "duckdb") == "SELECT CAST(a AS TEXT) FROM t"
    with pytest.raises(ValueError, match="one statement"):
        transpile("SELECT 1; SELECT 2", "sqlite", "duckdb")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT DISTINCT a FROM t", "SELECT  a FROM t"),
        ("select distinct a from t", "select  a from t"),
        ("SELECT count(DISTINCT a) FROM t", "SELECT count( a) FROM t"),
        (
            "SELECT DISTINCT a, count(DISTINCT b) FROM t WHERE c = 'distinct'",
            "SELECT  a, count( b) FROM t WHERE c = 'distinct'",
        ),
        ("SELECT a FROM t WHERE b = 'DISTINCT x'", "SELECT a FROM t WHERE b = 'DISTINCT x'"),
        ('SELECT "distinct" FROM t', 'SELECT "distinct" FROM t'),
        ("SELECT a FROM t", "SELECT a FROM t"),
    ],
)
def test_remove_distinct(sql: str, expected: str) -> None:
    assert remove_distinct(sql) == expected
