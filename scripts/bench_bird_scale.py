"""Scoring at BIRD scale: the reward engine and eval against the per-pair baseline, on SQLite, DuckDB and
PostgreSQL, on a generated database of BIRD's size class (issue 21, part 6).

    python scripts/bench_bird_scale.py [--orders 3000000] [--group 8] [--engines sqlite,duckdb,postgres]

The database (`retail`): customers (orders/15), products (orders/150) and orders (3 million by default) with
keys but no secondary indexes, as many BIRD databases have; its values come from integer hashes of the row
number, so SQLite and DuckDB hold the same rows, and the PostgreSQL copy is made from the SQLite file by
`db copy` (`db_copy.copy_database`, which this also exercises at scale). Built once under out/bench/bird_scale/.

Questions: twelve gold queries (joins, group-bys, IN/NOT IN subqueries, COUNT DISTINCT) written in SQL all three
engines run as written; on SQLite they take 0.1-3 s each (the script prints each one's time). Completions: for
each question a GRPO-like group of `--group` queries drawn (seeded) from the gold and its realistic wrong
variants (scripts/bench_reward.py's `variants`).

- rewards: `RewardEngine.judge` on one group at a time (what GRPOTrainer calls), BIRD semantics, against the
  baseline BIRD's evaluation.py follows for every pair (a fresh connection, prediction then gold, a
  thread-timeout wrapper, `set(pred) == set(gold)`);
- eval: `score_predictions` (what `eval` calls) on one prediction per question, against the same baseline.

The baseline runs each query on one core, as the sandbox does (DuckDB threads=1, PostgreSQL without parallel
workers); on DuckDB and PostgreSQL it also runs once with the engine's own parallelism (faster per query; its
verdicts are printed, not failed on: with doubles instead of integer amounts, parallel sums flipped some).

Verdicts must be identical to the one-core baseline (exit status 1 otherwise). Each run is timed once, cold:
the engine's gold cache starts empty, so every gold runs at least once on both sides. The engine's seconds per
group are the reward share of a GRPO step: a step of `per_device_train_batch_size / num_generations` groups
spends about that long in rewards whatever the model's size.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_reward import _with_timeout, pair_verdict, variants  # noqa: E402  (BIRD's per-pair way)

from nl2sql_align.data.example import Example  # noqa: E402
from nl2sql_align.evaluate import score_predictions  # noqa: E402
from nl2sql_align.rewards import RewardEngine  # noqa: E402
from nl2sql_align.sql import Database, SQLExecutor  # noqa: E402

OUT = REPO / "out" / "bench" / "bird_scale"
READER = "nl2sql_reader"
DB_VERSION = 2  # bump when table_sql changes


def _h(k: int, i: str = "i") -> str:
    """A deterministic hash of row number i (>= 1) for column k, the same integer in SQLite, DuckDB and PostgreSQL:
    a multiplier of its own per column, then a second multiplication modulo another prime, so that columns are
    independent (with one multiplier, every column was the same value shifted, and month, year and status came in
    lockstep). 64-bit integers throughout, no overflow below 10^9 rows."""
    return f"(((((({i}) + {k * 1013}) * {2654435761 + 2 * k * 7919}) % 4294967291) * 1000003) % 2147483647)"


def table_sql(orders: int) -> list[tuple[str, str, int, str]]:
    """(table, CREATE TABLE, rows, SELECT list over a row number i) for the three tables."""
    customers, products = max(orders // 15, 10), max(orders // 150, 10)
    return [
        (
            "customers",
            "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, "
            "segment TEXT, signup_year INTEGER)",
            customers,
            f"i, 'customer_' || i, 'city_' || ({_h(1)} % 500), "
            f"CASE {_h(2)} % 5 WHEN 0 THEN 'consumer' WHEN 1 THEN 'corporate' WHEN 2 THEN 'home office' "
            f"WHEN 3 THEN 'small business' ELSE 'government' END, 2015 + ({_h(3)} % 8)",
        ),
        (
            "products",
            "CREATE TABLE products (product_id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT, price REAL)",
            products,
            f"i, 'product_' || i, "
            f"CASE {_h(4)} % 6 WHEN 0 THEN 'toys' WHEN 1 THEN 'books' WHEN 2 THEN 'garden' WHEN 3 THEN 'tools' "
            f"WHEN 4 THEN 'food' ELSE 'music' END, ({_h(5)} % 50000) / 100.0",
        ),
        (
            "orders",
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers "
            "(customer_id), product_id INTEGER REFERENCES products (product_id), quantity INTEGER, "
            "order_year INTEGER, order_month INTEGER, status TEXT, amount INTEGER)",
            orders,
            f"i, 1 + ({_h(6)} % {customers}), 1 + ({_h(7)} % {products}), 1 + ({_h(8)} % 10), "
            f"2018 + ({_h(9)} % 6), 1 + ({_h(10)} % 12), "
            f"CASE {_h(11)} % 10 WHEN 0 THEN 'returned' WHEN 1 THEN 'cancelled' ELSE 'shipped' END, "
            # In cents: sums of doubles depend on the order rows are added in, which differs between a query and
            # its rewrite (another plan) and, with parallel execution, between two runs of the same query (the
            # first version stored doubles: DuckDB gave 4 different SUM(amount) results in 4 runs). Integers keep
            # every verdict about the engine, not about summation order.
            f"{_h(12)} % 100000",
        ),
    ]


# Twelve questions: the gold SQL runs unchanged on SQLite, DuckDB and PostgreSQL.
QUESTIONS = [
    "SELECT COUNT(*) FROM orders WHERE order_year = 2021 AND quantity > 5",
    "SELECT c.segment, COUNT(*) FROM orders AS o JOIN customers AS c ON o.customer_id = c.customer_id "
    "WHERE o.status = 'returned' GROUP BY c.segment ORDER BY c.segment",
    "SELECT p.category, SUM(o.quantity) FROM orders AS o JOIN products AS p ON o.product_id = p.product_id "
    "WHERE o.order_year = 2022 GROUP BY p.category ORDER BY SUM(o.quantity) DESC LIMIT 3",
    "SELECT customer_id, SUM(amount) FROM orders GROUP BY customer_id ORDER BY SUM(amount) DESC LIMIT 10",
    "SELECT COUNT(DISTINCT customer_id) FROM orders WHERE order_month = 12 AND status = 'cancelled'",
    "SELECT city, COUNT(*) FROM customers WHERE signup_year = 2019 GROUP BY city ORDER BY COUNT(*) DESC, city LIMIT 5",
    "SELECT name FROM customers WHERE customer_id IN (SELECT customer_id FROM orders WHERE amount > 99990) "
    "ORDER BY name",
    "SELECT order_year, order_month, COUNT(*) FROM orders WHERE status = 'returned' GROUP BY order_year, "
    "order_month ORDER BY order_year, order_month",
    "SELECT MAX(o.amount) FROM orders AS o JOIN customers AS c ON o.customer_id = c.customer_id "
    "WHERE c.city = 'city_17'",
    "SELECT name FROM products WHERE price > 490 AND product_id NOT IN "
    "(SELECT product_id FROM orders WHERE order_year = 2020 AND quantity = 10)",
    "SELECT AVG(quantity) FROM orders WHERE product_id IN (SELECT product_id FROM products WHERE category = 'toys')",
    "SELECT c.segment, AVG(o.amount) FROM customers AS c JOIN orders AS o ON o.customer_id = c.customer_id "
    "WHERE c.signup_year >= 2021 GROUP BY c.segment ORDER BY c.segment",
]


# --- the databases ------------------------------------------------------------------------------------------


def build_sqlite(path: Path, orders: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    for name, create, rows, select in table_sql(orders):
        conn.execute(create)
        conn.execute(
            f"INSERT INTO {name} WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq "
            f"WHERE i < {rows}) SELECT {select} FROM seq"
        )
    conn.commit()
    conn.close()
    tmp.rename(path)


def build_duckdb(path: Path, orders: int) -> None:
    import duckdb

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = duckdb.connect(str(tmp))
    for name, create, rows, select in table_sql(orders):
        conn.execute(create.replace("INTEGER", "BIGINT").replace("REAL", "DOUBLE"))
        conn.execute(f"INSERT INTO {name} SELECT {select} FROM (SELECT range + 1 AS i FROM range({rows}))")
    conn.close()
    tmp.rename(path)


def databases(orders: int, out: Path = OUT) -> dict[str, Path]:
    """The SQLite and DuckDB files for `orders` rows, built when missing."""
    out.mkdir(parents=True, exist_ok=True)
    # The version in the name: a change to table_sql builds new files instead of reusing stale ones.
    files = {e: out / f"retail-v{DB_VERSION}-{orders}.{e}" for e in ("sqlite", "duckdb")}
    for engine, build in (("sqlite", build_sqlite), ("duckdb", build_duckdb)):
        if not files[engine].is_file():
            t = time.perf_counter()
            build(files[engine], orders)
            print(f"built {files[engine].name} in {time.perf_counter() - t:.1f} s", flush=True)
    return files


# --- the baseline: BIRD evaluation.py, per pair -----------------------------------------------------------


def _connect(db: Database, parallel: bool = False):
    """A fresh connection, as BIRD's evaluation.py opens one per pair. `parallel`: the engine's default threads
    (DuckDB) or parallel workers (PostgreSQL); otherwise one core per query, as the sandbox runs them. With
    parallel aggregation, sums of doubles come out in a different order each run: the same query gave 4 different
    SUM(amount) results in 4 runs on DuckDB here, so pred and gold can differ in their last bits."""
    if db.engine == "sqlite":
        return sqlite3.connect(f"file:{db.path}?mode=ro", uri=True)
    if db.engine == "duckdb":
        import duckdb

        return duckdb.connect(db.path, read_only=True, config={} if parallel else {"threads": 1})
    import psycopg

    options = {} if parallel else {"options": "-c max_parallel_workers_per_gather=0"}
    return psycopg.connect(db.path, autocommit=True, **options)


def _execute_pair(db: Database, pred_sql: str, gold_sql: str, parallel: bool = False) -> int:
    return pair_verdict(_connect(db, parallel), pred_sql, gold_sql)


def baseline(db: Database, pairs: list[tuple[str, str]], timeout: float, parallel: bool = False) -> list[int]:
    return [_with_timeout(_execute_pair, (db, pred, gold, parallel), timeout) for pred, gold in pairs]


# --- ours -------------------------------------------------------------------------------------------------


def engine_run(db: Database, groups: list[tuple[str, list[str]]], timeout: float, workers: int | None):
    """Verdicts and seconds per group, one judge call per group as in GRPO."""
    verdicts, seconds = [], []
    with RewardEngine(metric="bird", timeout=timeout, workers=workers) as engine:
        for gold, comps in groups:
            n = len(comps)
            t = time.perf_counter()
            vs = engine.judge([f"```sql\n{c}\n```" for c in comps], [gold] * n, [db.path] * n, [db.engine] * n)
            seconds.append(time.perf_counter() - t)
            verdicts += [int(v.correct) for v in vs]
    return verdicts, seconds


def eval_run(db: Database, preds: list[str], timeout: float, workers: int | None) -> list[int]:
    examples = [Example(id=str(i), question="", sql=g, db=db, db_id="retail") for i, g in enumerate(QUESTIONS)]
    with SQLExecutor(workers=workers, timeout=timeout) as executor:
        rows = score_predictions(examples, preds, metric="bird", executor=executor)
    return [int(r["correct"]) for r in rows]


def draw(group: int, seed: int = 0) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(gold, group of completions) per question, and one eval prediction per question."""
    rng = random.Random(seed)
    groups, preds = [], []
    for gold in QUESTIONS:
        vs = variants(gold, "sqlite")
        groups.append((gold, [rng.choice(vs) for _ in range(group)]))
        preds.append(rng.choice(vs))
    return groups, preds


