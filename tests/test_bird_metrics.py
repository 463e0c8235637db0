"""BIRD mini-dev's Soft-F1 and R-VES (sql/results.py) on hand-built cases, each worked by hand from the official
definitions (bird-bench/mini_dev evaluation_f1.py at 47f116d, evaluation_ves.py at f9d2750). The cases avoid
results whose rows the official code would pair in set-iteration order (several distinct rows on both sides),
where the official score itself depends on the interpreter."""

from __future__ import annotations

import math

import pytest

from nl2sql_align.sql.results import bird_soft_f1, r_ves, ves_reward


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ([], [], 1.0),  # both empty
        ([(1,)], [], 0.0),  # nothing predicted
        ([], [(1,)], 0.0),  # nothing expected
        ([(1, 2)], [(1, 2)], 1.0),
        ([(1, 2, 3)], [(3, 2, 1)], 1.0),  # cells are matched by value, not by column
        ([(1, 2)], [(1, 3)], 0.5),  # tp 1/2, fp 1/2, fn 1/2
        ([(1, 2), (1, 2)], [(1, 2)], 1.0),  # duplicates dropped
        ([(5,)], [(5,), (5,)], 1.0),
        ([(1, 1)], [(1,)], 1.0),  # tp 1/2, no cell only on one side: precision = recall = 1
        ([(1, 2, 3, 4)], [(1, 9)], 1 / 3),  # tp 1/4, fp 1/4, fn 3/4: P = 1/2, R = 1/4
    ],
)
def test_soft_f1(gold, pred, expected) -> None:
    assert bird_soft_f1(gold, pred) == pytest.approx(expected)


def test_soft_f1_surplus_prediction_rows_are_false_positives() -> None:
    # gold one row, prediction that row plus another: the surplus row is one whole false positive whichever
    # row the official pairing takes first; with the matching row first P = 1/2, R = 1, F1 = 2/3.
    score = bird_soft_f1([(7,)], [(7,), (8,)])
    first = list({(7,), (8,)})[0]
    assert score == pytest.approx(2 / 3 if first == (7,) else 0.0)


@pytest.mark.parametrize(
    ("ratios", "reward"),
    [
        ([], 0.0),  # result mismatch: no timing at all
        ([2.0, 2.5, 3.0], 1.25),
        ([1.0, 1.2, 0.9], 1.0),
        ([0.6, 0.9, 0.7], 0.75),
        ([0.3, 0.4, 0.35], 0.5),
        ([0.1, 0.2, 0.15], 0.25),
        ([1.0] * 20 + [100.0], 1.0),  # the outlier (>= 3 std from the mean) is dropped before averaging
    ],
)
def test_ves_reward_buckets(ratios, reward) -> None:
    assert ves_reward(ratios) == reward


def test_r_ves_is_the_mean_of_sqrt_rewards() -> None:
    assert r_ves([1.25, 1.0, 0.25, 0.0]) == pytest.approx((math.sqrt(1.25) * 100 + 100 + 50 + 0) / 4)
    assert r_ves([]) == 0.0


# --- Soft-F1 wired in: eval --metric bird-f1 and the soft_f1 reward component ---------------------------------
# Integer cells only: the official pairing follows set-iteration order, which for tuples of ints does not depend on
# the hash seed, so the eval subprocess pairs rows as this process does.

TABLE = [(1, 10, 100), (2, 20, 200), (3, 30, 300)]
GOLD_AB = "SELECT a, b FROM t ORDER BY a"
GOLD_A = "SELECT a FROM t ORDER BY a"
AB = [(1, 10), (2, 20), (3, 30)]
# (gold, prediction, the prediction's rows by hand (None: it fails), BIRD's EX verdict)
CASES = [
    (GOLD_AB, GOLD_AB, AB, True),
    (GOLD_AB, "SELECT a, c FROM t ORDER BY a", [(1, 100), (2, 200), (3, 300)], False),  # one column wrong
    (GOLD_AB, "SELECT b, a FROM t ORDER BY a", [(10, 1), (20, 2), (30, 3)], False),  # columns swapped
    (GOLD_A, "SELECT a FROM t WHERE a < 3 ORDER BY a", [(1,), (2,)], False),  # a row missing
    (GOLD_A, "SELECT nope FROM t", None, False),  # fails
    (GOLD_A, "SELECT a FROM t UNION ALL SELECT a FROM t", [(1,), (2,), (3,)] * 2, True),  # duplicates: same set
]
GOLD_ROWS = {GOLD_AB: AB, GOLD_A: [(1,), (2,), (3,)]}


