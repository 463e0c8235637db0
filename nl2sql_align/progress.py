"""One progress display for long loops (generation, SQL execution), always on stderr (stdout carries only results).

On a terminal it is a rich bar that disappears when the loop ends. In a log file or a pipe (CI, `nohup`, SLURM)
it is plain lines, `generate: 120/392 (30%) 14.2 s`, one each time another tenth of the total is done and one
at the end, never carriage returns; a loop that finishes within QUIET_SECONDS prints nothing at all, so quick
commands (`validate`, evaluating a tiny set) stay silent.

    with progress("generate", total=len(prompts)) as advance:
        for batch in batches:
            ...
            advance(len(batch))

This module imports only the standard library (rich only on a terminal, when a bar is shown): the SQL sandbox's
workers import the sandbox, and their start-up time counts."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

# In a log file, a loop that finishes within this many seconds leaves no progress lines.
QUIET_SECONDS = 5.0
# In a log file, a line each time another 1/STEPS of the total is done (and at the end).
STEPS = 10

Advance = Callable[[int], None]


@contextlib.contextmanager
def progress(
    label: str,
    total: int,
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
    tty: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
    quiet_seconds: float | None = None,
    steps: int | None = None,
) -> Iterator[Advance]:
    """Yields `advance(n=1)`, to call as units of `total` get done.

    `stream` defaults to sys.stderr as it is when the block is entered (so contextlib.redirect_stderr and
    pytest's capsys see it); `tty` defaults to whether that stream is a terminal. `clock`, `quiet_seconds`
    (default QUIET_SECONDS) and `steps` (default STEPS) are the log-file lines' timing and spacing.
    `enabled=False` shows nothing."""
    if not enabled or total <= 0:
        yield _nothing
        return
    out = sys.stderr if stream is None else stream
    if tty is None:
        tty = _isatty(out)
    if tty:
        with _bar(label, total, out if stream is not None else None) as advance:
            yield advance
        return
    quiet = QUIET_SECONDS if quiet_seconds is None else quiet_seconds
    lines = _Lines(label, total, out, clock, quiet, STEPS if steps is None else steps)
    yield lines.advance
    lines.finish()  # not reached when the block raised: no 'done' line for a loop that did not finish


def _nothing(n: int = 1) -> None:
    del n


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Lines:
    """The log-file display: plain lines, at most one per 1/steps of the total, after quiet_seconds."""

    def __init__(self, label: str, total: int, out: TextIO, clock: Callable[[], float], quiet: float, steps: int):
        self.label, self.total, self.out, self.clock, self.quiet = label, total, out, clock, quiet
        self.steps = max(1, steps)
        self.began = clock()
        self.done = 0
        self.shown = -1  # the count last written; -1: nothing written yet
        self.bucket = -1  # which 1/steps of the total that count was in

    def advance(self, n: int = 1) -> None:
        self.done += n
        elapsed = self.clock() - self.began
        if elapsed < self.quiet:
            return
        bucket = min(self.done, self.total) * self.steps // self.total
        if bucket > self.bucket or (self.done >= self.total and self.shown != self.done):
            self._write(elapsed, bucket)

    def finish(self) -> None:
        elapsed = self.clock() - self.began
        if elapsed >= self.quiet and self.shown != self.done:
            self._write(elapsed, self.steps)

    def _write(self, elapsed: float, bucket: int) -> None:
        percent = 100 * min(self.done, self.total) // self.total
        self.out.write(f"{self.label}: {self.done}/{self.total} ({percent}%) {elapsed:.1f} s\n")
        self.out.flush()
        self.shown, self.bucket = self.done, bucket


@contextlib.contextmanager
def _bar(label: str, total: int, stream: TextIO | None) -> Iterator[Advance]:
    """The terminal display: a transient rich bar on a stderr console (`stream` when given)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # Console(stderr=True) looks sys.stderr up at each write, so a redirect made inside the block is honoured.
    console = Console(stderr=True) if stream is None else Console(file=stream, force_terminal=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        # Only stderr is routed around the bar: stdout carries results, it must never land on the console.
        redirect_stdout=False,
    )
    with bar:
        task = bar.add_task(label, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance
