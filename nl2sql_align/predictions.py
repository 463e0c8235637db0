"""Predictions files: read and write the three formats `eval` accepts, so that predictions move freely between
this tool and the official Spider and BIRD scripts.

    spider   text, one SQL per line aligned with the data, optionally `SQL<TAB>db_id` (the format of Spider's
             dev_gold.sql, and what test-suite-sql-eval's evaluation.py reads: it keeps the first field)
    bird     a JSON object {"0": "SQL\\t----- bird -----\\tdb_id", ...}, one key per example (BIRD's
             predict_dev.json, read by its evaluation.py)
    jsonl    ours: one {"index": i, "sql": ..., "db_id": ...} per line; db_id is optional, missing indexes
             count as empty predictions

Reading detects the format from the extension (.jsonl, .json) or else from the content; every error names
the file and the line or key. Wherever a db_id is given it must be the db_id of the example it is aligned
with, so a predictions file made for another split or another order fails loudly instead of scoring near 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from nl2sql_align.errors import UserError
from nl2sql_align.stdio import display_name, is_stdio, read_text, result_stream

FORMATS = ("spider", "bird", "jsonl")
BIRD_SEPARATOR = "\t----- bird -----\t"
# Extensions `write_predictions` understands; reading also sniffs the content of any other name.
EXTENSIONS = {".sql": "spider", ".txt": "spider", ".json": "bird", ".jsonl": "jsonl"}


# ---------------------------------------------------------------------------------------------------------
# Reading


def detect_format(path: Path, text: str) -> str:
    """`jsonl` for .jsonl, `bird` for .json; otherwise from the content: a JSON object is BIRD's file, JSON
    objects line by line are ours, anything else is Spider's text."""
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix == ".json":
        return "bird"
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            whole = json.loads(stripped)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and not {"index", "sql"} <= whole.keys():
            return "bird"
        first = stripped.splitlines()[0]
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except json.JSONDecodeError:
            pass
    return "spider"


def read_predictions(
    path: Path | str, n: int, db_ids: Sequence[str] | None = None, fmt: str | None = None
) -> list[str]:
    """The `n` predictions in `path`, aligned with the data's examples. `db_ids` (one per example), when
    given, is checked against any db_id the file carries. `fmt` forces a format (default: detected)."""
    if db_ids is not None and len(db_ids) != n:
        raise ValueError(f"{len(db_ids)} db_ids for {n} examples")
    text = read_text(path, "predictions file")
    fmt = fmt or detect_format(Path(path), text)  # `-` (stdin) has no extension: detected from the content
    path = Path(display_name(path))  # errors name <stdin>
    if fmt == "jsonl":
        return _read_jsonl(path, text, n, db_ids)
    if fmt == "bird":
        return _read_bird(path, text, n, db_ids)
    if fmt == "spider":
        return _read_spider(path, text, n, db_ids)
    raise UserError(f"unknown predictions format {fmt!r}: choose one of {', '.join(FORMATS)}")


def _check_db(path: Path, where: str, given: str, i: int, db_ids: Sequence[str] | None) -> None:
    if db_ids is not None and given != db_ids[i]:
        raise UserError(
            f"{path}:{where}: db_id {given!r}, but example {i} of the data is on {db_ids[i]!r}: "
            "the predictions are not aligned with this data (another split, order or --limit?)"
        )


def _read_spider(path: Path, text: str, n: int, db_ids: Sequence[str] | None) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing blank line is not a prediction
        lines.pop()
    preds = []
    for lineno, line in enumerate(lines[:n], 1):
        fields = line.split("\t")
        if len(fields) > 2:
            raise UserError(
                f"{path}:{lineno}: {len(fields) - 1} tabs; a Spider predictions line is SQL or SQL<TAB>db_id"
            )
        if len(fields) == 2 and fields[1].strip():
            _check_db(path, str(lineno), fields[1].strip(), lineno - 1, db_ids)
        preds.append(fields[0].strip())
    if len(lines) != n:
        raise UserError(
            f"{path}: {len(lines)} lines for {n} examples; a Spider predictions file has one SQL per line, "
            "in the order of the data"
        )
    return preds


def _no_duplicate_keys(path: Path):
    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise UserError(f"{path}: key {k!r} appears twice")
            seen.add(k)
        return dict(pairs)

    return hook