def _soft_f1_db(tmp_path):
    import sqlite3

    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (a INTEGER, b INTEGER, c INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", TABLE)
    con.commit()
    con.close()
    return db


def _expected_f1(gold: str, rows) -> float:
    return 0.0 if rows is None else bird_soft_f1(GOLD_ROWS[gold], rows)


def test_eval_metric_bird_f1_scores_soft_f1_per_example_and_keeps_bird_ex(tmp_path) -> None:
    import json

    from tests.test_cli import cli

    db = _soft_f1_db(tmp_path)
    data = tmp_path / "d.jsonl"
    records = [{"question": f"q{i}", "sql": gold, "db": str(db)} for i, (gold, *_) in enumerate(CASES)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    preds = tmp_path / "p.sql"
    preds.write_text("".join(p + "\n" for _, p, _, _ in CASES))
    report = tmp_path / "r"
    out = cli("eval", "--data", str(data), "--predictions", str(preds), "--metric", "bird-f1", "--report", str(report))
    rows = [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]
    expected = [_expected_f1(g, r) for g, _, r, _ in CASES]
    assert [r["soft_f1"] for r in rows] == pytest.approx(expected)
    # The hand-worked values: whole, half the cells of each row, all cells in another order, 2 of 3 rows, failed.
    assert expected == pytest.approx([1.0, 0.5, 1.0, 0.8, 0.0, 1.0])
    assert [r["correct"] for r in rows] == [c[3] for c in CASES]  # EX stays BIRD's set equality, 0/1
    assert [r["executable"] for r in rows] == [c[2] is not None for c in CASES]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["metric"] == "bird-f1"
    assert summary["ex"] == round(100 * 2 / 6, 2)
    assert summary["soft_f1"] == round(100 * sum(expected) / len(expected), 2)
    (db_group,) = summary["ex_by_db"].values()
    assert db_group["soft_f1"] == summary["soft_f1"]
    assert "Soft-F1" in out.stdout + out.stderr  # the table shows it

    # Under plain bird the verdicts are the same and no Soft-F1 is computed.
    cli("eval", "--data", str(data), "--predictions", str(preds), "--metric", "bird", "--report", str(tmp_path / "b"))
    bird = [json.loads(line) for line in (tmp_path / "b" / "per_example.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in bird] == [r["correct"] for r in rows]
    assert not any("soft_f1" in r for r in bird)
    assert "soft_f1" not in json.loads((tmp_path / "b" / "summary.json").read_text())


def test_unknown_metric_errors_list_bird_f1(tmp_path) -> None:
    import json

    from nl2sql_align.rewards import RewardEngine
    from nl2sql_align.sql import QueryRewriter
    from tests.test_cli import cli

    db = _soft_f1_db(tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "sql": "SELECT a FROM t", "db": str(db)}) + "\n")
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT a FROM t\n")
    p = cli("eval", "--data", str(data), "--predictions", str(preds), "--metric", "nonsense", check=False)
    assert p.returncode == 2 and "'nonsense'" in p.stderr
    assert "'spider', 'bird', 'bird-f1'" in p.stderr, p.stderr
    for make in (lambda: QueryRewriter(metric="nonsense"), lambda: RewardEngine(metric="nonsense", workers=1)):
        with pytest.raises(ValueError, match="expected one of spider, bird, bird-f1"):
            make()


def test_soft_f1_reward_gives_partial_credit_from_the_shared_engine(tmp_path) -> None:
    from nl2sql_align.rewards import ComponentSpec, RewardEngine, build_reward_functions

    db = _soft_f1_db(tmp_path)

    def block(sql: str) -> list[dict]:  # a conversational completion, as TRL passes it
        return [{"role": "assistant", "content": f"```sql\n{sql}\n```"}]

    cases = [(g, p, r) for g, p, r, _ in CASES] + [(GOLD_A, "DELETE FROM t", None)]  # refused: miss
    completions = [block(p) for _, p, _ in cases]
    columns = {
        "gold_sql": [g for g, _, _ in cases],
        "db_path": [str(db)] * len(cases),
        "db_engine": ["sqlite"] * len(cases),
    }
    with RewardEngine(metric="bird", workers=1, timeout=5.0) as engine:
        (soft, execution), _ = build_reward_functions([ComponentSpec("soft_f1"), ComponentSpec("execution")], engine)
        values = soft(prompts=None, completions=completions, **columns)
        assert values == pytest.approx([_expected_f1(g, r) for g, _, r in cases])
        assert values[0] == 1.0  # correct
        assert 0 < values[1] < 1 and 0 < values[3] < 1  # partial overlaps, strictly between
        assert values[4] == 0.0 and values[6] == 0.0  # non-executable, refused
        # The execution component of the same step reads the same verdicts: nothing runs again.
        executed = engine.executed
        assert execution(prompts=None, completions=completions, **columns) == [1.0, 0, 0, 0, 0, 1.0, 0]
        assert engine.executed == executed and engine.batches == 1
        # hit scales the score, miss is what a failed query gets; a failing gold is not scored.
        (scaled,), _ = build_reward_functions([ComponentSpec("soft_f1", hit=2.0, miss=-1.0)], engine)
        assert scaled(prompts=None, completions=completions[:5], **{k: v[:5] for k, v in columns.items()}) == (
            pytest.approx([2.0, 1.0, 2.0, 1.6, -1.0])
        )
        bad_gold = dict(columns, gold_sql=["SELECT nope FROM t"] * len(cases))
        assert soft(prompts=None, completions=completions, **bad_gold) == [None] * 6 + [0.0]  # refused: still miss


# --- R-VES wired in: eval --ves N -------------------------------------------------------------------------------
# A recursive CTE that counts to 300,000 takes tens of milliseconds on SQLite and changes no result: wrapped around
# a query it makes the same answer slow. So a fast prediction of a slow gold is >= 2x faster (reward 1.25) and a slow
# prediction of a fast gold < 0.25x as fast (reward 0.25), whatever machine runs the test.
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
SLOW_A = SLOW + "SELECT a FROM t WHERE (SELECT max(x) FROM c) > 0 ORDER BY a"


def test_eval_ves_times_correct_predictions_and_buckets_their_ratio(tmp_path) -> None:
    import json

    from tests.test_cli import cli

    db = _soft_f1_db(tmp_path)
    cases = [  # (gold, prediction, expected reward)
        (SLOW_A, GOLD_A, 1.25),  # the same rows, far faster than the gold
        (GOLD_A, SLOW_A, 0.25),  # the same rows, far slower
        (GOLD_A, "SELECT a FROM t WHERE a < 3", 0.0),  # wrong: never timed
        (GOLD_A, "SELECT nope FROM t", 0.0),  # fails
    ]
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"q{i}", "sql": g, "db": str(db)}) + "\n" for i, (g, _, _) in enumerate(cases))
    )
    preds = tmp_path / "p.sql"
    preds.write_text("".join(p + "\n" for _, p, _ in cases))
    report = tmp_path / "r"
    out = cli("eval", "--data", str(data), "--predictions", str(preds), "--metric", "bird", "--ves", "3",
              "--report", str(report))  # fmt: skip
    rows = [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False, False]
    assert [r["ves_reward"] for r in rows] == [c[2] for c in cases]
    assert rows[0]["time_ratio"] >= 2 and rows[1]["time_ratio"] < 0.25
    assert rows[2]["time_ratio"] is None and rows[3]["time_ratio"] is None
    summary = json.loads((report / "summary.json").read_text())
    assert summary["ves_iterations"] == 3
    assert summary["r_ves"] == pytest.approx(r_ves([c[2] for c in cases]), abs=0.01)  # (111.8 + 50) / 4
    assert "R-VES" in out.stdout + out.stderr

    # Without --ves nothing is timed, and EX is the same.
    cli("eval", "--data", str(data), "--predictions", str(preds), "--metric", "bird", "--report", str(tmp_path / "b"))
    plain = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert "r_ves" not in plain and plain["ex"] == summary["ex"]
    bad = cli("eval", "--data", str(data), "--predictions", str(preds), "--ves", "-1", check=False)
    assert bad.returncode != 0 and "eval.ves_iterations" in bad.stderr  # refused, not silently untimed
    off = cli("eval", "--data", str(data), "--predictions", str(preds), "--ves", "0", "--json")
    assert "r_ves" not in json.loads(off.stdout)  # 0 switches off what a model's recipe turned on


