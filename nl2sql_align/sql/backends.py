"""Hardened read-only connections to SQLite, DuckDB and PostgreSQL, and running one query with a deadline and a
row cap.

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
ENGINES = ("sqlite", "duckdb", "postgres")
DSN_SCHEMES = ("postgresql://", "postgres://")


def is_dsn(text: str) -> bool:
    """A PostgreSQL connection URI (postgresql://... or postgres://...)."""
    return isinstance(text, str) and text.lower().startswith(DSN_SCHEMES)


def redact_dsn(dsn: str) -> str:
    """`dsn` with any password replaced by ***, for messages and reports."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}" if v else k
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Database:
    """A database and the engine that reads it: a file for sqlite and duckdb, a connection URI for postgres.

    A PostgreSQL database is named by its libpq URI in `path` (`postgresql://reader@/concert_singer?host=/run/pg`):
    one URI per database, so a Database stays one hashable string wherever examples, dataset columns and worker
    caches carry it. The schema is the first one on the connection's search_path (`public` unless the URI sets
    `options=-csearch_path%3Dname`); the sandbox pins search_path to it. Keep passwords out of the URI (libpq
    reads PGPASSWORD or ~/.pgpass): the URI appears in data files and dataset columns; messages show `label`.
    """

    path: str
    engine: str  # "sqlite" | "duckdb" | "postgres"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r} for {self.path}: expected one of {ENGINES}")
        if (self.engine == "postgres") != is_dsn(self.path):
            raise ValueError(
                f"engine {self.engine!r} does not fit {self.label!r}: a postgres database is a postgresql:// URI, "
                "a sqlite or duckdb database a file path"
            )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Database:
        """Pick the engine from the file suffix (.duckdb/.ddb -> duckdb; .sqlite/.sqlite3/.db -> sqlite), or a
        postgresql:// URI -> postgres."""
        path = os.fspath(path)
        if is_dsn(path):
            return cls(path, "postgres")
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

    @property
    def is_server(self) -> bool:
        """A database on a server (postgres), not a file: there is no path to check or make absolute."""
        return self.engine == "postgres"

    @property
    def label(self) -> str:
        """How messages name it: the file path, or the URI without its password."""
        return redact_dsn(self.path) if self.is_server else self.path


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
        self._cursor: Any = None  # what has an interrupt() method: a DuckDB cursor, a _PostgresCancel
        self._deadline = float("inf")
        self.fired = False
        threading.Thread(target=self._loop, name="sql-watchdog", daemon=True).start()

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


# --- PostgreSQL ---------------------------------------------------------------------------------------------

# Roles whose members read or write server files, run programs (COPY ... PROGRAM), write every table or signal
# other backends (docs/DESIGN.md, "PostgreSQL sandboxing"). A connection whose role is in one of them (or is a
# superuser, or may write anything) is refused before any query runs.
_PG_DANGEROUS_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_write_all_data",
    "pg_signal_backend",
    # can read every session's query text (pg_stat_activity), hence the gold SQL other workers run
    "pg_read_all_stats",
    "pg_monitor",
    "pg_read_all_settings",
)
_PG_ROLE_CHECK = """
SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
       ARRAY(SELECT b.rolname::text FROM pg_roles b
             WHERE b.rolname = ANY(%(roles)s) AND pg_has_role(current_user, b.oid, 'MEMBER') ORDER BY 1),
       has_database_privilege(current_database(), 'CREATE'),
       ARRAY(SELECT n.nspname::text FROM pg_namespace n
             WHERE has_schema_privilege(n.oid, 'CREATE') AND n.nspname !~ '^pg_(toast_)?temp_' ORDER BY 1),
       ARRAY(SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname !~ '^pg_(toast_)?temp_'
               AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER')
             ORDER BY 1 LIMIT 5)
FROM pg_roles r WHERE r.rolname = current_user
"""


class UnsafeConnectionError(RuntimeError):
    """The PostgreSQL role could change something; the sandbox runs no query on such a connection."""


