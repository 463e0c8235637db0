"""The sandbox's timeout overshoot and throughput on PostgreSQL, beside SQLite and DuckDB on the same machine.

    python scripts/measure_postgres.py --dsn "postgresql://nl2sql_reader@/concert_singer?host=/tmp/pg" \
        [--timeout 1.0] [--repeats 3] [--queries 2000]

The DSN names a database with Spider's concert_singer `singer` table (6 rows), read through a SELECT-only role
(`nl2sql-align db copy SRC DSN --reader nl2sql_reader` makes both). The queries and the SQLite/DuckDB side are
scripts/measure_timeout.py's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure_timeout import (
    CROSS_JOIN,
    RECURSIVE,
    UNINTERRUPTIBLE,
    build_databases,
    measure_overshoot,
    render,
    throughput,
)

from nl2sql_align.sql import Database, SQLExecutor

PG_LONG = "SELECT count(*) FROM generate_series(1, 100000000000)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", required=True)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SQLExecutor(workers=args.workers, timeout=args.timeout) as ex:
        dbs = build_databases(Path(tmp)) | {"postgres": Database.from_path(args.dsn)}
        ex.execute_many([(db, "SELECT 1") for db in dbs.values()] * ex.num_workers)
        rows = []
        for engine, db in dbs.items():
            third = ("generate_series(1e11)", PG_LONG) if engine == "postgres" else ("long function call", None)
            for name, sql in (("recursive CTE", RECURSIVE), ("cross join x16", CROSS_JOIN), third):
                overshoots, how, timed_out = measure_overshoot(ex, db, sql or UNINTERRUPTIBLE[engine], args.repeats)
                med, top = statistics.median(overshoots) * 1000, max(overshoots) * 1000
                rows.append([engine, name, f"{med:.0f}", f"{top:.0f}", "yes" if timed_out else "NO", how])
        render(
            f"Overshoot past a {args.timeout:g} s timeout ({args.repeats} runs, {ex.num_workers} workers)",
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
