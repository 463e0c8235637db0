"""Readers for every data format we accept, all producing `Example` records.

Spec strings (the `data.train` / `data.eval` recipe keys and the `--data` options):

    demo:train | demo:dev          the embedded demo (DuckDB databases built on first use)
    spider:DIR                     Spider layout: DIR/dev.json, DIR/database/<db_id>/<db_id>.sqlite
    spider:DIR/train_spider.json   another split file of the same layout
    bird:DIR                       BIRD layout: DIR/dev.json, DIR/dev_databases/<db_id>/<db_id>.sqlite
    bird:DIR/train.json            another split; databases in the sibling <stem>_databases/
    PATH.jsonl                     native: {"question", "sql", "db", optional "evidence", "id", "db_dir"}
    PATH.json                      alpaca (instruction/input/output) or a JSON list of native records
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nl2sql_align.data.example import Example
from nl2sql_align.errors import DataError
from nl2sql_align.sql import Database

DB_SUFFIXES = (".duckdb", ".ddb", ".sqlite", ".sqlite3", ".db")


def load_examples(
    spec: str,
    *,
    db_dir: str | Path | None = None,
    db: str | Path | None = None,
    db_field: str = "db_id",
    limit: int | None = None,
) -> list[Example]:
    """Load examples from a data spec (see the module docstring). Errors name the file and line."""
    if not spec:
        raise DataError("no data given: set data.train (or pass --data), e.g. demo:train or spider:/data/spider")
    kind, _, rest = spec.partition(":")
    if kind == "demo" and rest:
        examples = _load_demo(rest)
    elif kind == "spider" and rest:
        examples = _load_spider(Path(rest))
    elif kind == "bird" and rest:
        examples = _load_bird(Path(rest))
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(
                f"data not found: {spec!r}. Give a .jsonl/.json file, spider:DIR, bird:DIR, demo:train or demo:dev"
            )
        if path.suffix == ".jsonl":
            examples = _load_native_jsonl(path, db_dir, db)
        elif path.suffix == ".json":
            examples = _load_json(path, db_dir, db, db_field)
        else:
            raise DataError(f"{path}: unknown data format (expected .jsonl, .json, spider:DIR, bird:DIR or demo:SPLIT)")
    if not examples:
        raise DataError(f"{spec}: no examples found")
    ids = set()
    for ex in examples:
        if ex.id in ids:
            raise DataError(f"{ex.source}: duplicate example id {ex.id!r}; ids must be unique within a data set")
        ids.add(ex.id)
    return examples[:limit] if limit else examples


# ---------------------------------------------------------------------------------------------------------
# Database resolution


def resolve_database(ref: str, db_dir: Path | None, base: Path, where: str) -> tuple[Database, str]:
    """A `db` field is either a path to a database file or a db_id looked up under db_dir."""
    looked: list[Path] = []
    if ref.endswith(DB_SUFFIXES):
        path = Path(ref)
        candidates = [path] if path.is_absolute() else [base / path, *([db_dir / path] if db_dir else [])]
        for c in candidates:
            looked.append(c)
            if c.is_file():
                return Database.from_path(str(c.resolve())), Path(ref).stem
    else:
        roots = [db_dir] if db_dir else [base]
        for root in roots:
            for c in (
                root / f"{ref}.duckdb",
                root / ref / f"{ref}.sqlite",
                root / f"{ref}.sqlite",
                root / ref / f"{ref}.duckdb",
                root / f"{ref}.db",
            ):
                looked.append(c)
                if c.is_file():
                    return Database.from_path(str(c.resolve())), ref
    hint = "" if db_dir else ' Set data.db_dir (or a "db_dir" field) to the folder that holds the databases.'
    raise DataError(f"{where}: database {ref!r} not found (looked for {', '.join(map(str, looked))}).{hint}")


class _DbCache:
    """Resolve each database reference once per file: a data set names the same few databases many times."""

    def __init__(self, db_dir: Path | None, base: Path):
        self.db_dir, self.base, self._seen = db_dir, base, {}

    def get(self, ref: str, where: str, db_dir: Path | None = None) -> tuple[Database, str]:
        key = (ref, db_dir)
        if key not in self._seen:
            self._seen[key] = resolve_database(ref, db_dir or self.db_dir, self.base, where)
        return self._seen[key]


# ---------------------------------------------------------------------------------------------------------
# Native JSONL


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
            yield lineno, record


def _native_example(
    record: dict[str, Any], where: str, index: int, dbs: _DbCache, fixed_db: str | None, stem: str
) -> Example:
    missing = [k for k in ("question", "sql") if not isinstance(record.get(k), str) or not record[k].strip()]
    if missing:
        raise DataError(
            f"{where}: missing or empty field(s) {', '.join(missing)}; a native record needs "
            '"question", "sql" and "db" (a database path or a db_id with data.db_dir)'
        )
    ref = record.get("db") or record.get("db_id") or fixed_db
    if not ref:
        raise DataError(f'{where}: no database: add a "db" field (path or db_id) or set data.db in the recipe')
    row_dir = Path(record["db_dir"]) if record.get("db_dir") else None
    database, db_id = dbs.get(str(ref), where, row_dir)
    return Example(
        id=str(record.get("id", f"{stem}-{index}")),
        question=record["question"].strip(),
        sql=record["sql"].strip(),
        db=database,
        db_id=db_id,
        evidence=str(record.get("evidence") or "").strip(),
        hardness=record.get("hardness") or record.get("difficulty"),
        dialect=record.get("dialect"),
        source=where,
    )


def _load_native_jsonl(path: Path, db_dir, db) -> list[Example]:
    dbs = _DbCache(Path(db_dir) if db_dir else None, path.parent)
    return [
        _native_example(rec, f"{path}:{lineno}", i, dbs, db, path.stem)
        for i, (lineno, rec) in enumerate(_iter_jsonl(path))
    ]


# ---------------------------------------------------------------------------------------------------------
# JSON: alpaca-style or a list of native records


def _load_json(path: Path, db_dir, db, db_field: str) -> list[Example]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records")
    dbs = _DbCache(Path(db_dir) if db_dir else None, path.parent)
    out = []
    for i, rec in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        if "instruction" in rec or "output" in rec:
            out.append(_alpaca_example(rec, where, i, dbs, db, db_field, path.stem))
        else:
            out.append(_native_example(rec, where, i, dbs, db, path.stem))
    return out


def _alpaca_example(rec, where, i, dbs: _DbCache, fixed_db, db_field, stem) -> Example:
    """LLaMA-Factory's alpaca layout: instruction (+ input) is the question, output is the SQL."""
    instruction, extra, output = rec.get("instruction"), rec.get("input") or "", rec.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str) or not output.strip():
        raise DataError(f'{where}: an alpaca record needs string "instruction" and non-empty "output" fields')
    question = instruction.strip() + ("\n" + extra.strip() if extra.strip() else "")
    ref = rec.get(db_field) or fixed_db
    if not ref:
        raise DataError(
            f"{where}: no database: add a {db_field!r} field to each record (data.db_field names it), "
            "or set data.db to one database for the whole file"
        )
    database, db_id = dbs.get(str(ref), where)
    from nl2sql_align.data.prompts import extract_sql  # outputs are often fenced like model answers

    return Example(
        id=str(rec.get("id", f"{stem}-{i}")),
        question=question,
        sql=extract_sql(output),
        db=database,
        db_id=db_id,
        evidence=str(rec.get("evidence") or "").strip(),
        source=where,
    )


