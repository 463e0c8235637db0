"""Readers for every data format we accept, all producing `Example` records.

Spec strings (the `data.train` / `data.eval` recipe keys and the `--data` options):

    demo:train | demo:dev          the embedded demo (DuckDB databases built on first use)
    spider:DIR                     Spider layout: DIR/dev.json, DIR/database/<db_id>/<db_id>.sqlite
    spider:DIR/train_spider.json   another split file of the same layout
    bird:DIR                       BIRD layout: DIR/dev.json, DIR/dev_databases/<db_id>/<db_id>.sqlite
    bird:DIR/train.json            another split; databases in the sibling <stem>_databases/
    (data.postgres)                with a postgresql:// URI template holding {db_id}, every db_id names a
                                   PostgreSQL database instead of a file; a record's "db" may be a URI too
    PATH.jsonl | PATH.json         one object per line (.jsonl) or a JSON list (.json) of records in one of:
      native                       {"question", "sql", "db", optional "evidence", "id", "db_dir"}
      alpaca (LLaMA-Factory)       {"instruction", "input"?, "output", "system"?, <data.db_field>?}
      sharegpt (LLaMA-Factory)     {"conversations": [{"from": "system"|"human"|"gpt", "value"}], "system"?, ...}
                                   or {"messages": [{"role": "system"|"user"|"assistant", "content"}], ...}

The format is detected per file, from its first record; every record of a file has that format. Alpaca and
sharegpt records name their database in the `data.db_field` field (default "db_id") or take `data.db`; a record's
`system` (or a leading system turn) replaces the system prompt for that example. The SQL of an alpaca `output` or
a sharegpt assistant turn is read from its ```sql block when it has one. Files may start with a UTF-8 BOM.

Paths, one rule: a relative path written inside a data file (a record's "db" or "db_dir") is relative to that
file's folder; a relative path given in a recipe or on the command line (data.train, data.eval, data.db,
data.db_dir, --data, --db, --db-dir, spider:DIR, bird:DIR) is relative to the current working directory. A db_id
(a "db" without a database suffix) is a name, not a path: it is looked up under db_dir (the record's, else
data.db_dir), else in the data file's folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from nl2sql_align.data.example import Example
from nl2sql_align.errors import DataError
from nl2sql_align.sql import Database
from nl2sql_align.sql.backends import is_dsn
from nl2sql_align.stdio import STDIN_NAME, is_stdio, read_stdin

log = logging.getLogger(__name__)

DB_SUFFIXES = (".duckdb", ".ddb", ".sqlite", ".sqlite3", ".db")
# Data files are read with this: plain UTF-8, and files saved with a byte-order mark (Windows editors) too.
ENCODING = "utf-8-sig"


def load_examples(
    spec: str,
    *,
    db_dir: str | Path | None = None,
    db: str | Path | None = None,
    db_field: str = "db_id",
    limit: int | None = None,
    postgres: str | None = None,
) -> list[Example]:
    """Load examples from a data spec (see the module docstring). Errors name the file and line. `postgres`: a
    postgresql:// URI template with {db_id}; db_ids then name PostgreSQL databases (data.postgres)."""
    if postgres is not None and (not is_dsn(postgres) or "{db_id}" not in postgres):
        raise DataError(
            f"data.postgres = {postgres!r}: expected a postgresql:// URI with {{db_id}} where the database name goes, "
            "e.g. postgresql://reader@/{db_id}?host=/run/postgresql"
        )
    if not spec:
        raise DataError("no data given: set data.train (or pass --data), e.g. demo:train or spider:/data/spider")
    kind, _, rest = spec.partition(":")
    if kind == "demo" and rest:
        examples = _load_demo(rest)
    elif kind == "spider" and rest:
        examples = _load_spider(Path(rest), postgres)
    elif kind == "bird" and rest:
        examples = _load_bird(Path(rest), postgres)
    else:
        path = Path(spec)
        if is_stdio(spec):
            # stdin: a JSON list when it starts with `[`, else JSONL; db paths are taken from the current folder
            text = read_stdin()
            path, json_list = Path(STDIN_NAME), text.lstrip().startswith("[")
            base = Path.cwd()
        elif not path.exists():
            raise DataError(
                f"data not found: {spec!r}. Give a .jsonl/.json file (or - for stdin), spider:DIR, bird:DIR, "
                "demo:train or demo:dev"
            )
        elif path.suffix in (".jsonl", ".json"):
            text, json_list, base = _read_text(path), path.suffix == ".json", path.parent
        else:
            raise DataError(f"{path}: unknown data format (expected .jsonl, .json, spider:DIR, bird:DIR or demo:SPLIT)")
        if json_list:
            records = _iter_json_list(path, text)
        else:
            records = ((f"{path}:{lineno}", rec) for lineno, rec in _iter_jsonl(path, text))
        dbs = _DbCache(Path(db_dir) if db_dir else None, base, postgres)
        fixed = str(db) if db else None
        examples = _mark_own_schema(_load_records(path, records, dbs, fixed, db_field), path)
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


