"""One progress display for generation and SQL execution: plain, sparse lines on stderr in a log file, a rich
bar on a terminal, nothing for a quick job, never anything on stdout."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from nl2sql_align.progress import QUIET_SECONDS, progress

LINE = re.compile(r"^steps: (\d+)/100 \((\d+)%\) (\d+\.\d) s$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(total: int, seconds_per_step: float, stream=None, **kw) -> FakeClock:
    clock = FakeClock()
    with progress("steps", total, clock=clock, stream=stream, **kw) as advance:
        for _ in range(total):
            clock.now += seconds_per_step
            advance(1)
    return clock


def test_a_log_file_gets_a_line_every_tenth_and_one_at_the_end():
    out = io.StringIO()
    run(100, 1.0, stream=out, quiet_seconds=0.5)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 10 <= len(lines) <= 11
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    counts = [int(m.group(1)) for m in parsed]
    assert counts == sorted(set(counts)) and counts[-1] == 100
    assert lines[-1] == "steps: 100/100 (100%) 100.0 s"
    assert [int(m.group(2)) for m in parsed] == [c * 100 // 100 for c in counts]


def test_lines_start_once_the_quiet_time_is_over():
    out = io.StringIO()
    run(100, 0.1, stream=out, quiet_seconds=3.45)  # quiet until step 35
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("steps: 35/100 (35%)")
    assert [int(LINE.match(x).group(1)) for x in lines] == [35, 40, 50, 60, 70, 80, 90, 100]


def test_big_steps_and_an_uneven_total_give_no_duplicate_end_line():
    out = io.StringIO()
    clock = FakeClock()
    with progress("generate", 392, stream=out, clock=clock, quiet_seconds=0) as advance:
        for _ in range(392 // 16):
            clock.now += 2
            advance(16)
        clock.now += 1
        advance(392 % 16)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "generate: 392/392 (100%) 49.0 s"
    counts = [int(line.split()[1].split("/")[0]) for line in lines]
    assert counts == sorted(set(counts)) and len(lines) == 11  # the first batch, then one per tenth


def test_a_quick_job_prints_nothing():
    out = io.StringIO()
    run(100, (QUIET_SECONDS - 0.5) / 100, stream=out)
    assert out.getvalue() == ""


def test_a_slow_job_whose_steps_all_came_early_still_gets_its_end_line():
    out = io.StringIO()
    clock = FakeClock()
    with progress("steps", 100, stream=out, clock=clock, quiet_seconds=5) as advance:
        advance(100)  # all counted at once, while still quiet
        clock.now += 10  # ... then the block runs on
    assert out.getvalue() == "steps: 100/100 (100%) 10.0 s\n"


def test_an_interrupted_job_gets_no_end_line():
    out = io.StringIO()
    clock = FakeClock()
    with pytest.raises(KeyboardInterrupt), progress("steps", 100, stream=out, clock=clock, quiet_seconds=0) as adv:
        clock.now += 1
        adv(5)
        clock.now += 1
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == ["steps: 5/100 (5%) 1.0 s"]


def test_disabled_or_empty_prints_nothing(capsys):
    for kw in ({"enabled": False}, {"total": 0}):
        args = {"total": 100, **kw}
        with progress("steps", args.pop("total"), quiet_seconds=0, **args) as advance:
            advance(50)
    assert capsys.readouterr() == ("", "")


def test_the_default_stream_is_stderr_at_call_time(capsys):
    run(100, 1.0, quiet_seconds=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[-1] == "steps: 100/100 (100%) 100.0 s"
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        run(10, 1.0, quiet_seconds=0)
    assert buf.getvalue().splitlines()[-1] == "steps: 10/10 (100%) 10.0 s"
    assert capsys.readouterr() == ("", "")


def test_the_terminal_bar_writes_to_stderr_never_stdout(capsys):
    term = Terminal()
    with progress("steps", 10, stream=term) as advance:
        for _ in range(10):
            advance(1)
        print("a result")  # results printed while the bar is up stay on stdout
    assert capsys.readouterr().out == "a result\n"
    assert "steps" in term.getvalue()  # the bar drew itself on its (stderr) console


def test_the_terminal_bar_on_sys_stderr(capsys, monkeypatch):
    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    with progress("steps", 10) as advance:
        advance(10)
    assert capsys.readouterr().out == ""
    assert "steps" in term.getvalue()


def test_sql_executor_progress_goes_through_the_helper(monkeypatch, tmp_path):
    """The executor reports each answered job (the ones refused in the parent first) and says nothing itself."""
    import sqlite3

    from nl2sql_align.sql import sandbox

    db = tmp_path / "t.sqlite"
    sqlite3.connect(db).close()
    seen: list[tuple[str, int, bool, list[int]]] = []

    @contextlib.contextmanager
    def fake(label, total, *, enabled=True, **kw):
        steps: list[int] = []
        seen.append((label, total, enabled, steps))
        yield steps.append

    monkeypatch.setattr(sandbox, "show_progress", fake)
    jobs = [(db, "SELECT 1"), (db, "DROP TABLE x"), (db, "SELECT 2")]
    with sandbox.SQLExecutor(workers=1) as ex:
        results = ex.execute_many(jobs, progress=True)
    assert [r.rows for r in results][::2] == [[(1,)], [(2,)]] and results[1].error.startswith("refused")
    ((label, total, enabled, steps),) = seen
    assert (label, total, enabled) == ("SQL", 3, True) and steps == [1, 1, 1]