def _read_bird(path: Path, text: str, n: int, db_ids: Sequence[str] | None) -> list[str]:
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f'{path}: expected a BIRD predictions object {{"0": "SQL\\t----- bird -----\\tdb_id", ...}}')
    preds: list[str | None] = [None] * n
    for key, value in obj.items():
        if not (key.isdigit() and str(int(key)) == key and int(key) < n):
            raise UserError(f'{path}: key {key!r} is not an example index (expected "0" to "{n - 1}")')
        i = int(key)
        if not isinstance(value, str) or value.count(BIRD_SEPARATOR) != 1:
            raise UserError(
                f'{path}: key "{key}": expected a string "SQL\\t----- bird -----\\tdb_id", got {json.dumps(value)[:80]}'
            )
        sql, db = value.split(BIRD_SEPARATOR)
        _check_db(path, f' key "{key}"', db.strip(), i, db_ids)
        preds[i] = sql
    missing = [str(i) for i, p in enumerate(preds) if p is None]
    if missing:
        shown = ", ".join(f'"{k}"' for k in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(
            f'{path}: key {shown} missing; a BIRD predictions file has one key per example, "0" to "{n - 1}"'
        )
    return [p or "" for p in preds]


def _read_jsonl(path: Path, text: str, n: int, db_ids: Sequence[str] | None) -> list[str]:
    preds = [""] * n
    seen: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            i, sql = rec["index"], rec["sql"]
            if isinstance(i, bool) or not isinstance(sql, str):
                raise TypeError
            i = int(i)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UserError(f'{path}:{lineno}: expected {{"index": <int>, "sql": <string>}}') from None
        if not 0 <= i < n:
            raise UserError(f"{path}:{lineno}: index {i} is outside the data (0..{n - 1})")
        if i in seen:
            raise UserError(f"{path}:{lineno}: index {i} again (first on line {seen[i]})")
        seen[i] = lineno
        db = rec.get("db_id", rec.get("db"))
        if db is not None:
            _check_db(path, str(lineno), str(db), i, db_ids)
        preds[i] = sql
    return preds


# ---------------------------------------------------------------------------------------------------------
# Writing


def format_for_path(path: Path | str) -> str:
    if is_stdio(path):
        return "spider"  # stdout: one `SQL<TAB>db_id` per line, what the next program in a pipe reads easiest
    suffix = Path(path).suffix
    if suffix not in EXTENSIONS:
        raise UserError(
            f"{path}: cannot tell the predictions format from {suffix or 'no extension'!r}: use .sql or .txt "
            "(Spider: SQL<TAB>db_id per line), .json (BIRD) or .jsonl (this tool)"
        )
    return EXTENSIONS[suffix]


_LINE_COMMENT = re.compile(r"--[^\r\n]*")
_LINE_BREAKS = re.compile(r"[\r\n\t]+")


def one_line(sql: str) -> str:
    """`sql` on one line for the text format: `--` comments (which would swallow the rest of the line) are
    dropped, then line breaks and tabs become single spaces. Quotes are respected when finding comments; a line
    break inside a string literal becomes a space too (the text format cannot hold it)."""
    sql = sql.strip()
    if not any(c in sql for c in "\r\n\t") and "--" not in sql:
        return sql
    out, i, quote = [], 0, None
    closing = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < len(sql):
        c = sql[i]
        if quote is not None:
            out.append(c)
            if c == quote:
                quote = None
            i += 1
        elif c in closing:
            quote = closing[c]
            out.append(c)
            i += 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = len(sql) if end < 0 else end + 2
            out.append(sql[i:end])
            i = end
        elif sql.startswith("--", i):
            m = _LINE_COMMENT.match(sql, i)
            out.append(" ")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return _LINE_BREAKS.sub(" ", "".join(out)).strip()


def write_predictions(path: Path | str, preds: Sequence[str], db_ids: Sequence[str], fmt: str | None = None) -> str:
    """Write `preds` (aligned with examples on `db_ids`) in `fmt` (default: from the extension, see
    `format_for_path`); returns the format. Spider text lines are `SQL<TAB>db_id`, the SQL made one line by
    `one_line`; BIRD's object has the keys "0".."n-1" in order. Every format reads back with
    `read_predictions` to the same predictions (for Spider text: to `one_line` of each)."""
    path = Path(path)
    fmt = fmt or format_for_path(path)
    if len(preds) != len(db_ids):
        raise ValueError(f"{len(preds)} predictions for {len(db_ids)} db_ids")
    if fmt == "spider":
        text = "".join(f"{one_line(p)}\t{db}\n" for p, db in zip(preds, db_ids, strict=True))
    elif fmt == "bird":
        # BIRD's evaluation.py pairs values with gold lines by position in the file, so keys go in index order.
        obj = {str(i): f"{p}{BIRD_SEPARATOR}{db}" for i, (p, db) in enumerate(zip(preds, db_ids, strict=True))}
        text = json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    elif fmt == "jsonl":
        text = "".join(
            json.dumps({"index": i, "db_id": db, "sql": p}, ensure_ascii=False) + "\n"
            for i, (p, db) in enumerate(zip(preds, db_ids, strict=True))
        )
    else:
        raise UserError(f"unknown predictions format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if is_stdio(path):
        result_stream().write(text)
        result_stream().flush()
        return fmt
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a file
    return fmt