def resolve_database(
    ref: str,
    db_dir: Path | None,
    base: Path,
    where: str,
    paths_from: Path | None = None,
    postgres: str | None = None,
) -> tuple[Database, str]:
    """A `db` field is either a path to a database file or a db_id looked up under db_dir (else under `base`,
    the data file's folder). A relative path is taken from `paths_from` (default `base`): the data file's folder
    for a path written in the file, the current folder for one from the recipe or the command line. A
    postgresql:// URI is a PostgreSQL database; with `postgres` (a URI template holding {db_id}), so is every
    db_id."""
    if is_dsn(ref):
        name = urllib.parse.unquote(urllib.parse.urlsplit(ref).path.lstrip("/")) or ref
        return Database(ref, "postgres"), name
    if postgres and not ref.endswith(DB_SUFFIXES):
        return Database(postgres.replace("{db_id}", urllib.parse.quote(ref, safe="")), "postgres"), ref
    looked: list[Path] = []
    origin = base if paths_from is None else paths_from
    if ref.endswith(DB_SUFFIXES):
        path = Path(ref).expanduser()
        candidates = [path] if path.is_absolute() else [origin / path, *([db_dir / path] if db_dir else [])]
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
    if paths_from is not None and paths_from != base and not Path(ref).is_absolute() and (base / ref).is_file():
        hint = (
            f" Paths in the recipe and on the command line are relative to the current folder ({paths_from}), not "
            f"to the data file's: {base / ref} exists, give that path."
        )
    raise DataError(f"{where}: database {ref!r} not found (looked for {', '.join(map(str, looked))}).{hint}")


class _DbCache:
    """Resolve each database reference once per file: a data set names the same few databases many times."""

    def __init__(self, db_dir: Path | None, base: Path, postgres: str | None = None):
        self.db_dir, self.base, self.postgres, self._seen = db_dir, base, postgres, {}

    def get(
        self, ref: str, where: str, db_dir: Path | None = None, *, from_recipe: bool = False
    ) -> tuple[Database, str]:
        """`from_recipe`: `ref` is data.db / --db, so a relative path is taken from the current folder."""
        key = (ref, db_dir, from_recipe)
        if key not in self._seen:
            paths_from = Path.cwd() if from_recipe else self.base
            self._seen[key] = resolve_database(
                ref, db_dir or self.db_dir, self.base, where, paths_from, postgres=self.postgres
            )
        return self._seen[key]

    def database(self, record: dict[str, Any], field: str, fixed_db: str | None, where: str, hint: str):
        """The database a record names in `field` (its paths relative to the file), else data.db (the recipe's)."""
        ref = record.get(field)
        if ref:
            row_dir = self.base / record["db_dir"] if record.get("db_dir") else None
            return self.get(str(ref), where, row_dir)
        if fixed_db:
            return self.get(str(fixed_db), where, from_recipe=True)
        raise DataError(f"{where}: no database: {hint}")


