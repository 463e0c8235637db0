"""Scoring throughput of `eval --predictions` versus the official evaluators' per-pair way, side by side.

    python scripts/bench_eval.py [--per-question 8] [--workers N]

Predictions: for every question of the Spider sample (259, SQLite), `--per-question` predictions drawn (seeded)
from the gold SQL and realistic wrong variants (scripts/bench_reward.py's `variants`: another literal,
DISTINCT toggled, ORDER BY reversed, LIMIT 1, a misspelt column, COUNT(*) around it), scored as one
predictions file whose examples repeat.

- ours: `score_predictions` with an `SQLExecutor` (persistent sandboxed workers, each distinct gold once).
- baseline, written here from the evaluators' documented behaviour (no official code is copied): every pair
  executed in sequence, the gold every time, each query on a fresh `sqlite3` connection with `fetchall()`.
  BIRD semantics: `set(pred) == set(gold)`, pred and gold run as written. Spider semantics: the official
  query post-processing (`as_scored`) and the test-suite comparison (our port, `spider_exec_match`).

Verdicts must be identical under both metrics (exit status 1 otherwise); pairs/second and the ratio are printed,
for ours both cold (a fresh executor, as one `eval --predictions` call) and warm (a second call on it). The
sandbox progress bar goes to stderr: `2>/dev/null` for the figures alone.
Under BIRD the baseline's comparison is independent of ours; under Spider it shares the comparison function and
checks the execution path (worker pool, gold cache, row normalisation).
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

from bench_reward import variants  # noqa: E402
from nl2sql_align.sql.compare import spider_exec_match  # noqa: E402

from nl2sql_align.data import load_examples  # noqa: E402
from nl2sql_align.evaluate import score_predictions  # noqa: E402
from nl2sql_align.sql import SQLExecutor, as_scored  # noqa: E402

SPIDER = REPO.parent / "shared" / "data" / "spider_sample"


def build(per_question: int, seed: int = 0):
    rng = random.Random(seed)
    examples, predictions = [], []
    for ex in load_examples(f"spider:{SPIDER}"):
        vs = variants(ex.sql, "sqlite")
        for _ in range(per_question):
            examples.append(ex)
            predictions.append(rng.choice(vs))
    return examples, predictions


# --- the baseline: one pair at a time, a fresh connection per query ---------------------------------------


def _run(path: str, sql: str):
    """One query the evaluators' way: a fresh connection, execute, fetchall; None when it fails."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = lambda b: b.decode(errors="ignore")
    try:
        return conn.execute(sql).fetchall()
    except Exception:  # noqa: BLE001 -- a failing prediction scores 0
        return None
    finally:
        conn.close()


def baseline(examples, predictions, metric: str) -> list[bool]:
    out = []
    for ex, pred in zip(examples, predictions, strict=True):
        if metric == "bird":
            p, g = _run(ex.db.path, pred), _run(ex.db.path, ex.sql)
            out.append(p is not None and g is not None and set(p) == set(g))
        else:
            g = _run(ex.db.path, as_scored(ex.sql, metric="spider", dialect="sqlite"))
            p = _run(ex.db.path, as_scored(pred, metric="spider", dialect="sqlite"))
            order_matters = "order by" in ex.sql.lower()
            out.append(p is not None and g is not None and spider_exec_match(g, p, order_matters))
    return out


def ours(examples, predictions, metric: str, workers: int | None) -> tuple[list[bool], float, float]:
    """Verdicts, seconds of a cold run (workers start inside, as in `eval --predictions`) and of a warm one."""
    t = time.perf_counter()
    with SQLExecutor(workers=workers, timeout=30.0) as executor:
        rows = score_predictions(examples, predictions, metric=metric, executor=executor)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        again = score_predictions(examples, predictions, metric=metric, executor=executor)
        warm = time.perf_counter() - t
    assert [r["correct"] for r in again] == [r["correct"] for r in rows]
    return [r["correct"] for r in rows], cold, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-question", type=int, default=8, help="predictions per Spider question")
    ap.add_argument("--workers", type=int, default=None, help="SQLExecutor workers (default: its own)")
    ap.add_argument("--metrics", default="bird,spider")
    args = ap.parse_args()

    examples, predictions = build(args.per_question)
    n = len(examples)
    distinct = len({(ex.db.path, p) for ex, p in zip(examples, predictions, strict=True)})
    print(
        f"{n // args.per_question} questions x {args.per_question} predictions = {n} pairs "
        f"({distinct} distinct (database, prediction))",
        flush=True,
    )
    failed = False
    for metric in args.metrics.split(","):
        fast, t_ours, t_warm = ours(examples, predictions, metric, args.workers)
        t = time.perf_counter()
        slow = baseline(examples, predictions, metric)
        t_base = time.perf_counter() - t
        differ = sum(a != b for a, b in zip(fast, slow, strict=True))
        failed |= bool(differ)
        print(f"[{metric}] ours      {n / t_ours:8.0f} pairs/s  ({t_ours:.2f} s, incl. starting the workers)")
        print(f"[{metric}] ours warm {n / t_warm:8.0f} pairs/s  ({t_warm:.2f} s, workers already running)")
        print(f"[{metric}] baseline  {n / t_base:8.0f} pairs/s  ({t_base:.2f} s)")
        print(f"[{metric}] ratio     {t_base / t_ours:8.2f}x cold, {t_base / t_warm:.2f}x warm")
        print(
            f"[{metric}] verdicts  {'identical' if not differ else f'{differ} differ'} ({sum(fast)} correct of {n})",
            flush=True,
        )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
