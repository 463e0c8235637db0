"""Reward engine throughput versus the official evaluators' way of scoring, side by side in one run.

    python scripts/bench_reward.py [--group 8] [--epochs 2] [--grpo-steps 6]

Completions: for every example of the demo dev split (DuckDB) and the Spider sample (SQLite), a GRPO-like
group of `--group` completions drawn (seeded) from the gold SQL and realistic wrong variants (another
literal, DISTINCT toggled, ORDER BY reversed, LIMIT 1 added, COUNT(*) around it, a misspelt column). Groups
repeat every epoch, as prompts do in training.

- engine: `RewardEngine.judge` on one group batch at a time (what GRPOTrainer calls), BIRD semantics.
- baseline: what BIRD's evaluation.py does for every pair: a fresh connection, the prediction and the gold
  executed under a timeout wrapper (a thread, like func_timeout), `set(pred) == set(gold)`.

Verdicts must be identical; the ratio of completions/second is printed. Then a short GRPO run of the tiny model
on the demo reports the share of each step spent in rewards (TRL's step_time vs the engine's own seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sqlglot  # noqa: E402
from sqlglot import exp  # noqa: E402

from nl2sql_align.data import load_examples  # noqa: E402
from nl2sql_align.rewards import RewardEngine  # noqa: E402
from nl2sql_align.sql import as_scored  # noqa: E402

SPIDER = REPO.parent / "shared" / "data" / "spider_sample"


# --- realistic wrong variants -----------------------------------------------------------------------------


def variants(sql: str, dialect: str) -> list[str]:
    out = [sql]
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except Exception:
        return out

    def edit(fn):
        t = tree.copy()
        try:
            if fn(t) is not False:
                out.append(t.sql(dialect=dialect))
        except Exception:
            pass

    def other_literal(t):
        lit = next(t.find_all(exp.Literal), None)
        if lit is None:
            return False
        if lit.is_string:
            lit.replace(exp.Literal.string(lit.this[:-1] if len(lit.this) > 1 else lit.this + "x"))
        else:
            lit.replace(exp.Literal.number(float(lit.this) + 1))

    def toggle_distinct(t):
        sel = t.find(exp.Select)
        sel.set("distinct", None if sel.args.get("distinct") else exp.Distinct())

    def reverse_order(t):
        o = t.find(exp.Ordered)
        if o is None:
            return False
        o.set("desc", not o.args.get("desc"))

    def limit_one(t):
        if t.args.get("limit") or not isinstance(t, exp.Select):
            return False
        t.set("limit", exp.Limit(expression=exp.Literal.number(1)))

    def misspelt_column(t):
        col = next(t.find_all(exp.Column), None)
        if col is None:
            return False
        col.set("this", exp.to_identifier(col.name + "_x"))

    for fn in (other_literal, toggle_distinct, reverse_order, limit_one, misspelt_column):
        edit(fn)
    out.append(f"SELECT COUNT(*) FROM ({sql}) AS sub")
    return list(dict.fromkeys(out))


def build_groups(group: int, seed: int = 0):
    rng = random.Random(seed)
    examples = load_examples("demo:dev") + load_examples(f"spider:{SPIDER}")
    groups = []
    for ex in examples:
        vs = variants(ex.sql, ex.db.dialect)
        # A group of samples from a policy: the right answer often more than once.
        picks = [rng.choice(vs) for _ in range(group)]
        groups.append((ex, [f"```sql\n{s}\n```" for s in picks]))
    return groups


# --- the baseline: BIRD evaluation.py, per pair -----------------------------------------------------------


def _connect(ex):
    if ex.db.engine == "sqlite":
        return sqlite3.connect(f"file:{ex.db.path}?mode=ro", uri=True)
    import duckdb

    return duckdb.connect(ex.db.path, read_only=True)


def _execute_pair(ex, pred_sql, gold_sql):
    return pair_verdict(_connect(ex), pred_sql, gold_sql)


def pair_verdict(conn, pred_sql: str, gold_sql: str) -> int:
    """BIRD's per-pair verdict on a fresh connection, which it closes: prediction, then gold, `set ==`."""
    try:
        pred = conn.execute(pred_sql).fetchall()
        gold = conn.execute(gold_sql).fetchall()
        return 1 if set(pred) == set(gold) else 0
    finally:
        conn.close()


