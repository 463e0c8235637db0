"""Measure how far past its timeout the SQL sandbox stops runaway queries, and its throughput.

    python scripts/measure_timeout.py [--timeout 1.0] [--repeats 3] [--queries 2000] [--dsn postgresql://...]

For SQLite and DuckDB: wall time over the timeout (what a caller waits beyond it) for a never-ending
recursive CTE, a huge cross join (both stopped inside the worker), and one uninterruptible function call
(stopped by killing the worker); then trivial-query throughput, one call at a time and batched. Builds its
own small databases in a temporary folder; runs in well under a minute.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from nl2sql_align.sql import Database, SQLExecutor

RECURSIVE = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT count(*) FROM r"
CROSS_JOIN = "SELECT count(*) FROM " + ", ".join(f"singer AS s{i}" for i in range(16))  # 6^16 rows
UNINTERRUPTIBLE = {
    "sqlite": "SELECT count(printf('%.*c', 2000000000, 'a')) FROM singer",
    "duckdb": "SELECT levenshtein(repeat('a', 60000), repeat('b', 60000))",
    # PostgreSQL's statement_timeout stops this one in the server; the label is the same for the table's sake
    "postgres": "SELECT count(*) FROM generate_series(1, 100000000000)",
}


def build_databases(folder: Path) -> dict[str, Database]:
    import duckdb

    rows = [(i, f"singer {i}", 20 + 5 * i) for i in range(1, 7)]
    lite = folder / "bench.sqlite"
    with sqlite3.connect(lite) as con:
        con.execute("CREATE TABLE singer (Singer_ID INTEGER PRIMARY KEY, Name TEXT, Age INTEGER)")
        con.executemany("INSERT INTO singer VALUES (?, ?, ?)", rows)
    con.close()
    duck = folder / "bench.duckdb"
    con = duckdb.connect(str(duck))
    con.execute("CREATE TABLE singer (Singer_ID BIGINT PRIMARY KEY, Name VARCHAR, Age BIGINT)")
    con.executemany("INSERT INTO singer VALUES (?, ?, ?)", rows)
    con.close()
    return {"sqlite": Database.from_path(lite), "duckdb": Database.from_path(duck)}


def measure_overshoot(ex: SQLExecutor, db: Database, sql: str, repeats: int) -> tuple[list[float], str, bool]:
    overshoots, killed, all_timed_out = [], False, True
    for _ in range(repeats):
        pids = set(ex.worker_pids)
        start = time.monotonic()
        result = ex.execute(db, sql)
        overshoots.append(time.monotonic() - start - ex.timeout)
        all_timed_out &= result.timed_out
        killed |= set(ex.worker_pids) != pids
        ex.execute(db, "SELECT 1")  # let a replacement worker finish starting outside the next measurement
    return overshoots, "worker killed" if killed else "in worker", all_timed_out


def throughput(ex: SQLExecutor, db: Database, n: int) -> tuple[float, float]:
    start = time.monotonic()
    for _ in range(n // 4):
        ex.execute(db, "SELECT 1")
    sequential = (n // 4) / (time.monotonic() - start)
    start = time.monotonic()
    results = ex.execute_many([(db, "SELECT 1")] * n)
    batched = n / (time.monotonic() - start)
    assert all(r.rows == [(1,)] for r in results)
    return sequential, batched


def render(title: str, header: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
        print()
        return
    table = Table(title=title)
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--queries", type=int, default=2000, help="trivial queries per engine for throughput")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--dsn",
        default=None,
        help="also a PostgreSQL database with Spider's concert_singer `singer` table, read by a SELECT-only role "
        "(`nl2sql-align db copy SRC DSN --reader nl2sql_reader` makes both)",
    )
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp, SQLExecutor(workers=args.workers, timeout=args.timeout) as ex:
        dbs = build_databases(Path(tmp))
        if args.dsn:
            dbs["postgres"] = Database.from_path(args.dsn)
        ex.execute_many([(db, "SELECT 1") for db in dbs.values()] * ex.num_workers)  # start-up is not timed
        rows = []
        for engine, db in dbs.items():
            for name, sql in (
                ("recursive CTE", RECURSIVE),
                ("cross join x16", CROSS_JOIN),
                ("long function call", UNINTERRUPTIBLE[engine]),
            ):
                overshoots, how, timed_out = measure_overshoot(ex, db, sql, args.repeats)
                rows.append(
                    [
                        engine,
                        name,
                        f"{statistics.median(overshoots) * 1000:.0f}",
                        f"{max(overshoots) * 1000:.0f}",
                        "yes" if timed_out else "NO",
                        how,
                    ]
                )
        render(
            f"Overshoot past a {args.timeout:g} s timeout ({args.repeats} runs, {ex.num_workers} workers, "
            f"kill after +{ex.grace:g} s)",
            ["engine", "query", "median ms", "max ms", "timed out", "stopped"],
            rows,
        )
        rows = []
        for engine, db in dbs.items():
            sequential, batched = throughput(ex, db, args.queries)
            rows.append([engine, f"{sequential:,.0f}", f"{batched:,.0f}"])
        render(
            "Trivial query (SELECT 1) through SQLExecutor, queries/s",
            ["engine", "execute() one at a time", f"execute_many({args.queries})"],
            rows,
        )


if __name__ == "__main__":
    main()
