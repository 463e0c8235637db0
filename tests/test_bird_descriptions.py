"""BIRD's database_description/<table>.csv files reach the prompt as DDL column comments."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from nl2sql_align.data import build_messages, load_examples, schema_text
from nl2sql_align.data.schema import read_descriptions
from nl2sql_align.recipe import SchemaSection

HEADER = "original_column_name,column_name,column_description,data_format,value_description\r\n"


def _bird(tmp_path: Path, name: str = "bird") -> Path:
    """A tiny BIRD-layout folder: dev.json + dev_databases/shop/{shop.sqlite, database_description/*.csv}."""
    root = tmp_path / name
    dbdir = root / "dev_databases" / "shop"
    desc = dbdir / "database_description"
    desc.mkdir(parents=True)
    conn = sqlite3.connect(dbdir / "shop.sqlite")
    conn.executescript(
        """
        CREATE TABLE customers (cust_id INTEGER PRIMARY KEY, Segment TEXT, cafe_name TEXT);
        CREATE TABLE orders (order_id INTEGER PRIMARY KEY, cust_id INTEGER REFERENCES customers(cust_id),
                             amount REAL);
        CREATE TABLE broken (x INTEGER);
        INSERT INTO customers VALUES (1, 'SME', 'Cafe A'), (2, 'KAM', 'Cafe B');
        INSERT INTO orders VALUES (10, 1, 9.5), (11, 2, 3.0);
        INSERT INTO broken VALUES (1);
        """
    )
    conn.commit()
    conn.close()
    # utf-8 with a BOM; the column is named "segment" in the CSV but "Segment" in the database, and the file
    # name differs in case from the table; a multi-line value description is shortened onto one line.
    (desc / "Customers.csv").write_bytes(
        (
            "\ufeff"
            + HEADER
            + "cust_id,customer id,unique id of the customer,integer,\r\n"
            + 'segment,,client segment,text,"commonsense evidence:\nSME: small and medium enterprises\nKAM: key account"\r\n'
            + "cafe_name,,name of the caf\u00e9,text,\r\n"
        ).encode("utf-8")
    )
    # cp1252 without a BOM, with a byte that is not valid UTF-8 ("\x80" is the euro sign in cp1252).
    (desc / "orders.csv").write_bytes(
        (
            HEADER
            + "order_id ,,the order number,integer,\r\n"  # a stray space in the name, as in some BIRD files
            + "amount,,order total in \u20ac,real,the unit is euro\r\n"
        ).encode("cp1252")
    )
    # Malformed: not a description file at all (no header we know, and an unterminated quote).
    (desc / "broken.csv").write_bytes(b'\x00\x01garbage,"unterminated\n')
    recs = [
        {
            "question_id": 1,
            "db_id": "shop",
            "question": "Total of SME orders?",
            "evidence": "",
            "SQL": "SELECT SUM(amount) FROM orders",
            "difficulty": "simple",
        }
    ]
    (root / "dev.json").write_text(json.dumps(recs))
    return root


def _line(text: str, start: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(start)]
    return line


def test_descriptions_reach_the_prompt_next_to_their_column(tmp_path: Path, caplog):
    (ex,) = load_examples(f"bird:{_bird(tmp_path)}")
    with caplog.at_level(logging.WARNING):
        user = build_messages(ex)[1]["content"]
    assert _line(user, "cust_id INTEGER PRIMARY KEY").endswith("-- unique id of the customer; examples: 1, 2")
    # Case-insensitive column match; value description on one line without BIRD's boilerplate.
    seg = _line(user, "Segment TEXT")
    assert "-- client segment (SME: small and medium enterprises KAM: key account); examples: 'SME'" in seg
    assert "commonsense" not in user
    assert "-- name of the caf\u00e9; examples: 'Cafe A'" in _line(user, "cafe_name TEXT")
    # cp1252 file: the euro sign decoded, the padded original_column_name matched.
    assert "-- order total in \u20ac (the unit is euro); examples: 9.5" in _line(user, "amount REAL")
    assert "-- the order number; examples: 10" in _line(user, "order_id INTEGER PRIMARY KEY")
    # A column without a description keeps the plain examples comment; the broken file is ignored.
    assert _line(user, "cust_id INTEGER,").endswith("-- examples: 1, 2")
    assert _line(user, "x INTEGER").endswith("-- examples: 1")
    assert "broken.csv" in caplog.text


def test_broken_file_warns_once_and_other_formats(tmp_path: Path, caplog):
    root = _bird(tmp_path, "bird2")
    folder = root / "dev_databases" / "shop" / "database_description"
    with caplog.at_level(logging.WARNING):
        first = read_descriptions(folder)
        second = read_descriptions(folder)
    assert first == second and set(first) == {"customers", "orders"}
    assert caplog.text.count("broken.csv") == 1
    (ex,) = load_examples(f"bird:{root}")
    # Without example values the description is the whole comment.
    no_examples = schema_text(ex.db, example_values=0)
    assert _line(no_examples, "amount REAL").endswith("-- order total in \u20ac (the unit is euro)")
    # The compact format stays compact: no descriptions.
    compact = build_messages(ex, SchemaSection(format="compact"))[1]["content"]
    assert "Table customers:" in compact and "client segment" not in compact


def test_no_description_folder_changes_nothing(tmp_path: Path):
    root = _bird(tmp_path, "bird3")
    (ex,) = load_examples(f"bird:{root}")
    folder = root / "dev_databases" / "shop" / "database_description"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    text = schema_text(ex.db, example_values=1)
    assert "-- examples: 1" in text and "client segment" not in text
    assert read_descriptions(folder) == {}


def test_bird_sample_description_files_all_read():
    from tests.conftest import BIRD

    for db in ("superhero", "student_club"):
        folder = BIRD / "dev_databases" / db / "database_description"
        if not folder.is_dir():
            continue
        d = read_descriptions(folder)
        assert d and all(cols for cols in d.values())
        assert all("\n" not in v and len(v) <= 240 for cols in d.values() for v in cols.values())
