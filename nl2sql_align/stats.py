"""Statistics for eval and compare: pass@k from sampled answers, bootstrap intervals over questions, McNemar's
exact test on paired per-question verdicts. Pure functions over counts and 0/1 vectors (numpy, no torch).

- pass@k (Chen et al. 2021, unbiased): with n samples of which c are correct,
  pass@k = 1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no huge binomials).
- Intervals: percentile bootstrap over questions with a fixed seed, so a report is reproducible.
- Two models on the same questions: the difference in EX points with a paired bootstrap interval (the same
  resampled questions for both), and McNemar's exact test on the discordant pairs (b questions only the other
  model gets right, c only the baseline): a two-sided binomial test of b against Binomial(b + c, 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ALPHA = 0.05

# The word a comparison ends in: a difference is "better"/"worse" only when McNemar's p is below ALPHA.
BETTER, WORSE, NO_DIFFERENCE, BASELINE = "better", "worse", "no detectable difference", "baseline"


# ---------------------------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of the chance that at least one of k samples (drawn without replacement from the n
    taken) is correct, given c of the n are: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"c = {c} correct of n = {n} samples: need 0 <= c <= n")
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} with n = {n} samples: need 1 <= k <= n")
    if n - c < k:  # every draw of k includes a correct one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_k_values(n: int) -> list[int]:
    """The k a report shows for n samples: 1, 2, 4, ... up to n, and n itself."""
    if n < 1:
        return []
    ks = [2**j for j in range(n.bit_length())]  # the powers of two up to n
    return ks if ks[-1] == n else [*ks, n]


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k averaged over questions, each given as (n samples, c correct); 0.0 for no questions."""
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) if counts else 0.0


# ---------------------------------------------------------------------------------------------------------
# McNemar's exact test


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c:
    min(1, 2 * sum_{i <= min(b, c)} C(b + c, i) / 2^(b + c)); 1.0 when there are none."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    # Exact integer arithmetic, then one division: no underflow for large n.
    return min(1.0, 2 * tail / 2**n)


def discordant(base: Sequence[bool], other: Sequence[bool]) -> tuple[int, int]:
    """(b, c): questions only `other` gets right, and questions only `base` gets right."""
    _check_paired(base, other)
    b = sum(1 for x, y in zip(base, other, strict=True) if y and not x)
    c = sum(1 for x, y in zip(base, other, strict=True) if x and not y)
    return b, c


# ---------------------------------------------------------------------------------------------------------
# Bootstrap intervals


def _resampled_means(vectors: Sequence[np.ndarray], resamples: int, seed: int, chunk: int = 250) -> list[np.ndarray]:
    """For each vector, its mean over `resamples` resamples of the question indices (the same indices for all
    vectors: a paired bootstrap)."""
    n = len(vectors[0])
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in vectors]
    done = 0
    while done < resamples:
        m = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        for acc, v in zip(out, vectors, strict=True):
            acc.append(v[idx].mean(axis=1))
        done += m
    return [np.concatenate(acc) for acc in out]


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    correct: Sequence[bool],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (in percent) over questions; (0, 0) for no questions."""
    v = np.asarray(correct, dtype=float)
    if v.size == 0:
        return 0.0, 0.0
    (means,) = _resampled_means([v], resamples, seed)
    lo, hi = _interval(100.0 * means, level)
    return lo, hi


def paired_bootstrap_ci(
    base: Sequence[bool],
    other: Sequence[bool],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(other) - accuracy(base) in percentage points, resampling
    questions (the same questions for both)."""
    _check_paired(base, other)
    if len(base) == 0:
        return 0.0, 0.0
    a, b = (np.asarray(x, dtype=float) for x in (base, other))
    mean_a, mean_b = _resampled_means([a, b], resamples, seed)
    return _interval(100.0 * (mean_b - mean_a), level)


def _check_paired(base: Sequence[bool], other: Sequence[bool]) -> None:
    if len(base) != len(other):
        raise ValueError(f"paired vectors differ in length ({len(base)} and {len(other)}): not the same questions")


# ---------------------------------------------------------------------------------------------------------
# A run against a baseline


def difference_word(diff: float, p: float, alpha: float = ALPHA) -> str:
    """ "better" / "worse" when McNemar's p is below alpha (the sign of the EX difference says which), else
    "no detectable difference"."""
    if p < alpha and diff > 0:
        return BETTER
    if p < alpha and diff < 0:
        return WORSE
    return NO_DIFFERENCE


def accuracy(correct: Sequence[bool]) -> float:
    """Percent correct; 0.0 for no questions."""
    return 100.0 * sum(bool(x) for x in correct) / len(correct) if len(correct) else 0.0


def paired_comparison(
    base: Sequence[bool],
    other: Sequence[bool],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    alpha: float = ALPHA,
) -> dict[str, object]:
    """`other` against `base` on the same questions: diff (EX points), diff_ci (paired bootstrap, 95%),
    wins / losses (the discordant questions only other / only base gets right), p (exact McNemar) and the
    word (`difference_word`)."""
    diff = accuracy(other) - accuracy(base)
    wins, losses = discordant(base, other)
    p = mcnemar_exact(wins, losses)
    lo, hi = paired_bootstrap_ci(base, other, resamples=resamples, seed=seed)
    return {
        "diff": diff,
        "diff_ci": [lo, hi],
        "wins": wins,
        "losses": losses,
        "p": p,
        "verdict": difference_word(diff, p, alpha),
    }