# ---------------------------------------------------------------------------------------------------------
# Reading files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding=ENCODING)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _iter_jsonl(path: Path, text: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold raw
    for lineno, line in enumerate((_read_text(path) if text is None else text).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
        yield lineno, record


def _iter_json_list(path: Path, text: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, rec in enumerate(_read_json_list(path, "a JSON list of records", text)):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        yield where, rec


def _read_json_list(path: Path, what: str = "a JSON list", text: str | None = None) -> list:
    try:
        data = json.loads(_read_text(path) if text is None else text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected {what}")
    return data


def record_format(rec: dict[str, Any]) -> str:
    """native, alpaca or sharegpt, from the keys a record has."""
    if "conversations" in rec or "messages" in rec:
        return "sharegpt"
    if "instruction" in rec or "output" in rec:
        return "alpaca"
    return "native"


def _load_records(
    path: Path, records: Iterable[tuple[str, dict[str, Any]]], dbs: _DbCache, fixed_db: str | None, db_field: str
) -> list[Example]:
    """One format per file, the first record's; a record of another shape is an error that says so."""
    out: list[Example] = []
    fmt = None
    for i, (where, rec) in enumerate(records):
        fmt = fmt or record_format(rec)
        try:
            if fmt == "sharegpt":
                out.append(_sharegpt_example(rec, where, i, dbs, fixed_db, db_field, path.stem))
            elif fmt == "alpaca":
                out.append(_alpaca_example(rec, where, i, dbs, fixed_db, db_field, path.stem))
            else:
                out.append(_native_example(rec, where, i, dbs, fixed_db, path.stem))
        except DataError as e:
            own = record_format(rec)
            if own == fmt:
                raise
            raise DataError(
                f"{e} (this record looks {own}, but the file's first record is {fmt}: one format per file)"
            ) from None
    return out


# ---------------------------------------------------------------------------------------------------------
# Native records


def _native_example(
    record: dict[str, Any], where: str, index: int, dbs: _DbCache, fixed_db: str | None, stem: str
) -> Example:
    missing = [k for k in ("question", "sql") if not isinstance(record.get(k), str) or not record[k].strip()]
    if missing:
        raise DataError(
            f"{where}: missing or empty field(s) {', '.join(missing)}; a native record needs "
            '"question", "sql" and "db" (a database path or a db_id with data.db_dir)'
        )
    field = "db" if record.get("db") else "db_id"
    database, db_id = dbs.database(
        record, field, fixed_db, where, 'add a "db" field (path or db_id) or set data.db in the recipe'
    )
    return Example(
        id=str(record.get("id", f"{stem}-{index}")),
        question=record["question"].strip(),
        sql=record["sql"].strip(),
        db=database,
        db_id=db_id,
        evidence=str(record.get("evidence") or "").strip(),
        hardness=record.get("hardness") or record.get("difficulty"),
        dialect=record.get("dialect"),
        system=_system(record.get("system"), where),
        source=where,
    )


# ---------------------------------------------------------------------------------------------------------
# LLaMA-Factory's alpaca and sharegpt layouts


def _system(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # LLaMA-Factory: an empty system means the default one
    if not isinstance(value, str):
        raise DataError(f'{where}: "system" must be text, got {type(value).__name__}')
    return value.strip()


def _no_db_hint(db_field: str) -> str:
    return (
        f"add a {db_field!r} field to each record (data.db_field names it), "
        "or set data.db to one database for the whole file"
    )


def _alpaca_example(rec, where, i, dbs: _DbCache, fixed_db, db_field, stem) -> Example:
    """LLaMA-Factory's alpaca layout: instruction (+ "\\n" + input) is the question, output is the SQL."""
    instruction, extra, output = rec.get("instruction"), rec.get("input") or "", rec.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str) or not output.strip():
        raise DataError(f'{where}: an alpaca record needs string "instruction" and non-empty "output" fields')
    if not isinstance(extra, str):
        raise DataError(f'{where}: "input" must be text, got {type(extra).__name__}')
    if rec.get("history"):
        raise DataError(
            f'{where}: "history" (earlier turns) is not supported: a text-to-SQL example is one question and its '
            "query; fold what the turns say into the instruction or drop them"
        )
    question = instruction.strip() + ("\n" + extra.strip() if extra.strip() else "")
    if not question:
        raise DataError(f'{where}: empty "instruction" and "input": no question')
    return _answered_example(rec, where, i, dbs, fixed_db, db_field, stem, question, output, rec.get("system"))


def _answered_example(rec, where, i, dbs: _DbCache, fixed_db, db_field, stem, question, answer, system) -> Example:
    """The Example of an alpaca or sharegpt record once its question, answer and system text are found."""
    database, db_id = dbs.database(rec, db_field, fixed_db, where, _no_db_hint(db_field))
    from nl2sql_align.data.prompts import extract_sql  # answers are often fenced like model answers

    return Example(
        id=str(rec.get("id", f"{stem}-{i}")),
        question=question,
        sql=extract_sql(answer),
        db=database,
        db_id=db_id,
        evidence=str(rec.get("evidence") or "").strip(),
        system=_system(system, where),
        source=where,
    )


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _sharegpt_example(rec, where, i, dbs: _DbCache, fixed_db, db_field, stem) -> Example:
    """ShareGPT (`conversations` of from/value) or OpenAI (`messages` of role/content): an optional system turn,
    then one user turn (the question) and one assistant turn (the SQL)."""
    key = "conversations" if "conversations" in rec else "messages"
    turns = rec[key]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: {key!r} must be a non-empty list of turns")
    roles, texts = [], []
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: {key}[{j}] must be an object, got {type(turn).__name__}")
        role_tag, text_tag = ("from", "value") if "from" in turn else ("role", "content")
        role, text = _ROLES.get(turn.get(role_tag)), turn.get(text_tag)
        if role is None:
            raise DataError(
                f"{where}: {key}[{j}] has {role_tag} = {turn.get(role_tag)!r}; expected system, human/user or "
                "gpt/assistant (tool and function turns are not supported)"
            )
        if not isinstance(text, str):
            raise DataError(f"{where}: {key}[{j}] needs a text {text_tag!r}")
        roles.append(role)
        texts.append(text)
    system = rec.get("system")
    if roles[0] == "system":  # LLaMA-Factory: a leading system turn is the system prompt (over a "system" column)
        system = texts[0]
        roles, texts = roles[1:], texts[1:]
    if roles != ["user", "assistant"]:
        raise DataError(
            f"{where}: expected one user turn then one assistant turn (after an optional system turn), got "
            f"{' -> '.join(roles) or 'no turns'}; multi-turn conversations are not supported: a text-to-SQL "
            "example is one question and its query"
        )
    question, answer = texts[0].strip(), texts[1]
    if not question or not answer.strip():
        raise DataError(f"{where}: empty user or assistant turn")
    return _answered_example(rec, where, i, dbs, fixed_db, db_field, stem, question, answer, system)


# ---------------------------------------------------------------------------------------------------------
# Prompts that already hold their schema

# CREATE [TEMP] TABLE [IF NOT EXISTS] [schema.]name, the name bare or quoted "..", `..` or [..].
_CREATE_TABLE = re.compile(
    r"\bCREATE\s+(?:TEMP(?:ORARY)?\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?:[\w$]+\.)?(?:\"([^\"]{1,200})\"|`([^`]{1,200})`|\[([^\]]{1,200})\]|([\w$]+))",
    re.IGNORECASE,
)


@lru_cache(maxsize=256)
def _table_names(path: str, engine: str) -> frozenset[str]:
    from nl2sql_align.data.schema import read_schema

    return frozenset(t.name.lower() for t in read_schema(Database(path, engine), 0))


def holds_own_schema(text: str, db: Database) -> bool:
    """The text has a CREATE TABLE statement for a table of this database (a prompt that brings its schema)."""
    if "create" not in text.lower():
        return False
    named = {next(g for g in m.groups() if g).lower() for m in _CREATE_TABLE.finditer(text)}
    return bool(named) and not named.isdisjoint(_table_names(db.path, db.engine))


def _mark_own_schema(examples: list[Example], path: Path) -> list[Example]:
    """Examples whose question already has their database's CREATE TABLE statements get no schema of ours."""
    out = [
        dataclasses.replace(ex, prompt_has_schema=True) if holds_own_schema(ex.question, ex.db) else ex
        for ex in examples
    ]
    n = sum(ex.prompt_has_schema for ex in out)
    if n:
        log.info(
            "%s: %d of %d examples already hold their database's CREATE TABLE statements in the prompt; no schema "
            "text is added to those ([data.schema] include = false leaves it out of every prompt)",
            path,
            n,
            len(out),
        )
    return out


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


def _load_spider(root: Path, postgres: str | None = None) -> list[Example]:
    split, base = _split_file(root, "dev.json", "spider")
    return _benchmark_examples(
        split, base / "database", base, "Spider", sql_key="query", id_key=None, postgres=postgres
    )


def _load_bird(root: Path, postgres: str | None = None) -> list[Example]:
    split, base = _split_file(root, "dev.json", "bird")
    candidates = [base / f"{split.stem}_databases", base / "dev_databases", base / "train_databases"]
    db_root = next((c for c in candidates if c.is_dir()), candidates[0])
    return _benchmark_examples(split, db_root, base, "BIRD", sql_key="SQL", id_key="question_id", postgres=postgres)


def _benchmark_examples(
    split: Path, db_root: Path, base: Path, name: str, sql_key: str, id_key: str | None, postgres: str | None = None
) -> list[Example]:
    """Spider and BIRD records differ only in field names; both gold sets are SQLite SQL (transpiled when the
    databases are PostgreSQL ones, data.postgres)."""
    dbs = _DbCache(db_root, base, postgres)
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


def _load_demo(split: str) -> list[Example]:
    from nl2sql_align.data.demo import SPLITS, demo_dir

    if split not in SPLITS:
        raise DataError(f"demo:{split}: the demo has the splits {', '.join(map(repr, SPLITS))}")
    root = demo_dir()
    path = root / f"{split}.jsonl"
    records = ((f"{path}:{lineno}", rec) for lineno, rec in _iter_jsonl(path))
    return _load_records(path, records, _DbCache(root / "databases", root), None, "db_id")


def examples_for(data, spec: str, *, limit: int | None = None, db_dir=None, db=None) -> list[Example]:
    """`load_examples` with a recipe's [data] table (db_dir, db, db_field), which every command shares: the one
    place a [data] table is unpacked. `db_dir` / `db` given on the command line win over the recipe's."""
    return load_examples(
        spec,
        db_dir=db_dir or data.db_dir,
        db=db or data.db,
        db_field=data.db_field,
        limit=limit,
        postgres=getattr(data, "postgres", None),
    )
