"""Scoring: gold on gold is perfect on both engines, SQLite SQL runs on DuckDB, bad gold is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_align.data import load_examples
from nl2sql_align.errors import DataError
from nl2sql_align.evaluate import read_predictions, score_predictions, summarize
from nl2sql_align.sql import SQLExecutor
from tests.conftest import SPIDER, sqlite_to_duckdb


@pytest.fixture(scope="module")
def executor():
    with SQLExecutor(workers=2, timeout=5.0) as ex:
        yield ex


def test_sqlite_gold_runs_on_duckdb_through_transpilation(tmp_path: Path, executor):
    db = tmp_path / "concert_singer.duckdb"
    sqlite_to_duckdb(SPIDER / "database" / "concert_singer" / "concert_singer.sqlite", db)
    spider = [e for e in load_examples(f"spider:{SPIDER}") if e.db_id == "concert_singer"]
    data = tmp_path / "cs.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"question": e.question, "sql": e.sql, "db": str(db), "dialect": "sqlite"}) for e in spider
        )
    )
    examples = load_examples(str(data))
    assert {e.db.engine for e in examples} == {"duckdb"}
    preds = [e.sql for e in examples]
    # Some Spider gold is not valid on DuckDB even after transpiling (stricter GROUP BY, no implicit
    # VARCHAR/INTEGER comparison): those are reported as bad gold, and the rest must run and agree.
    rows = score_predictions(examples, preds, executor=executor, pred_dialect="sqlite", skip_bad_gold=True)
    assert len(rows) >= 0.6 * len(examples)
    summary = summarize(rows, "spider")
    assert summary["executable"] == 100.0 and summary["ex"] == 100.0
    # A wrong prediction in the same dialect is still told apart.
    wrong = score_predictions(examples[:1], ["SELECT count(*) FROM stadium"], executor=executor, pred_dialect="sqlite")
    assert wrong[0]["executable"] and not wrong[0]["correct"]


def test_sqlite_only_syntax_needs_the_transpiler(tmp_path: Path, executor):
    db = tmp_path / "cs.duckdb"
    sqlite_to_duckdb(SPIDER / "database" / "concert_singer" / "concert_singer.sqlite", db)
    from nl2sql_align.sql import Database

    sql = "SELECT count(*) FROM singer WHERE strftime('%Y', '2020-05-01') = '2020'"  # SQLite's argument order
    native = executor.execute(Database.from_path(str(db)), sql)
    transpiled = executor.execute(Database.from_path(str(db)), sql, dialect="sqlite")
    assert not native.ok
    assert transpiled.ok and transpiled.rows == [(6,)]


def test_failing_gold_is_named_or_skipped(tmp_path: Path, spider_db: Path, executor):
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"id": "ok", "question": "q", "sql": "SELECT count(*) FROM singer", "db": str(spider_db)})
        + "\n"
        + json.dumps({"id": "broken", "question": "q", "sql": "SELECT nope FROM singer", "db": str(spider_db)})
        + "\n"
    )
    examples = load_examples(str(data))
    with pytest.raises(DataError, match=rf"{data}:2: gold SQL fails .*no such column"):
        score_predictions(examples, ["SELECT 1", "SELECT 1"], executor=executor)
    rows = score_predictions(examples, ["SELECT count(*) FROM singer", "x"], executor=executor, skip_bad_gold=True)
    assert [r["id"] for r in rows] == ["ok"] and rows[0]["correct"]


def test_distinct_is_dropped_for_spider_unless_kept(spider_db: Path, executor, tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "sql": "SELECT country FROM singer", "db": str(spider_db)}) + "\n")
    examples = load_examples(str(data))
    pred = ["SELECT DISTINCT country FROM singer"]
    assert score_predictions(examples, pred, executor=executor)[0]["correct"]  # official: DISTINCT removed
    assert not score_predictions(examples, pred, executor=executor, keep_distinct=True)[0]["correct"]
    assert score_predictions(examples, pred, executor=executor, metric="bird")[0]["correct"]  # set semantics


def test_read_predictions_formats(tmp_path: Path):
    j = tmp_path / "p.jsonl"
    j.write_text('{"index": 1, "sql": "SELECT 2"}\n')
    assert read_predictions(j, 3) == ["", "SELECT 2", ""]
    b = tmp_path / "p.json"
    b.write_text(json.dumps({"0": "SELECT 1\t----- bird -----\tdb", "1": "SELECT 2\t----- bird -----\tdb"}))
    assert read_predictions(b, 2) == ["SELECT 1", "SELECT 2"]
    t = tmp_path / "p.sql"
    t.write_text("SELECT 1\tdb\nSELECT 2\n")
    assert read_predictions(t, 2) == ["SELECT 1", "SELECT 2"]
    j.write_text('{"index": 9, "sql": "x"}\n')
    from nl2sql_align.errors import UserError

    with pytest.raises(UserError, match=r"p.jsonl:1: index 9 is outside the data"):
        read_predictions(j, 3)
