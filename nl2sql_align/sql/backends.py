"""Hardened read-only connections to SQLite and DuckDB, and running one query with a deadline and a row cap.

These run inside the sandbox's worker processes (`sandbox.py`). Everything here is the second layer of
defence: the sqlglot guard has already refused what it recognises, and the worker process can still be
killed from outside. The settings follow what docs/DESIGN.md ("Executing untrusted SQL") measured.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from nl2sql_align.sql.results import normalize_rows

_SUFFIX_ENGINE = {
    ".duckdb": "duckdb",
    ".ddb": "duckdb",
    ".sqlite": "sqlite",
    ".sqlite3": "sqlite",
    ".db": "sqlite",
}
ENGINES = ("sqlite", "duckdb")


@dataclass(frozen=True)
class Database:
    """A database file and the engine that reads it."""

    path: str
    engine: str  # "sqlite" | "duckdb"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r} for {self.path}: expected one of {ENGINES}")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Database:
        """Pick the engine from the file suffix (.duckdb/.ddb -> duckdb; .sqlite/.sqlite3/.db -> sqlite)."""
        path = os.fspath(path)
        engine = _SUFFIX_ENGINE.get(os.path.splitext(path)[1].lower())
        if engine is None:
            raise ValueError(
                f"cannot tell the engine of database {path!r} from its suffix: expected one of "
                f"{', '.join(sorted(_SUFFIX_ENGINE))}"
            )
        return cls(os.path.abspath(path), engine)

    @property
    def dialect(self) -> str:
        """The sqlglot dialect name of the engine."""
        return self.engine


@dataclass
class ExecResult:
    rows: list[tuple] | None  # normalised rows (see normalize_rows), None on error
    columns: list[str] | None
    error: str | None  # short human message; None on success
    timed_out: bool = False
    truncated: bool = False  # hit the row cap
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def error_result(message: str, *, timed_out: bool = False, elapsed: float = 0.0) -> ExecResult:
    return ExecResult(rows=None, columns=None, error=message, timed_out=timed_out, elapsed=elapsed)


def timeout_message(timeout: float) -> str:
    return f"timeout after {float(timeout)}s"


def _short(exc: BaseException, limit: int = 300) -> str:
    # First line only: DuckDB appends "Did you mean ...", "LINE 1: ..." and tuning advice on later lines.
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit]


def _fetch(cursor: Any, row_cap: int) -> tuple[list[tuple], bool]:
    # One row more than the cap tells "exactly row_cap rows" from "more than row_cap rows".
    rows = cursor.fetchmany(row_cap + 1)
    truncated = len(rows) > row_cap
    return rows[:row_cap], truncated


# --- SQLite -------------------------------------------------------------------------------------------------

# Only reading is authorised. `?mode=ro` alone still lets ATTACH and VACUUM INTO create files and CREATE TEMP
# VIEW shadow a table (docs/DESIGN.md); denying every other action code blocks those, PRAGMA (reads included),
# transactions and load_extension().
_SQLITE_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _sqlite_authorizer(action: int, arg1: Any, arg2: Any, db_name: Any, trigger: Any) -> int:
    return sqlite3.SQLITE_OK if action in _SQLITE_ALLOWED else sqlite3.SQLITE_DENY


class SQLiteBackend:
    """One read-only, hardened SQLite connection; `run` executes one query under a deadline."""

    # How many VM instructions between deadline checks: cheap enough to be invisible, frequent enough to stop
    # a runaway query within milliseconds.
    PROGRESS_STEPS = 1000

    def __init__(self, path: str, *, timeout: float, row_cap: int, max_sql_chars: int = 20_000) -> None:
        self.timeout, self.row_cap = timeout, row_cap
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"  # ro never creates a missing file
        self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        # Same decoding as the official Spider harness (exec_eval.py): some Spider databases hold bytes that
        # are not UTF-8, which would otherwise fail the query.
        self.conn.text_factory = lambda b: b.decode(errors="ignore")
        self.conn.set_authorizer(_sqlite_authorizer)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, max(4 * max_sql_chars, 100_000))  # bytes, UTF-8
        # No single string or blob over 100 MB: bounds zeroblob()/printf()/replace() memory bombs.
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100_000_000)
        self._deadline = float("inf")
        self._fired = False
        self.conn.set_progress_handler(self._progress, self.PROGRESS_STEPS)

    def _progress(self) -> int:
        if time.monotonic() >= self._deadline:
            self._fired = True
            return 1  # non-zero: SQLite aborts the statement with "interrupted"
        return 0

    def run(self, sql: str) -> ExecResult:
        start = time.monotonic()
        self._deadline, self._fired = start + self.timeout, False
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            rows, truncated = _fetch(cursor, self.row_cap)  # fetching steps the VM too: still under deadline
            columns = [d[0] for d in cursor.description or ()]
        except Exception as e:  # any failure of the query is a result, never a worker crash
            elapsed = time.monotonic() - start
            if self._fired:
                return error_result(timeout_message(self.timeout), timed_out=True, elapsed=elapsed)
            return error_result(_short(e), elapsed=elapsed)
        finally:
            self._deadline = float("inf")
            cursor.close()
        return ExecResult(normalize_rows(rows), columns, None, truncated=truncated, elapsed=time.monotonic() - start)

    def close(self) -> None:
        self.conn.close()


# --- DuckDB -------------------------------------------------------------------------------------------------


class _Watchdog:
    """One long-lived thread that interrupts the running cursor at its deadline.

    A `threading.Timer` per query does the same but starting a thread per query cut trivial-query throughput
    from ~8900/s to ~2000/s here; arming this thread costs a lock and a notify.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._cursor: Any = None
        self._deadline = float("inf")
        self.fired = False
        threading.Thread(target=self._loop, name="duckdb-watchdog", daemon=True).start()

    def arm(self, cursor: Any, deadline: float) -> None:
        with self._cond:
            self._cursor, self._deadline, self.fired = cursor, deadline, False
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._cursor, self._deadline = None, float("inf")

    def _loop(self) -> None:
        with self._cond:
            while True:
                if self._cursor is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                # Interrupt the cursor that runs the query: interrupting the parent connection does not stop
                # a cursor's query (docs/DESIGN.md).
                try:
                    self._cursor.interrupt()
                except Exception:  # the cursor closed between the deadline and here
                    pass
                self.fired = True
                self._cursor = None


