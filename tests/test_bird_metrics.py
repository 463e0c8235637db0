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