def gold_times(db: Database) -> list[float]:
    out = []
    for gold in QUESTIONS:
        conn = _connect(db)
        t = time.perf_counter()
        conn.execute(gold).fetchall()
        out.append(time.perf_counter() - t)
        conn.close()
    return out


def bench_engine(db: Database, groups, preds, timeout: float, workers: int | None) -> bool:
    times = gold_times(db)
    print(
        f"[{db.engine}] gold queries: {min(times):.2f}-{max(times):.2f} s each, {sum(times):.1f} s in all "
        f"({', '.join(f'{t:.2f}' for t in times)})",
        flush=True,
    )
    pairs = [(c, gold) for gold, comps in groups for c in comps]
    n = len(pairs)
    t = time.perf_counter()
    fast, per_group = engine_run(db, groups, timeout, workers)
    t_engine = time.perf_counter() - t
    t = time.perf_counter()
    slow = baseline(db, pairs, timeout)
    t_base = time.perf_counter() - t
    differ = sum(a != b for a, b in zip(fast, slow, strict=True))
    print(f"[{db.engine}] rewards  engine   {n / t_engine:6.2f} completions/s ({t_engine:.1f} s)")
    print(f"[{db.engine}] rewards  baseline {n / t_base:6.2f} completions/s ({t_base:.1f} s; one core per query)")
    print(
        f"[{db.engine}] rewards  ratio {t_base / t_engine:.1f}x (target >= 5x); verdicts "
        f"{'identical' if not differ else f'{differ} differ'} ({sum(fast)} correct of {n}); engine "
        f"{sum(per_group) / len(per_group):.2f} s per group of {len(groups[0][1])}",
        flush=True,
    )
    for i in [i for i, (a, b) in enumerate(zip(fast, slow, strict=True)) if a != b][:5]:
        print(f"    differs: engine {fast[i]}, baseline {slow[i]}: {pairs[i][0]}  [gold: {pairs[i][1]}]")
    if db.engine != "sqlite":  # the engine's own parallelism: faster per query, verdicts that vary run to run
        t = time.perf_counter()
        par = baseline(db, pairs, timeout, parallel=True)
        t_par = time.perf_counter() - t
        flipped = sum(a != b for a, b in zip(fast, par, strict=True))
        print(
            f"[{db.engine}] rewards  baseline with the engine's parallelism {n / t_par:6.2f} completions/s "
            f"({t_par:.1f} s): ratio {t_par / t_engine:.1f}x; verdicts {flipped} differ",
            flush=True,
        )
    t = time.perf_counter()
    ours = eval_run(db, preds, timeout, workers)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = baseline(db, list(zip(preds, QUESTIONS, strict=True)), timeout)
    t_theirs = time.perf_counter() - t
    differ_eval = sum(a != b for a, b in zip(ours, theirs, strict=True))
    print(
        f"[{db.engine}] eval     ours {len(preds) / t_ours:.2f} q/s ({t_ours:.1f} s, workers started inside), "
        f"baseline {len(preds) / t_theirs:.2f} q/s ({t_theirs:.1f} s): {t_theirs / t_ours:.1f}x; verdicts "
        f"{'identical' if not differ_eval else f'{differ_eval} differ'} ({sum(ours)} correct of {len(preds)})",
        flush=True,
    )
    return not differ and not differ_eval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=3_000_000, help="rows of the orders table")
    ap.add_argument("--group", type=int, default=8, help="completions per question (num_generations)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per query, both ways (BIRD's is 30 s)")
    ap.add_argument("--workers", type=int, default=None, help="SQL workers (default: the engine's and eval's own)")
    ap.add_argument("--engines", default="sqlite,duckdb,postgres")
    args = ap.parse_args()

    engines = args.engines.split(",")
    unknown = sorted(set(engines) - {"sqlite", "duckdb", "postgres"})
    if unknown:
        ap.error(f"--engines: unknown {', '.join(unknown)} (choose from sqlite, duckdb, postgres)")
    files = databases(args.orders)
    groups, preds = draw(args.group)
    distinct = sum(len(set(c)) for _, c in groups)
    print(
        f"{len(QUESTIONS)} questions x {args.group} completions = {len(QUESTIONS) * args.group} "
        f"({distinct} distinct per-question queries); orders {args.orders:,} rows",
        flush=True,
    )
    ok = True
    for engine in engines:
        if engine in files:
            ok &= bench_engine(Database(str(files[engine]), engine), groups, preds, args.timeout, args.workers)
            continue
        from nl2sql_align.db_copy import copy_database
        from nl2sql_align.sql.pg_local import ClusterUnavailable, local_cluster

        try:
            with local_cluster() as cluster:
                t = time.perf_counter()
                copy_database(files["sqlite"], cluster.dsn("retail"), reader=READER)
                with cluster.admin("retail") as conn:
                    conn.execute("VACUUM ANALYZE")
                print(f"[postgres] db copy of the SQLite file: {time.perf_counter() - t:.1f} s", flush=True)
                db = Database(cluster.dsn("retail", READER), "postgres")
                ok &= bench_engine(db, groups, preds, args.timeout, args.workers)
        except ClusterUnavailable as e:
            print(f"[postgres] skipped: {e}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
