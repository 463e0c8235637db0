"""Result comparison: the official Spider (test-suite-sql-eval) and BIRD semantics, case by case."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import pytest

from nl2sql_align.sql import (
    SQLExecutor,
    bird_exec_match,
    normalize_rows,
    remove_distinct,
    results_match,
    spider_exec_match,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPIDER = DATA / "spider_sample"


# --- order --------------------------------------------------------------------------------------------------


def test_order_matters_only_with_order_by_in_gold() -> None:
    gold, pred = [(1,), (2,), (3,)], [(3,), (1,), (2,)]
    assert results_match("SELECT a FROM t", gold, pred)
    assert not results_match("SELECT a FROM t ORDER BY a", gold, pred)
    assert results_match("SELECT a FROM t order  by a", gold, pred)  # official test is the literal "order by"
    assert results_match("SELECT a FROM t ORDER BY a", gold, list(gold))
    assert spider_exec_match(gold, pred, order_matters=False)
    assert not spider_exec_match(gold, pred, order_matters=True)
    assert bird_exec_match(gold, pred)  # BIRD never looks at order


# --- duplicates ---------------------------------------------------------------------------------------------


def test_duplicates_count_under_spider_not_under_bird() -> None:
    gold, pred = [(1,), (1,), (2,)], [(1,), (2,), (2,)]
    assert not spider_exec_match(gold, pred, order_matters=False)
    assert bird_exec_match(gold, pred)
    assert not results_match("SELECT a FROM t", gold, pred, metric="spider")
    assert results_match("SELECT a FROM t", gold, pred, metric="bird")
    assert spider_exec_match(gold, [(2,), (1,), (1,)], order_matters=False)


# --- columns ------------------------------------------------------------------------------------------------


def test_column_permutation_is_equal_under_spider_only() -> None:
    gold = [("a", 1), ("b", 2)]
    pred = [(1, "a"), (2, "b")]
    assert spider_exec_match(gold, pred, order_matters=False)
    assert spider_exec_match(gold, pred, order_matters=True)
    assert not bird_exec_match(gold, pred)


def test_column_permutation_must_be_consistent_across_rows() -> None:
    # Each row of pred is a permutation of a gold row, but no single column permutation maps one to the other.
    gold = [(1, 2), (3, 4)]
    pred = [(1, 2), (4, 3)]
    assert not spider_exec_match(gold, pred, order_matters=False)


def test_wide_results_use_the_sampled_permutation_search() -> None:
    gold = [(i, f"n{i}", i * 1.5, i % 2, f"x{i}") for i in range(30)]
    pred = [(r[4], r[2], r[0], r[3], r[1]) for r in gold]
    assert spider_exec_match(gold, pred, order_matters=True)
    assert spider_exec_match(gold, list(reversed(pred)), order_matters=False)
    assert not spider_exec_match(gold, list(reversed(pred)), order_matters=True)
    wrong = [(*r[:4], "changed") if i == 7 else r for i, r in enumerate(pred)]
    assert not spider_exec_match(gold, wrong, order_matters=False)
    # Deterministic: same answer every call (seeded sampling).
    assert len({spider_exec_match(gold, pred, order_matters=False) for _ in range(5)}) == 1


def test_different_column_counts_differ() -> None:
    assert not spider_exec_match([(1, 2)], [(1,)], order_matters=False)
    assert not bird_exec_match([(1, 2)], [(1,)])


# --- empty results and row counts ---------------------------------------------------------------------------


def test_empty_results() -> None:
    assert spider_exec_match([], [], order_matters=False)
    assert spider_exec_match([], [], order_matters=True)
    assert bird_exec_match([], [])
    assert not spider_exec_match([], [(1,)], order_matters=False)
    assert not spider_exec_match([(1,)], [], order_matters=False)
    assert not bird_exec_match([(None,)], [])


def test_different_row_counts_differ() -> None:
    assert not spider_exec_match([(1,), (2,)], [(1,), (2,), (2,)], order_matters=False)
    assert not spider_exec_match([(1,)], [(1,), (1,)], order_matters=False)


def test_failed_query_never_matches() -> None:
    assert not results_match("SELECT 1", [(1,)], None)
    assert not results_match("SELECT 1", None, [(1,)])


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="metric"):
        results_match("SELECT 1", [(1,)], [(1,)], metric="exact")


# --- cell values --------------------------------------------------------------------------------------------


def test_floats_compare_exactly_like_python() -> None:
    assert spider_exec_match([(1.0,)], [(1,)], order_matters=False)  # 1.0 == 1 and hash(1.0) == hash(1)
    assert bird_exec_match([(1.0,)], [(1,)])
    assert not spider_exec_match([(0.1 + 0.2,)], [(0.3,)], order_matters=False)  # no tolerance, as official
    assert not bird_exec_match([(0.1 + 0.2,)], [(0.3,)])


def test_nulls() -> None:
    assert spider_exec_match([(None, 1)], [(None, 1)], order_matters=True)
    assert spider_exec_match([(None, "a")], [("a", None)], order_matters=False)
    assert not spider_exec_match([(None,)], [(0,)], order_matters=False)
    assert bird_exec_match([(None,)], [(None,)])


def test_nan_equals_nan_after_normalisation() -> None:
    nan_a, nan_b = float("nan"), float("nan")
    assert not bird_exec_match([(nan_a,)], [(nan_b,)])  # raw: NaN != NaN (distinct objects)
    assert normalize_rows([(nan_a,)]) == [("NaN",)]
    assert results_match("SELECT x", [(nan_a,)], [(nan_b,)], metric="bird")
    assert results_match("SELECT x", [(nan_a,)], [(nan_b,)], metric="spider")


def test_decimal_versus_float() -> None:
    assert Decimal("0.1") != 0.1  # why normalisation exists (docs/DESIGN.md)
    assert not bird_exec_match([(Decimal("0.1"),)], [(0.1,)])
    assert normalize_rows([(Decimal("0.1"),)]) == [(0.1,)]
    assert results_match("SELECT x", [(Decimal("0.1"),)], [(0.1,)], metric="bird")
    assert results_match("SELECT x", [(Decimal("2.50"),)], [(2.5,)], metric="spider")


def test_normalize_rows() -> None:
    rows = normalize_rows(
        [
            [1, "a", None, b"\x00\x01", True],
            (Decimal("1.5"), [1, Decimal("2.5"), [3]], {"b": 2, "a": [1]}, float("nan"), bytearray(b"x")),
        ]
    )
    assert rows[0] == (1, "a", None, b"\x00\x01", True)
    assert rows[1] == (1.5, (1, 2.5, (3,)), (("a", (1,)), ("b", 2)), "NaN", b"x")
    assert all(isinstance(r, tuple) for r in rows)
    hash(rows[1])  # hashable: LIST/STRUCT values can go into sets
    assert isinstance(rows[0][4], bool)
    assert normalize_rows([({1: "x", "k": "y"},)])[0][0] in ((("k", "y"), (1, "x")), ((1, "x"), ("k", "y")))
    assert not math.isnan(rows[1][0])


# --- official remove_distinct behaviour feeds comparison ----------------------------------------------------


def test_remove_distinct_changes_the_duplicate_count() -> None:
    assert remove_distinct("SELECT DISTINCT a FROM t") == "SELECT  a FROM t"
    assert remove_distinct("SELECT count(DISTINCT a) FROM t") == "SELECT count( a) FROM t"
    assert remove_distinct("SELECT a FROM t WHERE b = 'distinct'") == "SELECT a FROM t WHERE b = 'distinct'"


# --- parity on the real Spider sample -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def executor():
    with SQLExecutor(workers=2, timeout=10.0) as ex:
        yield ex


def _db(db_id: str) -> Path:
    return SPIDER / "database" / db_id / f"{db_id}.sqlite"


@pytest.mark.skipif(not (SPIDER / "dev.json").exists(), reason="Spider sample not found")
def test_gold_against_itself_scores_100_percent(executor: SQLExecutor) -> None:
    examples = json.loads((SPIDER / "dev.json").read_text())
    jobs = [(_db(e["db_id"]), e["query"]) for e in examples]
    first, second = executor.execute_many(jobs), executor.execute_many(jobs)
    failed = [(e["query"], r.error) for e, r in zip(examples, first, strict=True) if not r.ok]
    assert failed == []
    matches = [results_match(e["query"], a.rows, b.rows) for e, a, b in zip(examples, first, second, strict=True)]
    assert sum(matches) == len(examples) == 259
    assert all(
        results_match(e["query"], a.rows, b.rows, metric="bird")
        for e, a, b in zip(examples, first, second, strict=True)
    )


WRONG = [
    # (gold, prediction): each prediction is wrong on concert_singer
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer WHERE Age > 30"),
    ("SELECT Name FROM singer ORDER BY Age DESC", "SELECT Name FROM singer ORDER BY Age ASC"),
    ("SELECT Name, Age FROM singer WHERE Age > 30", "SELECT Name, Age FROM singer WHERE Age > 40"),
    ("SELECT DISTINCT Country FROM singer", "SELECT Country FROM singer"),
    ("SELECT Name FROM singer WHERE Country = 'France'", "SELECT Name FROM singer WHERE Country = 'france'"),
    ("SELECT avg(Age) FROM singer", "SELECT max(Age) FROM singer"),
    ("SELECT Name, Country FROM singer", "SELECT Name, Song_Name FROM singer"),
    ("SELECT Name FROM singer", "SELECT Nme FROM singer"),  # does not execute
]


@pytest.mark.skipif(not _db("concert_singer").exists(), reason="Spider sample not found")
@pytest.mark.parametrize(("gold", "pred"), WRONG)
def test_wrong_predictions_do_not_match(executor: SQLExecutor, gold: str, pred: str) -> None:
    db = _db("concert_singer")
    g, p = executor.execute(db, gold), executor.execute(db, pred)
    assert g.ok and g.rows
    assert not (p.ok and results_match(gold, g.rows, p.rows))


@pytest.mark.skipif(not _db("concert_singer").exists(), reason="Spider sample not found")
def test_equivalent_predictions_match(executor: SQLExecutor) -> None:
    db = _db("concert_singer")
    gold = "SELECT Name, Age FROM singer WHERE Age > 30"
    g = executor.execute(db, gold)
    for pred in (
        "SELECT Age, Name FROM singer WHERE Age > 30",  # columns permuted
        "SELECT Name, Age FROM singer WHERE NOT Age <= 30 ORDER BY Name",  # gold has no ORDER BY
        "SELECT T1.Name, T1.Age FROM singer AS T1 WHERE T1.Age > 30",
    ):
        p = executor.execute(db, pred)
        assert p.ok and results_match(gold, g.rows, p.rows), pred