def test_ves_reward_component_buckets_the_time_ratio_of_correct_answers(tmp_path) -> None:
    """The `ves` component: a correct answer far faster than a slow gold earns 1.25 x hit, a correct answer far
    slower than a fast gold 0.25 x hit, a wrong or failing one miss, an unscorable gold None; and it times
    nothing beyond the executions every component shares."""
    from nl2sql_align.rewards import ComponentSpec, RewardEngine, build_reward_functions

    db = _soft_f1_db(tmp_path)
    cases = [  # (gold, prediction, expected)
        (SLOW_A, GOLD_A, 1.25),
        (GOLD_A, SLOW_A, 0.25),
        (GOLD_A, "SELECT a FROM t WHERE a < 3", -0.5),
        (GOLD_A, "SELECT nope FROM t", -0.5),
        ("SELECT nope FROM t", GOLD_A, None),
    ]
    columns = {
        "gold_sql": [g for g, _, _ in cases],
        "db_path": [str(db)] * len(cases),
        "db_engine": ["sqlite"] * len(cases),
    }
    completions = [[{"role": "assistant", "content": f"```sql\n{p}\n```"}] for _, p, _ in cases]
    with RewardEngine(metric="bird", workers=1, timeout=10.0) as engine:
        (ves, execution), _ = build_reward_functions(
            [ComponentSpec("ves", hit=1.0, miss=-0.5), ComponentSpec("execution")], engine
        )
        assert ves(prompts=None, completions=completions, **columns) == [c[2] for c in cases]
        executed = engine.executed
        assert execution(prompts=None, completions=completions, **columns) == [1.0, 1.0, 0.0, 0.0, None]
        assert engine.executed == executed  # the same verdicts: nothing ran again
    with RewardEngine(metric="bird", workers=1) as plain:  # without a ves component no ratio is kept
        (execution,), _ = build_reward_functions([ComponentSpec("execution")], plain)
        execution(prompts=None, completions=completions[:1], **{k: v[:1] for k, v in columns.items()})
        assert (
            plain.judge(completions[:1], *(columns[k][:1] for k in ("gold_sql", "db_path", "db_engine")))[0].time_ratio
            is None
        )
