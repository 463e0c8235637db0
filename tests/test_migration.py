"""LLaMA-Factory users move over without friction: alpaca and sharegpt files in .json or .jsonl, their system
prompts, prompts that already hold the schema, BOMs, one rule for relative paths, and the README's example."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nl2sql_align.data import build_messages, load_examples
from nl2sql_align.data.prompts import DEFAULT_SYSTEM_PROMPT
from nl2sql_align.errors import DataError
from nl2sql_align.recipe import SchemaSection
from tests.conftest import SPIDER

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "recipes" / "examples" / "llamafactory"
SINGER_DDL = "CREATE TABLE singer (Singer_ID int, Name text, Country text, Age int)"


def _jsonl(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding=encoding)
    return path


def _json(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    path.write_text(json.dumps(rows), encoding=encoding)
    return path


def _user(ex, schema: SchemaSection | None = None, system_prompt: str | None = None) -> str:
    return build_messages(ex, schema, system_prompt)[1]["content"]


# ---------------------------------------------------------------------------------------------------------
# 1. Alpaca records in a .jsonl file


def test_alpaca_records_in_jsonl(tmp_path: Path, spider_db: Path):
    rows = [
        {"instruction": "How many singers are there?", "input": "", "output": "SELECT count(*) FROM singer"},
        {"instruction": "Names of singers", "input": "from France", "output": "```sql\nSELECT name FROM singer;\n```"},
    ]
    exs = load_examples(str(_jsonl(tmp_path / "a.jsonl", rows)), db=str(spider_db))
    assert [e.question for e in exs] == ["How many singers are there?", "Names of singers\nfrom France"]
    assert [e.sql for e in exs] == ["SELECT count(*) FROM singer", "SELECT name FROM singer"]
    assert exs[0].source == f"{tmp_path / 'a.jsonl'}:1"


def test_one_format_per_file_and_errors_say_which(tmp_path: Path, spider_db: Path):
    rows = [
        {"instruction": "How many singers?", "output": "SELECT count(*) FROM singer"},
        {"question": "How many singers?", "sql": "SELECT count(*) FROM singer"},
    ]
    f = _jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataError, match=r"mixed.jsonl:2: an alpaca record needs .* looks native.* one format per file"):
        load_examples(str(f), db=str(spider_db))
    f = _jsonl(tmp_path / "h.jsonl", [{"instruction": "q", "output": "SELECT 1", "history": [["hi", "hello"]]}])
    with pytest.raises(DataError, match=r'h.jsonl:1: "history" .* not supported'):
        load_examples(str(f), db=str(spider_db))


# ---------------------------------------------------------------------------------------------------------
# 2. A record's system prompt


def test_record_system_replaces_the_system_prompt(tmp_path: Path, spider_db: Path):
    rows = [
        {"instruction": "How many singers?", "output": "SELECT count(*) FROM singer", "system": "You are SQL-bot."},
        {"instruction": "How many stadiums?", "output": "SELECT count(*) FROM stadium", "system": ""},
    ]
    own, plain = load_examples(str(_json(tmp_path / "a.json", rows)), db=str(spider_db))
    assert own.system == "You are SQL-bot." and plain.system is None
    # LLaMA-Factory's rule: the record's system replaces the default, here the recipe's data.system_prompt too.
    assert build_messages(own)[0] == {"role": "system", "content": "You are SQL-bot."}
    assert build_messages(own, None, "Recipe prompt for {engine}.")[0]["content"] == "You are SQL-bot."
    assert build_messages(plain, None, "Recipe prompt for {engine}.")[0]["content"] == "Recipe prompt for SQLite."
    assert build_messages(plain)[0]["content"] == DEFAULT_SYSTEM_PROMPT.replace("{engine}", "SQLite")
    assert own.to_json()["system"] == "You are SQL-bot." and "system" not in plain.to_json()


# ---------------------------------------------------------------------------------------------------------
# 3. Prompts that already hold their schema


def test_schema_include_false_adds_no_schema(tmp_path: Path, spider_db: Path):
    rows = [{"question": "How many singers?", "sql": "SELECT count(*) FROM singer", "db": str(spider_db)}]
    (ex,) = load_examples(str(_jsonl(tmp_path / "n.jsonl", rows)))
    assert "CREATE TABLE" in _user(ex) and "Question: How many singers?" in _user(ex)
    assert _user(ex, SchemaSection(include=False)) == "How many singers?"


def test_schema_in_instruction_is_detected_and_logged_once(tmp_path: Path, spider_db: Path, caplog):
    rows = [
        {"instruction": f"Given the table\n{SINGER_DDL}\nwrite SQL.", "input": q, "output": sql}
        for q, sql in [("How many singers?", "SELECT count(*) FROM singer"), ("Names?", "SELECT name FROM singer")]
    ]
    rows.append({"instruction": "How many stadiums?", "output": "SELECT count(*) FROM stadium"})
    # A CREATE TABLE for a table this database does not have is not its schema.
    rows.append(
        {"instruction": "CREATE TABLE other (x int)\nHow many concerts?", "output": "SELECT count(*) FROM concert"}
    )
    with caplog.at_level(logging.INFO, logger="nl2sql_align"):
        exs = load_examples(str(_json(tmp_path / "s.json", rows)), db=str(spider_db))
    assert [e.prompt_has_schema for e in exs] == [True, True, False, False]
    assert _user(exs[0]) == exs[0].question  # the data's own prompt, as written, and only one schema in it
    assert _user(exs[0]).count("CREATE TABLE") == 1
    assert "Database schema:" in _user(exs[2]) and "Database schema:" in _user(exs[3])
    notes = [r for r in caplog.records if "CREATE TABLE" in r.getMessage()]
    assert len(notes) == 1 and "2 of 4 examples" in notes[0].getMessage() and "s.json" in notes[0].getMessage()
    # Quoted, qualified, lower-case and IF NOT EXISTS forms count too.
    for ddl in ('create table if not exists "singer" (x int)', "CREATE TABLE main.[Singer] (x int)"):
        (ex,) = load_examples(
            str(_json(tmp_path / "q.json", [{"instruction": ddl, "output": "SELECT 1"}])), db=str(spider_db)
        )
        assert ex.prompt_has_schema, ddl


# ---------------------------------------------------------------------------------------------------------
# 4. UTF-8 byte-order marks


def test_files_with_a_bom_load(tmp_path: Path, spider_db: Path):
    native = [{"question": "How many singers?", "sql": "SELECT count(*) FROM singer", "db": str(spider_db)}]
    alpaca = [{"instruction": "How many singers?", "output": "SELECT count(*) FROM singer"}]
    for f in (_jsonl(tmp_path / "n.jsonl", native, "utf-8-sig"), _json(tmp_path / "a.json", alpaca, "utf-8-sig")):
        assert f.read_bytes().startswith(b"\xef\xbb\xbf")
        (ex,) = load_examples(str(f), db=str(spider_db))
        assert ex.question == "How many singers?"
    spider = tmp_path / "spider"
    shutil.copytree(SPIDER / "database" / "concert_singer", spider / "database" / "concert_singer")
    split = [{"question": "How many singers?", "query": "SELECT count(*) FROM singer", "db_id": "concert_singer"}]
    _json(spider / "dev.json", split, "utf-8-sig")
    assert len(load_examples(f"spider:{spider}")) == 1


# ---------------------------------------------------------------------------------------------------------
# 5. One rule for relative paths


@pytest.fixture
def layout(tmp_path: Path, spider_db: Path, monkeypatch) -> Path:
    """cwd/ holds dbs/singers.sqlite and data/ (the data files, with data/local/concert_singer/ beside them)."""
    (tmp_path / "dbs").mkdir()
    shutil.copy(spider_db, tmp_path / "dbs" / "singers.sqlite")
    shutil.copytree(spider_db.parent, tmp_path / "data" / "local" / "concert_singer")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_recipe_and_command_line_paths_are_relative_to_the_current_folder(layout: Path):
    _json(layout / "data" / "a.json", [{"instruction": "How many singers?", "output": "SELECT count(*) FROM singer"}])
    (ex,) = load_examples("data/a.json", db="dbs/singers.sqlite")  # data.db / --db: from the current folder
    assert Path(ex.db.path) == (layout / "dbs" / "singers.sqlite").resolve()
    (ex,) = load_examples("data/a.json", db="concert_singer", db_dir="data/local")  # data.db_dir: likewise
    assert Path(ex.db.path) == (layout / "data" / "local" / "concert_singer" / "concert_singer.sqlite").resolve()
    # A data.db written relative to the data file is refused with the path that would work.
    with pytest.raises(DataError, match=r"relative to the current folder .*data/local/concert_singer/concert_singer"):
        load_examples("data/a.json", db="local/concert_singer/concert_singer.sqlite")


def test_paths_inside_a_data_file_are_relative_to_its_folder(layout: Path):
    rows = [
        {"question": "a", "sql": "SELECT 1", "db": "local/concert_singer/concert_singer.sqlite"},
        {"question": "b", "sql": "SELECT 1", "db": "concert_singer", "db_dir": "local"},
        {"question": "c", "sql": "SELECT 1", "db": "../dbs/singers.sqlite"},
    ]
    exs = load_examples(str(_jsonl(layout / "data" / "n.jsonl", rows)))
    local = (layout / "data" / "local" / "concert_singer" / "concert_singer.sqlite").resolve()
    assert [Path(e.db.path) for e in exs] == [local, local, (layout / "dbs" / "singers.sqlite").resolve()]


# ---------------------------------------------------------------------------------------------------------
# 6. ShareGPT and OpenAI messages


def test_sharegpt_conversations_and_openai_messages(tmp_path: Path, spider_db: Path):
    shutil.copy(spider_db, tmp_path / "concert_singer.sqlite")
    sharegpt = [
        {
            "conversations": [
                {"from": "human", "value": "How many singers?"},
                {"from": "gpt", "value": "Here it is:\n```sql\nSELECT count(*) FROM singer;\n```"},
            ],
            "system": "Be brief.",
            "db_id": "concert_singer",
        },
        {
            "conversations": [
                {"from": "system", "value": "Answer in SQLite."},
                {"from": "human", "value": "Names of singers?"},
                {"from": "gpt", "value": "SELECT name FROM singer"},
            ],
            "db_id": "concert_singer",
        },
    ]
    messages = [
        {
            "messages": [
                {"role": "system", "content": "You write SQL."},
                {"role": "user", "content": "How many stadiums?"},
                {"role": "assistant", "content": "```sql\nSELECT count(*) FROM stadium\n```"},
            ]
        }
    ]
    a, b = load_examples(str(_json(tmp_path / "sg.json", sharegpt)))
    assert (a.question, a.sql, a.system, a.db_id) == (
        "How many singers?",
        "SELECT count(*) FROM singer",
        "Be brief.",
        "concert_singer",
    )
    assert (b.question, b.sql, b.system) == ("Names of singers?", "SELECT name FROM singer", "Answer in SQLite.")
    assert build_messages(b)[0]["content"] == "Answer in SQLite." and "Question: Names of singers?" in _user(b)
    (c,) = load_examples(str(_jsonl(tmp_path / "m.jsonl", messages)), db=str(spider_db))
    assert (c.question, c.sql, c.system) == ("How many stadiums?", "SELECT count(*) FROM stadium", "You write SQL.")
    assert c.source == f"{tmp_path / 'm.jsonl'}:1"
    # The database field is data.db_field, as for alpaca.
    for rec in sharegpt:
        rec["database"] = rec.pop("db_id")
    assert len(load_examples(str(_json(tmp_path / "sg.json", sharegpt)), db_field="database")) == 2


@pytest.mark.parametrize(
    "turns, pattern",
    [
        ([{"from": "human", "value": "q"}], r"got user; multi-turn"),
        (
            [{"from": "human", "value": "q"}, {"from": "gpt", "value": "SELECT 1"}] * 2,
            r"got user -> assistant -> user -> assistant",
        ),
        ([{"from": "function_call", "value": "{}"}], r"from = 'function_call'"),
        ([{"from": "human", "value": 3}, {"from": "gpt", "value": "SELECT 1"}], r"needs a text 'value'"),
        ([], r"non-empty list"),
    ],
)
def test_bad_conversations_are_named(tmp_path: Path, spider_db: Path, turns, pattern):
    f = _jsonl(tmp_path / "c.jsonl", [{"conversations": turns}])
    with pytest.raises(DataError, match=rf"c.jsonl:1: .*{pattern}"):
        load_examples(str(f), db=str(spider_db))


# ---------------------------------------------------------------------------------------------------------
# 7. The README's migration example


def _readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return text.split("## Coming from LLaMA-Factory", 1)[1].split("\n## ", 1)[0]


def test_readme_example_files_load_as_their_dataset_info_says():
    section = _readme_section()
    info = json.loads((EXAMPLE / "dataset_info.json").read_text())
    json_blocks = re.findall(r"```json\n(.*?)\n```\n", section, re.DOTALL)
    assert json.loads(json_blocks[0]) == info  # the README shows the shipped entries
    db = str(EXAMPLE / "shop.sqlite")
    for name, entry in info.items():
        path = EXAMPLE / entry["file_name"]
        exs = load_examples(str(path), db=db)
        assert len(exs) == 3 and all(e.system for e in exs), name
        first = (
            json.loads(path.read_text().splitlines()[0]) if path.suffix == ".jsonl" else json.loads(path.read_text())[0]
        )
        fmt = entry.get("formatting", "alpaca")
        assert ("conversations" in first) == (fmt == "sharegpt"), name
        assert f'"{entry["file_name"]}"' in section or entry["file_name"] in section
    alpaca = load_examples(str(EXAMPLE / "shop_alpaca.json"), db=db)
    assert all(e.prompt_has_schema for e in alpaca)  # the schema is in the instructions: ours is not added
    sharegpt = load_examples(str(EXAMPLE / "shop_sharegpt.jsonl"), db=db)
    assert not any(e.prompt_has_schema for e in sharegpt) and "CREATE TABLE products" in _user(sharegpt[0])


def test_readme_example_recipe_matches_and_validates(tiny_model_dir: Path, tmp_path: Path):
    recipe = EXAMPLE / "shop-sft.toml"
    shipped = tomllib.loads(recipe.read_text())
    shown = tomllib.loads(re.search(r"```toml\n(.*?)\n```", _readme_section(), re.DOTALL).group(1))
    for table, values in shown.items():  # every key the README shows is the shipped recipe's
        assert shipped[table] == values if not isinstance(values, dict) else values.items() <= shipped[table].items()
    rel = str(recipe.relative_to(REPO))
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200")
    p = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", "validate", rel, "--set", f"model.name_or_path={tiny_model_dir}"]
        + ["--set", f"output_dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert f"{rel}: valid" in p.stdout
    assert "data.train = recipes/examples/llamafactory/shop_alpaca.json (3 examples)" in p.stdout
    assert "data.eval = recipes/examples/llamafactory/shop_sharegpt.jsonl (3 examples, gold SQL runs)" in p.stdout