class DuckDBBackend:
    """One read-only, hardened DuckDB database; `run` executes one query on a fresh cursor."""

    def __init__(self, path: str, *, timeout: float, row_cap: int, memory_mb: int | None = None) -> None:
        import duckdb  # imported here so that SQLite-only users never pay for it

        self.timeout, self.row_cap = timeout, row_cap
        config: dict[str, Any] = {
            "threads": 1,  # one query per worker process; parallelism comes from the pool
            # DuckDB otherwise starts 8 I/O threads per database, each reserving stack and a malloc arena:
            # ~600 MB of address space that counts against the worker's RLIMIT_AS (measured here).
            "async_threads": 1,
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
            "allow_unsigned_extensions": False,
        }
        if timeout > 0:
            # New in DuckDB 2.0 (docs/DESIGN.md); stops the recursive-CTE bomb within ~1 ms of the limit.
            config["max_execution_time"] = max(1, int(timeout * 1000))
        if memory_mb:
            # Half the worker's budget: allocations outside DuckDB's buffer manager (repeat('x', 2e9) reached
            # 3.9 GB over a 1 GB memory_limit, docs/DESIGN.md) and the Python rows need the rest.
            config["memory_limit"] = f"{max(64, memory_mb // 2)}MB"
        self.conn = duckdb.connect(path, read_only=True, config=config)
        # No spilling to disk: the default temp_directory '.tmp' would create files in the working directory.
        # It must be set before external access is switched off (DuckDB refuses to change it afterwards, and
        # applies connect() config in its own order, so both go through SET here).
        self.conn.execute("SET temp_directory = ''")
        # No file or network access, ATTACH, COPY TO, extension loading or Python replacement scans (which
        # could read a Python variable such as the gold answers); then freeze every setting (docs/DESIGN.md).
        self.conn.execute("SET enable_external_access = false")
        self.conn.execute("SET lock_configuration = true")
        self._watchdog = _Watchdog()

    def run(self, sql: str) -> ExecResult:
        import duckdb

        start = time.monotonic()
        # A fresh cursor per query: temp objects created on one connection would poison later queries.
        cursor = self.conn.cursor()
        self._watchdog.arm(cursor, start + self.timeout)
        try:
            cursor.execute(sql)
            rows, truncated = _fetch(cursor, self.row_cap)
            columns = [d[0] for d in cursor.description or ()]
        except Exception as e:
            elapsed = time.monotonic() - start
            if self._watchdog.fired or isinstance(e, duckdb.InterruptException):
                return error_result(timeout_message(self.timeout), timed_out=True, elapsed=elapsed)
            return error_result(_short(e), elapsed=elapsed)
        finally:
            self._watchdog.disarm()
            cursor.close()
        return ExecResult(normalize_rows(rows), columns, None, truncated=truncated, elapsed=time.monotonic() - start)

    def close(self) -> None:
        self.conn.close()


Backend = SQLiteBackend | DuckDBBackend


def open_backend(
    db: Database, *, timeout: float, row_cap: int, memory_mb: int | None = None, max_sql_chars: int = 20_000
) -> Backend:
    """Open `db` read-only and hardened. Never creates a missing file (raises FileNotFoundError instead)."""
    if not os.path.isfile(db.path):
        raise FileNotFoundError(f"database not found: {db.path}")
    if db.engine == "sqlite":
        return SQLiteBackend(db.path, timeout=timeout, row_cap=row_cap, max_sql_chars=max_sql_chars)
    return DuckDBBackend(db.path, timeout=timeout, row_cap=row_cap, memory_mb=memory_mb)


def ensure_database(db: Database | str | os.PathLike[str]) -> Database:
    return db if isinstance(db, Database) else Database.from_path(db)