def postgres_role_problems(conn: Any) -> list[str]:
    """What the connection's role may do beyond reading (empty: SELECT-only as the sandbox needs)."""
    row = conn.execute(_PG_ROLE_CHECK, {"roles": list(_PG_DANGEROUS_ROLES)}).fetchone()
    if row is None:
        return ["the current role is not in pg_roles"]
    superuser, createrole, createdb, replication, bypassrls, member_of, db_create, schemas, tables = row
    problems = [
        flag
        for flag, on in (
            ("is a superuser", superuser),
            ("has CREATEROLE", createrole),
            ("has CREATEDB", createdb),
            ("has REPLICATION", replication),
            ("has BYPASSRLS", bypassrls),
        )
        if on
    ]
    if member_of:
        problems.append(f"is a member of {', '.join(member_of)}")
    if db_create:
        problems.append("may CREATE schemas in the database")
    if schemas:
        problems.append(f"may CREATE in schema(s) {', '.join(schemas)}")
    if tables:
        problems.append(f"may write table(s) {', '.join(tables)}")
    return problems


class _PostgresCancel:
    """What the watchdog interrupts: a cancel request for the connection's running statement."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def interrupt(self) -> None:
        self.conn.cancel_safe(timeout=2.0)


class PostgresBackend:
    """One hardened connection to a PostgreSQL database; `run` executes one query in its own READ ONLY transaction.

    Layers, each enough to stop a write on its own where it applies (docs/DESIGN.md, "PostgreSQL sandboxing"):
    - the role: refused at connect if it is a superuser, may create or write anything, or is a member of
      pg_read_server_files, pg_write_server_files, pg_execute_server_program, pg_write_all_data or
      pg_signal_backend (`postgres_role_problems`); `db copy --reader` makes such a role;
    - every query runs in a READ ONLY transaction that is rolled back afterwards, so nothing it does (a
      set_config(), a cursor, a lock) outlives it; default_transaction_read_only is on as well;
    - the query is run as `DECLARE ... CURSOR FOR <sql>` over the extended protocol: the server accepts only a
      SELECT or VALUES there, and never two statements;
    - limits: statement_timeout, lock_timeout and idle_in_transaction_session_timeout from the sandbox timeout,
      work_mem, temp_file_limit (refused if it cannot be capped: it is superuser-only, so the role needs
      `ALTER ROLE ... SET temp_file_limit`, which `db copy --reader` does), no JIT, no parallel workers,
      client_connection_check_interval (a killed worker's query stops within half a second); search_path
      pinned to the database's schema;
    - a watchdog thread sends a cancel request at the deadline (statement_timeout counts per statement, and a
      query is DECLARE plus FETCH), and the pool kills the worker if even that does not answer.
    """

    WORK_MEM_MB = 64
    TEMP_FILE_LIMIT_MB = 1024

    def __init__(self, dsn: str, *, timeout: float, row_cap: int) -> None:
        self.dsn, self.timeout, self.row_cap = dsn, timeout, row_cap
        self._watchdog = _Watchdog()
        self.conn: Any = None
        self._connect()

    def _connect(self) -> None:
        import psycopg  # imported here so that file-only users never need it

        ms = max(1, int(self.timeout * 1000))
        conn = psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=max(2, int(self.timeout) + 1), application_name="nl2sql-sandbox"
        )
        try:
            problems = postgres_role_problems(conn)
            if problems:
                raise UnsafeConnectionError(
                    f"role {conn.info.user!r} {'; '.join(problems)}: the sandbox needs a role that can only "
                    "SELECT (nl2sql-align db copy --reader ROLE creates one)"
                )
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            if schema is None:
                raise UnsafeConnectionError("no schema on the search_path exists: set options=-csearch_path%3D...")
            settings = {
                "search_path": '"' + schema.replace('"', '""') + '"',
                "default_transaction_read_only": "on",
                "statement_timeout": str(ms),
                "lock_timeout": str(ms),
                "idle_in_transaction_session_timeout": str(2 * ms + 5000),
                "work_mem": f"{self.WORK_MEM_MB}MB",
                "jit": "off",  # compile times are unpredictable, and JIT code is one more thing to trust
                "max_parallel_workers_per_gather": "0",  # one query, one core; parallelism comes from the pool
                "cursor_tuple_fraction": "1",  # plan the DECLAREd query for all its rows, as a plain SELECT
                "TimeZone": "UTC",
                "DateStyle": "ISO, MDY",
            }
            if conn.info.server_version >= 140000:
                settings["client_connection_check_interval"] = "500"
            for name, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            self._cap_temp_files(conn, psycopg)
        except BaseException:
            conn.close()
            raise
        # From here on psycopg opens each query's transaction with BEGIN READ ONLY; run() rolls it back.
        conn.autocommit = False
        conn.read_only = True
        self.conn = conn

    def _cap_temp_files(self, conn: Any, psycopg: Any) -> None:
        try:
            conn.execute("SELECT set_config('temp_file_limit', %s, false)", (f"{self.TEMP_FILE_LIMIT_MB}MB",))
        except psycopg.errors.InsufficientPrivilege:
            current = conn.execute("SELECT current_setting('temp_file_limit')").fetchone()[0]
            if current.strip() == "-1":
                raise UnsafeConnectionError(
                    f"role {conn.info.user!r} has no temp_file_limit (only a superuser can set it): run "
                    f"ALTER ROLE {conn.info.user} SET temp_file_limit = '{self.TEMP_FILE_LIMIT_MB}MB' as a superuser"
                ) from None

    def run(self, sql: str) -> ExecResult:
        import psycopg

        if self.conn is None or self.conn.closed:  # the server dropped the connection: open a new one
            try:
                self._connect()
            except Exception as e:
                return error_result(f"cannot reconnect: {_short(e)}")
        start = time.monotonic()
        # Server-side cursor: psycopg sends DECLARE over the extended protocol, and FETCH stops at the row cap
        # on the server (a client-side cursor would receive every row of a runaway result first).
        cursor = self.conn.cursor(name="nl2sql_query")
        self._watchdog.arm(_PostgresCancel(self.conn), start + self.timeout)
        try:
            cursor.execute(sql)
            rows, truncated = _fetch(cursor, self.row_cap)
            columns = [d.name for d in cursor.description or ()]
        except Exception as e:
            elapsed = time.monotonic() - start
            if self._watchdog.fired or isinstance(e, psycopg.errors.QueryCanceled):
                return error_result(timeout_message(self.timeout), timed_out=True, elapsed=elapsed)
            return error_result(_short(e), elapsed=elapsed)
        finally:
            self._watchdog.disarm()
            self._end_transaction()
        return ExecResult(normalize_rows(rows), columns, None, truncated=truncated, elapsed=time.monotonic() - start)

    def _end_transaction(self) -> None:
        # ROLLBACK undoes everything the query did in the session. A cancel request that arrives late can hit
        # the ROLLBACK itself; try again, and drop a connection that still cannot end its transaction.
        for _ in range(2):
            try:
                self.conn.rollback()
                return
            except Exception:  # noqa: BLE001
                if self.conn.closed:
                    return
        self.conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


Backend = SQLiteBackend | DuckDBBackend | PostgresBackend


def open_backend(
    db: Database, *, timeout: float, row_cap: int, memory_mb: int | None = None, max_sql_chars: int = 20_000
) -> Backend:
    """Open `db` read-only and hardened. Never creates a missing file (raises FileNotFoundError instead)."""
    if db.engine == "postgres":
        return PostgresBackend(db.path, timeout=timeout, row_cap=row_cap)
    if not os.path.isfile(db.path):
        raise FileNotFoundError(f"database not found: {db.path}")
    if db.engine == "sqlite":
        return SQLiteBackend(db.path, timeout=timeout, row_cap=row_cap, max_sql_chars=max_sql_chars)
    return DuckDBBackend(db.path, timeout=timeout, row_cap=row_cap, memory_mb=memory_mb)


def ensure_database(db: Database | str | os.PathLike[str]) -> Database:
    return db if isinstance(db, Database) else Database.from_path(db)