def _with_timeout(fn, args, timeout):
    # func_timeout runs the call in a thread and gives up waiting after the timeout, as BIRD does.
    box = {}

    def run():
        try:
            box["out"] = fn(*args)
        except Exception as e:  # noqa: BLE001
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive() or "err" in box:
        return 0
    return box["out"]


def baseline(groups, epochs: int, timeout: float) -> list[int]:
    verdicts = []
    for _ in range(epochs):
        for ex, comps in groups:
            for c in comps:
                pred = c.removeprefix("```sql\n").removesuffix("\n```")
                verdicts.append(_with_timeout(_execute_pair, (ex, as_scored(pred, metric="bird"), ex.sql), timeout))
    return verdicts


def engine_run(groups, epochs: int, timeout: float, workers: int | None) -> tuple[list[int], RewardEngine]:
    verdicts = []
    engine = RewardEngine(metric="bird", timeout=timeout, workers=workers)
    with engine:
        for _ in range(epochs):
            for ex, comps in groups:
                n = len(comps)
                vs = engine.judge(comps, [ex.sql] * n, [ex.db.path] * n, [ex.db.engine] * n, [ex.dialect or ""] * n)
                verdicts += [int(v.correct) for v in vs]
    return verdicts, engine


# --- share of a GRPO step spent in rewards ------------------------------------------------------------------


def grpo_share(steps: int) -> dict:
    from nl2sql_align.recipe import load_recipe
    from nl2sql_align.stages import grpo
    from nl2sql_align.tiny_model import ensure_tiny_model

    # The demo's SFT output when `make demo` has run (realistic completions), else the random tiny model.
    model = REPO / "out" / "demo" / "sft"
    if not (model / "config.json").is_file():
        model = REPO / "out" / "tiny-model"
        ensure_tiny_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        r = load_recipe(
            REPO / "recipes" / "tiny-grpo.toml",
            [
                f"model.name_or_path={model}",
                f"output_dir={tmp}/grpo",
                f"train.max_steps={steps}",
                "train.logging_steps=1",
                "eval.after_training=false",
            ],
            train_config_cls=grpo.config_class(),
        )
        out = grpo.run(r, overwrite=True)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [x for x in rows if "step_time" in x]
    step = sum(x["step_time"] for x in rows)
    rewards = sum(x.get("reward_engine/seconds", 0.0) for x in rows)
    return {
        "model": str(model.relative_to(REPO)),
        "steps": len(rows),
        "step_seconds": step,
        "reward_seconds": rewards,
        "share": rewards / step if step else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", type=int, default=8, help="completions per prompt (num_generations)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="per query, both ways (BIRD's is 30 s)")
    ap.add_argument("--workers", type=int, default=None, help="engine SQL workers (default: the machine's cores)")
    ap.add_argument("--grpo-steps", type=int, default=6, help="0 skips the GRPO share measurement")
    args = ap.parse_args()

    groups = build_groups(args.group)
    n = len(groups) * args.group * args.epochs
    print(f"{len(groups)} prompts x {args.group} completions x {args.epochs} epochs = {n} completions", flush=True)

    t = time.perf_counter()
    fast, engine = engine_run(groups, args.epochs, args.timeout, args.workers)
    t_engine = time.perf_counter() - t
    t = time.perf_counter()
    slow = baseline(groups, args.epochs, args.timeout)
    t_base = time.perf_counter() - t

    mismatches = [i for i, (a, b) in enumerate(zip(fast, slow, strict=True)) if a != b]
    print(
        f"engine    {n / t_engine:9.0f} completions/s  ({t_engine:.2f} s; {engine.executor.num_workers} workers, "
        f"{engine.executed} distinct queries run, {engine.gold_executed} gold queries run)"
    )
    print(f"baseline  {n / t_base:9.0f} completions/s  ({t_base:.2f} s; fresh connection + gold per pair)")
    print(f"ratio     {t_base / t_engine:9.1f}x  (target >= 5x)")
    print(f"verdicts  {'identical' if not mismatches else f'{len(mismatches)} differ'} ({sum(fast)} correct of {n})")
    if args.grpo_steps:
        s = grpo_share(args.grpo_steps)
        print(
            f"GRPO      {s['steps']} steps of {s['model']}: {s['reward_seconds']:.2f} s in rewards of {s['step_seconds']:.1f} s "
            f"= {100 * s['share']:.1f}% of step time (target < 10%)"
        )
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
