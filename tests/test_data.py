"""The one data loader: every format, clear errors, schema text and prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nl2sql_align.data import build_messages, extract_sql, format_answer, load_examples, schema_text
from nl2sql_align.data.schema import _schema_text
from nl2sql_align.errors import DataError
from tests.conftest import BIRD, SPIDER


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------------
# Native JSONL


def test_native_jsonl_by_path_and_by_db_id(tmp_path: Path, spider_db: Path):
    f = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "question": "How many singers?", "sql": "SELECT count(*) FROM singer", "db": str(spider_db)},
            {
                "question": "List stadium names.",
                "sql": "SELECT name FROM stadium",
                "db": "concert_singer",
                "evidence": "stadium means venue",
            },
        ],
    )
    exs = load_examples(str(f), db_dir=SPIDER / "database")
    assert [e.id for e in exs] == ["a", "d-1"]
    assert exs[0].db.path == str(spider_db.resolve()) and exs[0].db.engine == "sqlite"
    assert exs[1].db == exs[0].db and exs[1].db_id == "concert_singer"
    assert exs[1].evidence == "stadium means venue"


def test_native_jsonl_bad_line_names_file_and_line(tmp_path: Path, spider_db: Path):
    good = {"question": "q", "sql": "SELECT 1", "db": str(spider_db)}
    f = _write_jsonl(tmp_path / "d.jsonl", [good, good | {"id": "x"}, "{not json"])
    with pytest.raises(DataError, match=rf"{f}:3: not valid JSON"):
        load_examples(str(f))
    f = _write_jsonl(tmp_path / "e.jsonl", [good, {"question": "q", "db": str(spider_db)}])
    with pytest.raises(DataError, match=rf"{f}:2: missing or empty field\(s\) sql"):
        load_examples(str(f))


def test_missing_database_names_what_was_looked_for(tmp_path: Path):
    f = _write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "sql": "SELECT 1", "db": "nowhere_db"}])
    with pytest.raises(DataError) as e:
        load_examples(str(f))
    msg = str(e.value)
    assert f"{f}:1" in msg and "nowhere_db" in msg and "data.db_dir" in msg
    assert not (tmp_path / "nowhere_db.duckdb").exists()  # looking never creates a database


def test_duplicate_ids_are_an_error(tmp_path: Path, spider_db: Path):
    row = {"id": "same", "question": "q", "sql": "SELECT 1", "db": str(spider_db)}
    f = _write_jsonl(tmp_path / "d.jsonl", [row, row])
    with pytest.raises(DataError, match="duplicate example id 'same'"):
        load_examples(str(f))


# ---------------------------------------------------------------------------------------------------------
# Alpaca JSON


def test_alpaca_with_db_field_and_with_recipe_db(tmp_path: Path, spider_db: Path):
    recs = [
        {
            "instruction": "How many singers are there?",
            "input": "",
            "output": "```sql\nSELECT count(*) FROM singer;\n```",
            "db_id": "concert_singer",
        },
        {
            "instruction": "Names of singers",
            "input": "from France",
            "output": "SELECT name FROM singer WHERE country = 'France'",
            "db_id": "concert_singer",
        },
    ]
    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps(recs))
    exs = load_examples(str(f), db_dir=SPIDER / "database")
    assert exs[0].sql == "SELECT count(*) FROM singer"  # fenced outputs are unwrapped
    assert exs[1].question == "Names of singers\nfrom France"
    # No per-record database: the recipe names one for the whole file.
    for r in recs:
        del r["db_id"]
    f.write_text(json.dumps(recs))
    with pytest.raises(DataError, match="record 0: no database"):
        load_examples(str(f))
    exs = load_examples(str(f), db=str(spider_db))
    assert {e.db_id for e in exs} == {"concert_singer"}


# ---------------------------------------------------------------------------------------------------------
# Benchmarks in their own layouts


def test_spider_sample_loads_unchanged():
    exs = load_examples(f"spider:{SPIDER}")
    raw = json.loads((SPIDER / "dev.json").read_text())
    assert len(exs) == len(raw) == 259
    for ex, r in zip(exs, raw, strict=True):
        assert (ex.question, ex.sql, ex.db_id) == (r["question"].strip(), r["query"].strip(), r["db_id"])
        assert Path(ex.db.path) == (SPIDER / "database" / r["db_id"] / f"{r['db_id']}.sqlite").resolve()
        assert ex.dialect == "sqlite"
    assert load_examples(f"spider:{SPIDER}/dev.json", limit=3) == exs[:3]


def _bird_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "bird"
    dbdir = root / "dev_databases" / "concert_singer"
    dbdir.mkdir(parents=True)
    shutil.copy(SPIDER / "database" / "concert_singer" / "concert_singer.sqlite", dbdir / "concert_singer.sqlite")
    recs = [
        {
            "question_id": 7,
            "db_id": "concert_singer",
            "question": "How many French singers?",
            "evidence": "French refers to Country = 'France'",
            "SQL": "SELECT COUNT(*) FROM singer WHERE Country = 'France'",
            "difficulty": "simple",
        },
    ]
    (root / "dev.json").write_text(json.dumps(recs))
    return root


def test_bird_layout_with_evidence(tmp_path: Path):
    exs = load_examples(f"bird:{_bird_fixture(tmp_path)}")
    (ex,) = exs
    assert ex.id == "7" and ex.hardness == "simple" and ex.evidence.startswith("French refers")
    msgs = build_messages(ex)
    user = msgs[1]["content"]
    # BIRD evidence comes before the question.
    assert user.index("External knowledge: French refers") < user.index("Question: How many French singers?")


def test_bird_sample_without_databases_is_a_clear_error():
    with pytest.raises(DataError, match=r"database 'superhero' not found \(looked for .*superhero\.sqlite"):
        load_examples(f"bird:{BIRD}")


def test_unknown_specs_are_errors(tmp_path: Path):
    with pytest.raises(DataError, match="data not found"):
        load_examples(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="demo has the splits 'train', 'dev', 'test'"):
        load_examples("demo:validation")
    with pytest.raises(DataError, match="dev.json not found"):
        load_examples(f"spider:{tmp_path}")


def test_demo_splits_load():
    train, dev = load_examples("demo:train"), load_examples("demo:dev")
    assert len(train) >= 500 and len(dev) >= 100
    assert {e.db.engine for e in train} == {"duckdb"}
    assert not {e.question for e in dev} & {e.question for e in train}


# ---------------------------------------------------------------------------------------------------------
# Schema text and prompts


def test_schema_text_on_a_spider_database(spider_db):
    from nl2sql_align.sql import Database

    db = Database.from_path(str(spider_db))
    text = schema_text(db, example_values=2)
    # Tables in definition order, keys, foreign keys and example values from the live data.
    assert (
        text.index("CREATE TABLE stadium (")
        < text.index("CREATE TABLE singer (")
        < text.index("CREATE TABLE concert (")
    )
    assert "Singer_ID INT PRIMARY KEY," in text
    assert "PRIMARY KEY (concert_ID, Singer_ID)" in text
    assert "FOREIGN KEY (Stadium_ID) REFERENCES stadium(Stadium_ID)" in text
    assert "FOREIGN KEY (Singer_ID) REFERENCES singer(Singer_ID)" in text
    import sqlite3

    first_two = [r[0] for r in sqlite3.connect(spider_db).execute("SELECT DISTINCT Country FROM singer LIMIT 2")]
    assert f"Country TEXT, -- examples: '{first_two[0]}', '{first_two[1]}'" in text
    # Deterministic, also when recomputed from scratch.
    _schema_text.cache_clear()
    assert schema_text(db, example_values=2) == text
    assert "examples" not in schema_text(db, example_values=0)


def test_compact_schema_keeps_keys_and_references(spider_db):
    from nl2sql_align.sql import Database

    text = schema_text(Database.from_path(str(spider_db)), example_values=1, format="compact")
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("Table stadium: Stadium_ID (primary key)")
    assert "Stadium_ID -> stadium.Stadium_ID" in text
    assert "Singer_ID (primary key) -> singer.Singer_ID" in text  # part of a composite key and a foreign key
    assert "Country (e.g. 'Netherlands')" in text
    db = Database.from_path(str(spider_db))
    assert len(schema_text(db, 0, format="compact")) < 0.6 * len(schema_text(db, 0))


def test_schema_text_on_duckdb_demo_database():
    ex = load_examples("demo:dev", limit=1)[0]
    text = schema_text(ex.db, example_values=1)
    assert text.startswith("CREATE TABLE ") and "PRIMARY KEY" in text and "REFERENCES" in text
    assert "-- examples:" in text


def test_long_values_are_truncated(tmp_path: Path):
    import sqlite3

    from nl2sql_align.sql import Database

    p = tmp_path / "t.sqlite"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    c.execute("INSERT INTO t VALUES (1, ?)", ("x" * 500,))
    c.commit()
    c.close()
    text = schema_text(Database.from_path(str(p)), example_values=3, max_value_chars=20)
    assert "'" + "x" * 17 + "...'" in text and "x" * 21 not in text


@pytest.mark.parametrize(
    "text, sql",
    [
        ("```sql\nSELECT 1\n```", "SELECT 1"),
        ("First ```sql\nSELECT 1\n``` then better:\n```sql\nSELECT 2;\n```", "SELECT 2"),
        ("```\nSELECT 3\n```", "SELECT 3"),
        ("SELECT 4;", "SELECT 4"),
        ("```sql\nSELECT 5 FROM t WHERE a = 1", "SELECT 5 FROM t WHERE a = 1"),  # cut off before the fence
        ("```sql\nSELECT 6\n```\n```python\nprint(1)\n```", "SELECT 6"),
    ],
)
def test_extract_sql(text, sql):
    assert extract_sql(text) == sql


def test_format_answer_round_trips():
    assert extract_sql(format_answer("SELECT a FROM b")) == "SELECT a FROM b"
