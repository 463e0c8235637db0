"""Eval reports: EX per hardness level (Spider levels from the gold SQL, BIRD's own difficulty), the complex
group (hard + extra), EX per database, the level on each per-example row, the tables and the PNG chart."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from nl2sql_align.data import load_examples
from nl2sql_align.evaluate import print_summary, score_predictions, summarize, write_report
from nl2sql_align.sql import SQLExecutor
from tests.conftest import SPIDER
from tests.test_hardness import official_counts, official_level

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(i: int, gold: str, correct: bool, executable: bool, db: str, hardness: str | None = None) -> dict:
    """A scored row as score_predictions makes it."""
    return {
        "index": i,
        "id": str(i),
        "db": db,
        "hardness": hardness,
        "question": "q",
        "gold": gold,
        "pred": "p",
        "correct": correct,
        "executable": executable,
        "error": None if executable else "boom",
    }


def _spider_rows() -> list[dict]:
    # Levels by the official rules (tests/test_hardness.py, HAND_LABELLED) written beside each query.
    return [
        _row(0, "SELECT name FROM singer", True, True, "a"),  # easy
        _row(1, "SELECT name FROM singer WHERE age > 30", False, True, "a"),  # easy
        _row(2, "SELECT name , country FROM singer", True, True, "b"),  # medium
        _row(3, "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", False, False, "b"),  # hard
        _row(
            4, "SELECT name FROM singer UNION SELECT name FROM stadium UNION SELECT theme FROM concert", True, True, "b"
        ),  # hard
        _row(
            5, "SELECT count(*) FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)", False, True, "a"
        ),  # extra
        _row(6, "SELECT FROM (", False, False, "c"),  # sqlglot cannot parse it: unknown
    ]


def test_summary_per_level_complex_and_database_by_hand():
    rows = _spider_rows()
    s = summarize(rows, "spider")
    # The keys other code reads are unchanged: 3 of 7 correct, 5 of 7 executable.
    assert (s["metric"], s["n"], s["ex"], s["executable"]) == ("spider", 7, 42.86, 71.43)
    assert s["ex_by_hardness"] == {
        "easy": {"n": 2, "ex": 50.0, "executable": 100.0},
        "medium": {"n": 1, "ex": 100.0, "executable": 100.0},
        "hard": {"n": 2, "ex": 50.0, "executable": 50.0},
        "extra": {"n": 1, "ex": 0.0, "executable": 100.0},
        "unknown": {"n": 1, "ex": 0.0, "executable": 0.0},
    }
    assert list(s["ex_by_hardness"]) == ["easy", "medium", "hard", "extra", "unknown"]  # level order, not a-z
    assert s["ex_complex"] == {"n": 3, "ex": 33.33, "executable": 66.67}  # rows 3, 4, 5
    assert s["ex_by_db"] == {
        "a": {"n": 3, "ex": 33.33, "executable": 100.0},
        "b": {"n": 3, "ex": 66.67, "executable": 66.67},
        "c": {"n": 1, "ex": 0.0, "executable": 0.0},
    }
    assert [r["level"] for r in rows] == ["easy", "easy", "medium", "hard", "hard", "extra", "unknown"]


def test_summary_carries_the_same_interval_compare_gives():
    from nl2sql_align.compare import add_paired_stats

    rows = _spider_rows()
    s = summarize(rows, "spider")
    lo, hi = s["ex_ci"]
    assert lo < s["ex"] < hi and hi - lo > 20  # 3 of 7: a wide interval around 42.86
    recs = [{"name": "run"}]
    add_paired_stats(recs, [[bool(r["correct"]) for r in rows]], 0)
    assert s["ex_ci"] == recs[0]["ex_ci"]  # one place computes it: eval and compare agree
    all_right = summarize([dict(r, correct=True) for r in rows], "spider")
    assert all_right["ex_ci"] == [100.0, 100.0]


def test_the_datas_own_difficulty_wins_and_has_no_complex_group():
    # BIRD rows carry simple/moderate/challenging: those are the levels, whatever the SQL looks like.
    rows = [
        _row(0, "SELECT name FROM singer", False, True, "x", hardness="challenging"),
        _row(1, "SELECT count(*) FROM singer WHERE age > (SELECT avg(age) FROM singer)", True, True, "x", "simple"),
        _row(2, "SELECT name FROM singer", True, True, "y", hardness="moderate"),
        _row(3, "SELECT name FROM singer", True, False, "y", hardness="simple"),
    ]
    s = summarize(rows, "bird")
    assert list(s["ex_by_hardness"]) == ["simple", "moderate", "challenging"]
    assert s["ex_by_hardness"]["simple"] == {"n": 2, "ex": 100.0, "executable": 50.0}
    assert s["ex_by_hardness"]["challenging"] == {"n": 1, "ex": 0.0, "executable": 100.0}
    assert "ex_complex" not in s
    assert [r["level"] for r in rows] == ["challenging", "simple", "moderate", "simple"]


def test_empty_scores_summarize_and_report(tmp_path: Path):
    s = summarize([], "spider")
    assert s == {"metric": "spider", "n": 0, "ex": 0.0, "executable": 0.0}
    write_report([], s, tmp_path)
    assert (tmp_path / "ex.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "per_example.jsonl").read_text() == ""


def test_report_files_carry_levels_and_the_charts_are_pngs(tmp_path: Path):
    rows = _spider_rows()
    summary = summarize(rows, "spider")
    for r in rows:
        del r["level"]  # write_report fills it in itself (cli.eval passes the rows straight through)
    write_report(rows, summary, tmp_path / "report")
    report = tmp_path / "report"
    written = [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]
    assert [w["level"] for w in written] == ["easy", "easy", "medium", "hard", "hard", "extra", "unknown"]
    assert json.loads((report / "summary.json").read_text()) == summary
    for chart in ("ex.png", "ex_by_db.png"):
        data = (report / chart).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, chart


def test_terminal_tables_show_each_level_complex_and_databases(capsys):
    print_summary(summarize(_spider_rows(), "spider"), "EX on test")
    out = capsys.readouterr().out
    for text in (
        "EX on test",
        "easy",
        "medium",
        "hard",
        "extra",
        "unknown",
        "complex (hard+extra)",
        "33.3",
        "EX per database",
        "66.7",
    ):
        assert text in out, text


@pytest.fixture(scope="module")
def executor():
    with SQLExecutor(workers=2, timeout=10.0) as ex:
        yield ex


def test_spider_sample_end_to_end_levels_follow_the_official_rules(executor, tmp_path: Path):
    examples = load_examples(f"spider:{SPIDER}")
    raw = json.loads((SPIDER / "dev.json").read_text(encoding="utf-8"))
    official = [official_level(*official_counts(r["sql"])) for r in raw]  # oracle: the official parse
    # Every third prediction cannot run; the rest are the gold SQL itself.
    preds = ["SELECT no_such_column FROM no_such_table" if i % 3 == 0 else e.sql for i, e in enumerate(examples)]
    rows = score_predictions(examples, preds, executor=executor)
    summary = summarize(rows, "spider")
    assert [r["level"] for r in rows] == official
    for level, n in Counter(official).items():
        right = sum(1 for i, lv in enumerate(official) if lv == level and i % 3 != 0)
        assert summary["ex_by_hardness"][level]["n"] == n
        assert summary["ex_by_hardness"][level]["ex"] == round(100 * right / n, 2), level
        assert summary["ex_by_hardness"][level]["executable"] == round(100 * right / n, 2), level
    hard = [i for i, lv in enumerate(official) if lv in ("hard", "extra")]
    assert summary["ex_complex"]["n"] == len(hard)
    assert summary["ex_complex"]["ex"] == round(100 * sum(i % 3 != 0 for i in hard) / len(hard), 2)
    assert set(summary["ex_by_db"]) == {"concert_singer", "pets_1", "car_1", "flight_2"}
    assert sum(g["n"] for g in summary["ex_by_db"].values()) == len(examples)


def test_bird_layout_end_to_end_uses_the_difficulty_field(executor, tmp_path: Path):
    root = tmp_path / "bird"
    (root / "dev_databases" / "concert_singer").mkdir(parents=True)
    shutil.copy(
        SPIDER / "database" / "concert_singer" / "concert_singer.sqlite",
        root / "dev_databases" / "concert_singer" / "concert_singer.sqlite",
    )
    recs = [
        {"question_id": i, "db_id": "concert_singer", "question": f"q{i}", "evidence": "", "SQL": sql, "difficulty": d}
        for i, (sql, d) in enumerate(
            [
                ("SELECT count(*) FROM singer", "simple"),
                ("SELECT name FROM singer WHERE age > 30", "simple"),
                ("SELECT country, count(*) FROM singer GROUP BY country", "moderate"),
                ("SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)", "challenging"),
            ]
        )
    ]
    (root / "dev.json").write_text(json.dumps(recs))
    examples = load_examples(f"bird:{root}")
    preds = [examples[0].sql, "SELECT 'wrong'", examples[2].sql, examples[3].sql]
    summary = summarize(score_predictions(examples, preds, metric="bird", executor=executor), "bird")
    assert summary["ex_by_hardness"] == {
        "simple": {"n": 2, "ex": 50.0, "executable": 100.0},
        "moderate": {"n": 1, "ex": 100.0, "executable": 100.0},
        "challenging": {"n": 1, "ex": 100.0, "executable": 100.0},
    }
    assert "ex_complex" not in summary
