"""A persistent pool of SQL worker processes, and `SQLExecutor`, the public way to run untrusted SQL.

Why processes: DuckDB cannot stop everything in-process (CPU bombs inside one function call, memory bombs
past memory_limit, planning bombs; docs/DESIGN.md, "Executing untrusted SQL"), and `func_timeout`-style thread
timeouts leave the query running. A worker that overruns its deadline or dies is SIGKILLed and replaced;
its job gets a timeout or "worker crashed" result and every other job carries on.

Why persistent: a process per query manages 5-94 queries/s, a persistent connection 1400 (DuckDB) to
167k (SQLite) (docs/DESIGN.md). Each worker keeps one connection per database and a fresh cursor per query.

How workers start: a fresh interpreter (`sys.executable -c ...`, fork+exec done in C by `subprocess`, the
same primitive multiprocessing's "spawn" uses), never a bare fork of a parent that may hold a model on a
GPU. Unlike multiprocessing's spawn and forkserver, it does not re-import the caller's `__main__` script in
each worker: a training script that imports torch at the top (or is not guarded by
`if __name__ == "__main__"`) would otherwise be loaded, or re-run, in every SQL worker. The parent and the
worker talk over a socketpair wrapped in `multiprocessing.connection.Connection` (what `multiprocessing.Pipe`
is), and the parent dispatches with `multiprocessing.connection.wait`.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from nl2sql_align.progress import Advance
from nl2sql_align.progress import progress as show_progress
from nl2sql_align.sql.backends import (
    Backend,
    Database,
    ExecResult,
    ensure_database,
    error_result,
    open_backend,
    timeout_message,
)
from nl2sql_align.sql.guard import DEFAULT_MAX_SQL_CHARS, check_read_only, transpile

# Connections one worker keeps open; the least recently used is closed beyond this (a DuckDB database
# holds a buffer pool and a thread, so an evaluation over 166 Spider databases must not open them all).
MAX_OPEN_DATABASES = 16
WORKER_START_TIMEOUT = 60.0  # seconds for a fresh interpreter to import sqlglot + duckdb, on a loaded box
MAX_START_FAILURES = 3  # consecutive start-up deaths before giving up (a broken environment, not bad luck)
CRASHED = "worker crashed"

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory that holds nl2sql_align/
# The worker's bootstrap: drop '' (the working directory) from sys.path, make sure this package is importable
# (a source checkout that is not installed), then serve. PYTHONPATH is left alone: prepending an installed
# package's site-packages there would put it ahead of the standard library.
_WORKER_CODE = """
import sys
del sys.path[0]
if sys.argv[1] not in sys.path:
    sys.path.insert(0, sys.argv[1])
from nl2sql_align.sql.sandbox import worker_main
worker_main(int(sys.argv[2]), sys.argv[3])
"""


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# --- worker side --------------------------------------------------------------------------------------------


def _address_space_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    return 0


def _limit_address_space(memory_mb: int) -> None:
    # RLIMIT_AS = what the worker maps after start-up + memory_mb. Measured here (VmSize): ~120 MB after
    # importing sqlglot and duckdb; the first DuckDB database +90 MB (its thread, our watchdog thread), each
    # further one +20 MB with async_threads=1 (~600 MB each with DuckDB's default 8 I/O threads). DuckDB
    # starts and answers even under a 256 MB RLIMIT_AS (below 1 GB the process segfaulted on exit after
    # failed allocations; from 1 GB up it was clean). With the limit, repeat('x', 2e9) fails at once with
    # DuckDB's OutOfMemory instead of growing to 3.9 GB (docs/DESIGN.md). Counting from the start-up footprint
    # keeps memory_mb meaning "room for queries" however heavy the interpreter's imports are. Linux only
    # (/proc); skipped elsewhere.
    try:
        base = _address_space_kib() * 1024
    except OSError:
        return
    if not base:
        return
    limit = base + memory_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _run_job(cache: OrderedDict[str, Backend], cfg: dict, path: str, engine: str, sql: str) -> ExecResult:
    backend = cache.get(path)
    if backend is None:
        try:
            backend = open_backend(
                Database(path, engine),
                timeout=cfg["timeout"],
                row_cap=cfg["row_cap"],
                memory_mb=cfg["memory_mb"],
                max_sql_chars=cfg["max_sql_chars"],
            )
        except FileNotFoundError as e:
            return error_result(str(e))
        except Exception as e:
            return error_result(f"cannot open database {Database(path, engine).label}: {_first_line(e, 400)}")
        cache[path] = backend
        while len(cache) > MAX_OPEN_DATABASES:
            cache.popitem(last=False)[1].close()
    cache.move_to_end(path)
    try:
        return backend.run(sql)
    except MemoryError:
        return error_result("out of memory")
    except Exception as e:  # noqa: BLE001
        # The backends turn a query's own errors into results; anything else that escapes (say, a result too
        # deep to convert) is answered as an error too, so that a weird query never costs the worker.
        return error_result(f"query failed: {_first_line(e)}")


def worker_main(fd: int, config_json: str) -> None:
    """Entry point of a worker process: answer (path, engine, sql) jobs until the parent hangs up."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = json.loads(config_json)
    conn = Connection(fd)
    import duckdb  # noqa: F401  imported before the limit and before any deadline starts ticking

    if cfg.get("postgres"):
        import psycopg  # noqa: F401  the same, where this executor has PostgreSQL jobs (~0.2 s, ~26 MB mapped)

    if cfg["memory_mb"]:
        _limit_address_space(int(cfg["memory_mb"]))
    cache: OrderedDict[str, Backend] = OrderedDict()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if job is None:
            break
        result = _run_job(cache, cfg, *job)
        try:
            conn.send(result)
        except (OSError, EOFError):
            break
        except Exception as e:  # a value that does not pickle: report it instead of dying
            conn.send(error_result(f"result could not be sent: {e}"[:300]))
    for backend in cache.values():
        backend.close()