# ---------------------------------------------------------------------------------------------------------
# Benchmarks in their own layouts


def _split_file(root: Path, default: str, benchmark: str) -> tuple[Path, Path]:
    if root.is_file():
        return root, root.parent
    if not root.is_dir():
        raise DataError(f"{benchmark}:{root}: no such directory")
    f = root / default
    if not f.is_file():
        raise DataError(f"{benchmark}:{root}: {default} not found (is this the {benchmark} folder?)")
    return f, root


def _load_spider(root: Path) -> list[Example]:
    split, base = _split_file(root, "dev.json", "spider")
    return _benchmark_examples(split, base / "database", base, "Spider", sql_key="query", id_key=None)


def _load_bird(root: Path) -> list[Example]:
    split, base = _split_file(root, "dev.json", "bird")
    candidates = [base / f"{split.stem}_databases", base / "dev_databases", base / "train_databases"]
    db_root = next((c for c in candidates if c.is_dir()), candidates[0])
    return _benchmark_examples(split, db_root, base, "BIRD", sql_key="SQL", id_key="question_id")


def _benchmark_examples(
    split: Path, db_root: Path, base: Path, name: str, sql_key: str, id_key: str | None
) -> list[Example]:
    """Spider and BIRD records differ only in field names; both gold sets are SQLite SQL."""
    dbs = _DbCache(db_root, base)
    out = []
    for i, rec in enumerate(_read_json_list(split)):
        where = f"{split}: record {i}"
        try:
            question, sql, db_id = rec["question"], rec[sql_key], rec["db_id"]
        except (KeyError, TypeError):
            raise DataError(f"{where}: a {name} record needs question, {sql_key} and db_id") from None
        database, _ = dbs.get(db_id, where)
        out.append(
            Example(
                id=str(rec[id_key]) if id_key and id_key in rec else f"{split.stem}-{i}",
                question=question.strip(),
                sql=sql.strip(),
                db=database,
                db_id=db_id,
                evidence=(rec.get("evidence") or "").strip(),
                hardness=rec.get("hardness") or rec.get("difficulty"),
                dialect="sqlite",
                source=where,
            )
        )
    return out


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list")
    return data


def _load_demo(split: str) -> list[Example]:
    from nl2sql_align.data.demo import demo_dir

    if split not in ("train", "dev"):
        raise DataError(f"demo:{split}: the demo has the splits 'train' and 'dev'")
    root = demo_dir()
    return _load_native_jsonl(root / f"{split}.jsonl", root / "databases", None)
