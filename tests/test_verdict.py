"""One verdict: evaluation and the reward engine (GRPO, PPO, pairs) agree on every pair, row-cap cuts included."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nl2sql_align.data import load_examples
from nl2sql_align.evaluate import score_predictions
from nl2sql_align.rewards import RewardEngine
from nl2sql_align.sql import ExecResult, SQLExecutor, verdict

ROW_CAP = 10

# (gold, prediction): the table holds 30 rows, so anything returning more than ROW_CAP rows is cut.
PAIRS = [
    ("SELECT x FROM t", "SELECT x FROM t"),  # both cut at the cap, same rows fetched
    ("SELECT x FROM t", "SELECT x FROM t LIMIT 10"),  # same first 10 rows; the gold had more
    ("SELECT x FROM t LIMIT 10", "SELECT x FROM t"),  # the prediction had more
    ("SELECT x FROM t", "SELECT x FROM t ORDER BY x DESC"),  # cut, different rows fetched
    ("SELECT x FROM t WHERE x < 5", "SELECT x FROM t WHERE x < 5 ORDER BY x DESC"),  # order ignored
    ("SELECT x FROM t WHERE x < 5 ORDER BY x", "SELECT x FROM t WHERE x < 5 ORDER BY x DESC"),  # order matters
    ("SELECT DISTINCT y FROM t WHERE x < 6", "SELECT y FROM t WHERE x < 6"),  # Spider drops DISTINCT; BIRD: sets
    ("SELECT y FROM t WHERE x < 6", "SELECT y, y FROM t WHERE x < 6"),  # column count
    ("SELECT count(*) FROM t", "SELECT count(*) FROM nope"),  # prediction fails
    ("SELECT count(*) FROM t", "DROP TABLE t"),  # prediction refused
]


@pytest.fixture(scope="module")
def capped_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "t.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x INTEGER, y TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, "ab"[i % 2]) for i in range(30)])
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("metric", ["spider", "bird"])
def test_eval_and_reward_engine_give_identical_verdicts(capped_db: Path, tmp_path: Path, metric: str):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"question": "q", "sql": g, "db": str(capped_db)}) + "\n" for g, _ in PAIRS))
    examples = load_examples(str(data))
    preds = [p for _, p in PAIRS]
    with SQLExecutor(workers=1, timeout=5.0, row_cap=ROW_CAP) as executor:
        rows = score_predictions(examples, preds, metric=metric, executor=executor)
        with RewardEngine(metric=metric, executor=executor) as engine:
            verdicts = engine.judge(
                [f"```sql\n{p}\n```" for p in preds],
                [ex.sql for ex in examples],
                [ex.db.path for ex in examples],
                [ex.db.engine for ex in examples],
            )
    from_eval = [r["correct"] for r in rows]
    from_engine = [v.correct for v in verdicts]
    assert from_eval == from_engine
    # The cases where the semantics or the cap decide, so that "identical" cannot mean "identically wrong".
    expected = {
        "spider": [True, False, False, False, True, False, True, False, False, False],
        "bird": [True, True, True, False, True, True, True, False, False, False],
    }[metric]
    assert from_eval == expected


def test_a_result_cut_at_the_cap_never_equals_an_uncut_one_under_spider():
    rows = [(i,) for i in range(ROW_CAP)]
    cut = ExecResult(rows=rows, columns=["x"], error=None, truncated=True)
    whole = ExecResult(rows=rows, columns=["x"], error=None, truncated=False)
    assert not verdict(cut, whole, "SELECT x FROM t", "spider")
    assert not verdict(whole, cut, "SELECT x FROM t", "spider")
    assert verdict(cut, cut, "SELECT x FROM t", "spider")
    assert verdict(cut, whole, "SELECT x FROM t", "bird")  # BIRD compares the sets fetched
    assert not verdict(ExecResult(rows=None, columns=None, error="boom"), whole, "SELECT x FROM t", "bird")