# --- parent side --------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    started: float
    ready: bool = False
    job: int | None = None  # index of the job it runs
    sent_at: float = 0.0
    deadline: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid


def _kill(worker: _Worker) -> None:
    try:
        worker.proc.kill()  # SIGKILL: a worker stuck in C code (a CPU bomb in one function) ignores the rest
    except OSError:
        pass
    try:
        worker.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    worker.conn.close()


def _shutdown(workers: list[_Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 1.0
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _kill(w)
    workers.clear()


Job = tuple[str, str, str]  # (path, engine, sql) as sent to a worker


class SQLExecutor:
    """Run untrusted SQL on SQLite/DuckDB files and PostgreSQL databases in a pool of sandboxed, persistent
    worker processes.

    Every query is checked with `check_read_only` in the parent first, runs on a read-only hardened
    connection, stops at `timeout` seconds in the worker, and the worker is killed if it has not answered
    within `timeout` plus a grace. Use as a context manager, or call `close()`. Calls are serialised.
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout: float = 5.0,
        row_cap: int = 10_000,
        memory_mb: int | None = 2048,
        max_sql_chars: int = DEFAULT_MAX_SQL_CHARS,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if row_cap < 1:
            raise ValueError(f"row_cap must be at least 1, got {row_cap}")
        self.num_workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        if self.num_workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.timeout = timeout
        self.row_cap = row_cap
        self.memory_mb = memory_mb
        self.max_sql_chars = max_sql_chars
        # The worker stops a query itself at `timeout`; the grace is how long the parent then waits before it
        # kills the worker. Capped at half the timeout so that even a kill lands within 1.5x the timeout.
        self.grace = min(1.0, max(0.25, timeout / 2))
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start_failures = 0  # consecutive workers that died before saying "ready"
        self._postgres = False  # a postgres job was seen: workers started from then on import psycopg up front
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers started so far (for monitoring and tests)."""
        return [w.pid for w in self._workers]

    def execute(self, db: Database | str | os.PathLike[str], sql: str, dialect: str | None = None) -> ExecResult:
        """Run one query. `dialect` is the dialect `sql` is written in (None: the database's own)."""
        return self.execute_many([(db, sql, dialect)])[0]

    def execute_many(self, jobs: Sequence[tuple], progress: bool = False) -> list[ExecResult]:
        """Run (db, sql) or (db, sql, dialect) jobs in parallel across the workers; results in job order."""
        if self._closed:
            raise RuntimeError("SQLExecutor is closed")
        results: list[ExecResult | None] = [None] * len(jobs)
        to_run: dict[int, Job] = {}
        for i, job in enumerate(jobs):
            if not 2 <= len(job) <= 3:
                raise ValueError(f"job {i}: expected (db, sql) or (db, sql, dialect), got {len(job)} items")
            prepared = self._prepare(job[0], job[1], job[2] if len(job) == 3 else None)
            if isinstance(prepared, ExecResult):
                results[i] = prepared
            else:
                to_run[i] = prepared
        with self._lock:
            self._dispatch(to_run, results, progress=progress, total=len(jobs))
        return [r if r is not None else error_result(CRASHED) for r in results]

    def close(self) -> None:
        """Stop the workers. Idempotent."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> SQLExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- preparation (parent, before any worker sees the SQL) ------------------------------------------------

    def _prepare(self, db: Database | str | os.PathLike[str], sql: str, dialect: str | None) -> Job | ExecResult:
        db = ensure_database(db)
        if db.is_server:
            self._postgres = True
        elif not os.path.isfile(db.path):  # checked here too so that nothing is ever asked to open it
            return error_result(f"database not found: {db.path}")
        if not isinstance(sql, str):
            return error_result(f"refused: expected SQL text, got {type(sql).__name__}")
        try:
            sql_or_refusal = self._checked_sql(sql, dialect, db.dialect)
        except Exception as e:  # noqa: BLE001  the guard never raises on any text; if it ever did, refuse
            # the query rather than fail the caller's whole batch (a training step, an evaluation)
            return error_result(f"refused: could not parse as {dialect or db.dialect} SQL: {_first_line(e)}")
        if isinstance(sql_or_refusal, ExecResult):
            return sql_or_refusal
        # Absolute: workers keep the working directory they started in, the caller may have moved since.
        return (db.path if db.is_server else os.path.abspath(db.path), db.engine, sql_or_refusal)

    def _checked_sql(self, sql: str, dialect: str | None, target: str) -> str | ExecResult:
        """The SQL a worker will run (transpiled into `target`, the database's dialect), or the refusal."""
        if dialect is not None and dialect != target:
            # Check in the dialect it was written in, then transpile, then check what will actually run.
            reason = check_read_only(sql, dialect, self.max_sql_chars)
            if reason is not None:
                return error_result(f"refused: {reason}")
            try:
                sql = transpile(sql, read=dialect, write=target)
            except Exception as e:  # TranspileError for anything sqlglot cannot translate
                return error_result(f"transpile: {_first_line(e)}")
        reason = check_read_only(sql, target, self.max_sql_chars)
        if reason is not None:
            return error_result(f"refused: {reason}")
        return sql

    # -- worker management -----------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        cfg = json.dumps(
            {
                "timeout": self.timeout,
                "row_cap": self.row_cap,
                "memory_mb": self.memory_mb,
                "max_sql_chars": self.max_sql_chars,
                "postgres": self._postgres,
            }
        )
        env = dict(os.environ)
        env["MALLOC_ARENA_MAX"] = "2"  # each glibc arena reserves 64 MB of address space against RLIMIT_AS
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, _PACKAGE_ROOT, str(child_sock.fileno()), cfg],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            child_sock.close()
        return _Worker(proc=proc, conn=Connection(parent_sock.detach()), started=time.monotonic())

    def _replace(self, worker: _Worker) -> None:
        _kill(worker)
        self._workers[self._workers.index(worker)] = self._spawn()

    def _dispatch(self, jobs: dict[int, Job], results: list[ExecResult | None], *, progress: bool, total: int) -> None:
        if not jobs:
            return
        # Lazy start: no more workers than there is work for.
        while len(self._workers) < min(self.num_workers, len(jobs)):
            self._workers.append(self._spawn())
        try:
            self._dispatch_loop(jobs, results, progress=progress, total=total)
        except BaseException:
            # Interrupted (Ctrl-C) or a worker that cannot start: the jobs still in flight would answer
            # into the next call, so stop every worker; the next call starts fresh ones.
            _shutdown(self._workers)
            raise

    def _dispatch_loop(
        self, jobs: dict[int, Job], results: list[ExecResult | None], *, progress: bool, total: int
    ) -> None:
        with show_progress("SQL", total, enabled=progress) as advance:
            self._run_jobs(jobs, results, advance)

    def _run_jobs(self, jobs: dict[int, Job], results: list[ExecResult | None], advance: Advance) -> None:
        pending = deque(sorted(jobs))
        advance(len(results) - len(jobs))  # refused and missing-database jobs were answered in the parent
        while pending or any(w.job is not None for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if w.ready and w.job is None and pending:
                    if w.proc.poll() is not None or wait([w.conn], 0):
                        # An idle worker has nothing to say: readable means EOF, it died (killed from
                        # outside, OOM killer). Replace it rather than lose the next job to it.
                        self._replace(w)
                        continue
                    i = pending.popleft()
                    try:
                        w.conn.send(jobs[i])
                    except (OSError, ValueError):  # its pipe broke: it died between jobs
                        pending.appendleft(i)
                        self._replace(w)
                        continue
                    w.job, w.sent_at, w.deadline = i, now, now + self.timeout + self.grace
            waiting = [w for w in self._workers if w.job is not None or not w.ready]
            if not waiting:
                continue
            next_deadline = min(w.deadline if w.ready else w.started + WORKER_START_TIMEOUT for w in waiting)
            by_conn = {w.conn: w for w in waiting}
            for conn in wait(list(by_conn), timeout=max(0.0, next_deadline - time.monotonic())):
                w = by_conn[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):  # crashed: os._exit, segfault, OOM kill, killed from outside
                    if w.job is None:  # died while starting: killed from outside, or broken (import error)
                        self._start_failures += 1
                        if self._start_failures >= MAX_START_FAILURES:
                            raise RuntimeError(
                                f"SQL workers keep dying during start-up (last: {w.pid}, exit code "
                                f"{w.proc.poll()}); their error output is above"
                            ) from None
                        self._replace(w)
                        continue
                    results[w.job] = error_result(CRASHED, elapsed=time.monotonic() - w.sent_at)
                    advance(1)
                    self._replace(w)
                    continue
                if not w.ready:
                    w.ready, self._start_failures = True, 0
                    continue
                results[w.job] = message
                w.job = None
                advance(1)
            now = time.monotonic()
            for w in list(self._workers):
                if w.job is not None and now >= w.deadline:  # it did not stop itself: kill it
                    results[w.job] = error_result(
                        timeout_message(self.timeout), timed_out=True, elapsed=now - w.sent_at
                    )
                    advance(1)
                    self._replace(w)
                elif not w.ready and now >= w.started + WORKER_START_TIMEOUT:
                    raise RuntimeError(f"SQL worker {w.pid} did not start within {WORKER_START_TIMEOUT:.0f} s")
