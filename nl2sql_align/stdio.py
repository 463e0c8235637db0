"""Shell-pipeline conventions: `-` names stdin for an input file and stdout for a one-file output; stdout carries
only results (one JSON document with `--json`, the output folder of a training stage), everything else goes to
stderr. See the README's "In shell pipelines and CI"."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from nl2sql_align.errors import UserError

STDIO = "-"
STDIN_NAME = "<stdin>"

# stdin can be read once; every reader of `-` in one command (e.g. `validate -` sniffing for [[steps]] and then
# parsing) sees the same text.
_stdin_text: str | None = None
# stdout as it was before `results_only_on_stdout` pointed it at stderr: where results (and `-` outputs) go.
_results = None


def is_stdio(path: str | Path | None) -> bool:
    return path is not None and str(path) == STDIO


def read_stdin() -> str:
    """All of stdin as UTF-8 text (a BOM is dropped), read once per process."""
    global _stdin_text
    if _stdin_text is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError("'-' reads from stdin, but nothing is piped in: pipe a file in, or give its path")
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        try:
            _stdin_text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise UserError(f"{STDIN_NAME}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return _stdin_text


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of `path`, or of stdin for `-`. Errors name the file."""
    if is_stdio(path):
        return read_stdin()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def display_name(path: str | Path) -> str:
    return STDIN_NAME if is_stdio(path) else str(path)


@contextlib.contextmanager
def results_only_on_stdout(reserve: bool = True) -> Iterator[None]:
    """While the work runs, whatever would print on stdout (rich tables, a library's print, the Trainer's log
    dicts) goes to stderr instead, so that what the command prints afterwards is the only thing on stdout.
    `reserve=False` leaves stdout alone (a human at a terminal gets the tables there)."""
    global _results
    if not reserve:
        yield
        return
    outer, _results = _results, sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _results = outer


def result_stream():
    """Where results go: the real stdout, also while `results_only_on_stdout` diverts everything else."""
    return _results if _results is not None else sys.stdout


def print_result(text: str) -> None:
    stream = result_stream()
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()
