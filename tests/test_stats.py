"""nl2sql_align.stats: pass@k, McNemar's exact test, bootstrap intervals; and pass@k in an eval's summary."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from nl2sql_align import stats

# ---------------------------------------------------------------------------------------------------------
# pass@k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (8, 2, 2, 1 - 15 / 28),  # 1 - C(6,2)/C(8,2)
        (4, 1, 1, 0.25),  # pass@1 is c/n
        (10, 3, 1, 0.3),
        (4, 1, 4, 1.0),  # k = n: right when any sample is
        (4, 0, 4, 0.0),
        (3, 0, 1, 0.0),  # all wrong
        (3, 0, 2, 0.0),
        (3, 3, 1, 1.0),  # all right
        (3, 3, 3, 1.0),
        (6, 4, 3, 1.0),  # n - c < k: every draw of 3 holds a correct one
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert stats.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_definition():
    # The product form against 1 - C(n-c, k) / C(n, k) in exact integers.
    for n in range(1, 17):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert stats.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_many_samples():
    # C(1000, 500) overflows a float; the product form does not need it.
    assert stats.pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert 0.0 < stats.pass_at_k(1000, 1, 1) < stats.pass_at_k(1000, 1, 10) < 1.0


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in ((4, 5, 1), (4, -1, 1), (4, 1, 5), (4, 1, 0)):
        with pytest.raises(ValueError):
            stats.pass_at_k(n, c, k)


def test_pass_k_values_are_powers_of_two_and_n():
    assert stats.pass_k_values(1) == [1]
    assert stats.pass_k_values(2) == [1, 2]
    assert stats.pass_k_values(6) == [1, 2, 4, 6]
    assert stats.pass_k_values(8) == [1, 2, 4, 8]
    assert stats.pass_k_values(10) == [1, 2, 4, 8, 10]
    assert stats.pass_k_values(0) == []


def test_mean_pass_at_k_averages_over_questions():
    counts = [(4, 1), (4, 0), (4, 4), (4, 2)]
    # k=2: 0.5, 0, 1, 1 - C(2,2)/C(4,2) = 5/6
    assert stats.mean_pass_at_k(counts, 2) == pytest.approx((0.5 + 0 + 1 + 5 / 6) / 4)
    assert stats.mean_pass_at_k(counts, 1) == pytest.approx((1 + 0 + 4 + 2) / 16)
    assert stats.mean_pass_at_k([], 1) == 0.0


# ---------------------------------------------------------------------------------------------------------
# McNemar


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),
        (1, 1, 1.0),
        (0, 2, 0.5),  # 2 * (1/4)
        (2, 0, 0.5),
        (0, 5, 2 / 32),
        (1, 5, 2 * (1 + 6) / 64),
        (3, 3, 1.0),
        (30, 0, 2 / 2**30),
    ],
)
def test_mcnemar_exact_hand_values(b, c, expected):
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_matches_scipy_binomtest():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b in range(0, 25):
        for c in range(0, 25):
            if b + c == 0:
                continue
            ref = scipy_stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
            assert stats.mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9, abs=1e-15), (b, c)
    # Large counts: no overflow, still a probability.
    assert 0.0 < stats.mcnemar_exact(600, 540) < 1.0
    ref = scipy_stats.binomtest(600, 1140, 0.5).pvalue
    assert stats.mcnemar_exact(600, 540) == pytest.approx(ref, rel=1e-9)


def test_discordant_counts():
    base = [True, True, False, False, True]
    other = [True, False, True, True, False]
    assert stats.discordant(base, other) == (2, 2)
    assert stats.discordant(base, base) == (0, 0)
    with pytest.raises(ValueError):
        stats.discordant([True], [True, False])


# ---------------------------------------------------------------------------------------------------------
# Bootstrap intervals: checked by properties, not against the same resampling done again


def _vector(n: int, rate: float, seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < rate for _ in range(n)]


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (40, 400, 4000):
        v = _vector(n, 0.6, seed=n)
        lo, hi = stats.bootstrap_ci(v)
        ex = stats.accuracy(v)
        assert 0.0 <= lo <= ex <= hi <= 100.0
        widths.append(hi - lo)
        # Near the normal approximation's width, 2 * 1.96 * sd, for a mean of 0/1 values.
        p = ex / 100
        normal = 2 * 1.96 * 100 * math.sqrt(p * (1 - p) / n)
        assert widths[-1] == pytest.approx(normal, rel=0.08), n  # a 90% interval would be 16% narrower
    assert widths[0] > widths[1] > widths[2]


def test_bootstrap_is_deterministic_and_degenerate_when_constant():
    v = _vector(150, 0.5, seed=1)
    assert stats.bootstrap_ci(v) == stats.bootstrap_ci(v)
    assert stats.bootstrap_ci([True] * 50) == (100.0, 100.0)
    assert stats.bootstrap_ci([False] * 50) == (0.0, 0.0)
    assert stats.bootstrap_ci([]) == (0.0, 0.0)


def test_bootstrap_interval_covers_the_true_rate_about_95_percent_of_the_time():
    true = 0.6
    hits = 0
    trials = 400
    for t in range(trials):
        lo, hi = stats.bootstrap_ci(_vector(100, true, seed=1000 + t), resamples=500)
        hits += lo <= 100 * true <= hi
    assert 0.92 <= hits / trials <= 0.98, hits  # a 90% or 99% interval falls outside


def test_paired_interval_of_identical_runs_is_zero():
    v = _vector(150, 0.55, seed=3)
    assert stats.paired_bootstrap_ci(v, list(v)) == (0.0, 0.0)
    cmp = stats.paired_comparison(v, list(v))
    assert cmp["diff"] == 0.0 and cmp["diff_ci"] == [0.0, 0.0] and cmp["p"] == 1.0
    assert cmp["verdict"] == stats.NO_DIFFERENCE


def test_paired_interval_contains_the_difference_and_is_narrower_than_unpaired():
    base = _vector(200, 0.5, seed=4)
    other = list(base)
    for i in range(0, 40, 2):  # 20 questions flipped to right where the baseline was wrong
        j = [k for k, x in enumerate(base) if not x][i // 2]
        other[j] = True
    diff = stats.accuracy(other) - stats.accuracy(base)
    assert diff == pytest.approx(10.0)
    lo, hi = stats.paired_bootstrap_ci(base, other)
    assert lo <= diff <= hi and lo >= 0.0  # every resample has at least as many right
    # Unpaired, the two intervals' half-widths would add up; pairing removes the shared questions' noise.
    a_lo, a_hi = stats.bootstrap_ci(base)
    b_lo, b_hi = stats.bootstrap_ci(other)
    assert hi - lo < ((a_hi - a_lo) + (b_hi - b_lo)) / 2


# ---------------------------------------------------------------------------------------------------------
# The word


def _with_flips(n: int, wins: int, losses: int) -> tuple[list[bool], list[bool]]:
    """A baseline right on half the questions, and a run that differs on `wins` + `losses` of them."""
    base = [i % 2 == 0 for i in range(n)]
    other = list(base)
    wrong = [i for i, x in enumerate(base) if not x]
    right = [i for i, x in enumerate(base) if x]
    for i in wrong[:wins]:
        other[i] = True
    for i in right[:losses]:
        other[i] = False
    return base, other


def test_two_questions_of_150_is_no_detectable_difference():
    for wins, losses in ((2, 0), (0, 2), (1, 1)):
        base, other = _with_flips(150, wins, losses)
        cmp = stats.paired_comparison(base, other)
        assert (cmp["wins"], cmp["losses"]) == (wins, losses)
        assert cmp["verdict"] == "no detectable difference", cmp
    base, other = _with_flips(150, 2, 0)
    assert stats.paired_comparison(base, other)["diff"] == pytest.approx(100 * 2 / 150)


def test_thirty_discordant_questions_in_its_favour_is_better_and_against_it_worse():
    base, other = _with_flips(150, 30, 0)
    cmp = stats.paired_comparison(base, other)
    assert cmp["verdict"] == "better" and cmp["p"] < 1e-6 and cmp["diff"] == pytest.approx(20.0)
    assert cmp["diff_ci"][0] > 0
    cmp = stats.paired_comparison(other, base)
    assert cmp["verdict"] == "worse" and cmp["diff"] == pytest.approx(-20.0) and cmp["diff_ci"][1] < 0


def test_difference_word_needs_both_the_test_and_the_sign():
    assert stats.difference_word(5.0, 0.01) == "better"
    assert stats.difference_word(-5.0, 0.01) == "worse"
    assert stats.difference_word(5.0, 0.05) == "no detectable difference"
    assert stats.difference_word(0.0, 0.01) == "no detectable difference"


# ---------------------------------------------------------------------------------------------------------
# pass@k in an eval's summary, from executed candidates (the verdicts are the scorer's own)


def test_eval_summary_reports_pass_at_k_from_sampled_candidates(tmp_path: Path, spider_db: Path):
    from nl2sql_align.data import load_examples
    from nl2sql_align.evaluate import score_predictions, summarize, write_report
    from nl2sql_align.sql import SQLExecutor

    data = tmp_path / "d.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"question": q, "sql": sql, "db": str(spider_db)})
            for q, sql in (
                ("how many singers", "SELECT count(*) FROM singer"),
                ("stadiums", "SELECT count(*) FROM stadium"),
            )
        )
        + "\n"
    )
    examples = load_examples(str(data))
    singers, stadiums, bad = "SELECT count(*) FROM singer", "SELECT count(*) FROM stadium", "SELECT nope FROM singer"
    cands = [
        [bad, stadiums, singers, "SELECT count(singer_id) FROM singer", singers],  # 3 of 5 right
        [singers, singers, bad, singers, stadiums],  # 1 of 5 right
    ]
    with SQLExecutor(workers=1, timeout=5.0) as ex:
        rows = score_predictions(examples, [stadiums, stadiums], executor=ex, candidates=cands)
    summary = summarize(rows, "spider")
    assert [r["samples_correct"] for r in rows] == [3, 1]
    # k = 1, 2, 4 and n = 5. Question 1 (c=3): 3/5, 1 - C(2,2)/C(5,2) = 9/10, 1, 1.
    # Question 2 (c=1): 1/5, 1 - C(4,2)/C(5,2) = 2/5, 1 - C(4,4)/C(5,4) = 4/5, 1.
    expected = {"1": 40.0, "2": 65.0, "4": 90.0, "5": 100.0}
    assert summary["pass_at_k"] == expected
    assert summary["ex"] == 50.0  # greedy: stadiums is right on question 2 only
    assert summary["ex_voted"] == 50.0  # maj@5: singers on 1 (3 votes), singers on 2 (3 votes: wrong)
    level_keys = [g["pass_at_k"] for g in summary["ex_by_hardness"].values()]
    assert level_keys and all(set(g) == set(expected) for g in level_keys)
    summary.update(samples=5, temperature=1.0)
    write_report(rows, summary, tmp_path / "report")
    written = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert written["pass_at_k"] == expected
    per_example = [json.loads(line) for line in (tmp_path / "report" / "per_example.jsonl").read_text().splitlines()]
    assert [r["samples_correct"] for r in per_example] == [3, 1]
    assert (tmp_path / "report" / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_greedy_only_eval_has_no_pass_at_k(tmp_path: Path):
    from nl2sql_align.evaluate import summarize, write_report

    rows = [{"index": 0, "id": "0", "gold": "SELECT 1", "correct": True, "executable": True, "hardness": "easy"}]
    summary = summarize(rows, "spider")
    assert "pass_at_k" not in summary and "samples_correct" not in rows[0]
    write_report(rows, summary, tmp_path)
    assert not (tmp_path / "pass_at_k.png").exists()
