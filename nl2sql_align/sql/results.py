"""Result comparison with the official Spider and BIRD semantics, cell normalisation, and the one verdict.

Normalise first, compare second: DuckDB returns Decimal, LIST and STRUCT values, `Decimal('0.1') != 0.1`
and NaN never equals NaN in a set (docs/DESIGN.md, "Executing untrusted SQL"), so every result that leaves a
worker goes through `normalize_rows`, and the comparison functions then follow the official code exactly.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from itertools import product
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # backends imports normalize_rows from here
    from nl2sql_align.sql.backends import Database, ExecResult

Row = tuple

# The metrics eval, compare and the reward engine accept. "bird-f1" judges EX as "bird" does (set equality) and
# adds BIRD mini-dev's Soft-F1 of each prediction (`soft_f1`) beside it.
METRICS = ("spider", "bird", "bird-f1")


def check_metric(metric: str) -> str:
    """`metric` when it is one of METRICS, else a ValueError naming them."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    return metric


def _normalize_cell(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else value
    if isinstance(value, (list, tuple)):
        return tuple(_normalize_cell(v) for v in value)
    if isinstance(value, dict):
        items = [(k, _normalize_cell(v)) for k, v in value.items()]
        try:
            return tuple(sorted(items))
        except TypeError:  # keys of mixed, unorderable types (a DuckDB MAP)
            return tuple(sorted(items, key=lambda kv: (str(type(kv[0])), str(kv[0]))))
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def normalize_rows(rows: Iterable[Sequence[Any]]) -> list[Row]:
    """Make every row a hashable tuple whose cells compare the way a reader expects.

    Decimal -> float; LIST/ARRAY values -> tuple; STRUCT/MAP (dict) -> tuple of sorted (key, value) items;
    NaN -> the string "NaN" (so that NaN equals NaN in a set); bytes kept; everything else as is.
    """
    return [tuple(_normalize_cell(v) for v in row) for row in rows]


# --- Spider: test-suite-sql-eval, exec_eval.py -------------------------------------------------------------


def _unorder_row(row: Row) -> Row:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def _quick_rej(result1: list[Row], result2: list[Row], order_matters: bool) -> bool:
    # Same bag of unordered rows is a necessary condition for equivalence ("quick rejection").
    s1 = [_unorder_row(row) for row in result1]
    s2 = [_unorder_row(row) for row in result2]
    if order_matters:
        return s1 == s2
    return set(s1) == set(s2)


def _constraint_permutations(tab1_sets_by_columns: list[set], result2: list[Row], rng: random.Random):
    num_cols = len(result2[0])
    perm_constraints = [set(range(num_cols)) for _ in range(num_cols)]
    if num_cols <= 3:
        return product(*perm_constraints)
    # As the official code: sample 20 rows of the prediction and drop column pairings they contradict.
    # The official code uses the global `random`; a seeded generator keeps scores reproducible.
    for _ in range(20):
        random_tab2_row = rng.choice(result2)
        for tab1_col in range(num_cols):
            for tab2_col in set(perm_constraints[tab1_col]):
                if random_tab2_row[tab2_col] not in tab1_sets_by_columns[tab1_col]:
                    perm_constraints[tab1_col].remove(tab2_col)
    return product(*perm_constraints)


def spider_exec_match(gold_rows: Sequence[Row], pred_rows: Sequence[Row], order_matters: bool) -> bool:
    """Spider execution match: the official test-suite-sql-eval `result_eq` (exec_eval.py), step by step.

    https://github.com/taoyds/test-suite-sql-eval/blob/master/exec_eval.py
    Two empty results are equal; row counts and column counts must match; a quick rejection compares rows
    with their cells sorted (as lists when order matters, else as sets); then some permutation of the
    prediction's columns must make it equal to the gold: as lists when order matters, else as sets and as
    multisets (duplicates count). Only difference: a seeded `random.Random(0)` replaces the global `random`
    that the official code samples rows with when there are more than 3 columns.
    """
    result1, result2 = list(gold_rows), list(pred_rows)
    if len(result1) == 0 and len(result2) == 0:
        return True
    if len(result1) != len(result2):
        return False
    num_cols = len(result1[0])
    if len(result2[0]) != num_cols:
        return False
    if not _quick_rej(result1, result2, order_matters):
        return False
    tab1_sets_by_columns = [{row[i] for row in result1} for i in range(num_cols)]
    for perm in _constraint_permutations(tab1_sets_by_columns, result2, random.Random(0)):
        if len(perm) != len(set(perm)):
            continue
        if num_cols == 1:
            result2_perm = result2
        else:
            result2_perm = [tuple(row[i] for i in perm) for row in result2]
        if order_matters:
            if result1 == result2_perm:
                return True
        elif set(result1) == set(result2_perm) and Counter(result1) == Counter(result2_perm):
            return True
    return False


# --- BIRD: evaluation.py -----------------------------------------------------------------------------------


def bird_exec_match(gold_rows: Iterable[Row], pred_rows: Iterable[Row]) -> bool:
    """BIRD execution match, exactly `set(predicted_res) == set(ground_truth_res)` (BIRD evaluation.py):
    row order and duplicates are ignored, column order matters."""
    return set(pred_rows) == set(gold_rows)


def results_match(gold_sql: str, gold_rows, pred_rows, metric: str = "spider") -> bool:
    """Compare a prediction's rows with the gold rows under `metric` ("spider", or "bird" and "bird-f1": sets).

    Rows are normalised first (a no-op for rows that came from `SQLExecutor`). Under "spider", order
    matters only if the gold SQL has ORDER BY, as in the official `eval_exec_match`. A missing result (None:
    the query failed) never matches.
    """
    check_metric(metric)
    if gold_rows is None or pred_rows is None:
        return False
    gold, pred = normalize_rows(gold_rows), normalize_rows(pred_rows)
    if metric != "spider":
        return bird_exec_match(gold, pred)
    return spider_exec_match(gold, pred, order_matters="order by" in gold_sql.lower())


_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", flags=re.IGNORECASE)


def as_scored(sql: str, keep_distinct: bool = False, metric: str = "spider", dialect: str | None = None) -> str:
    """The query as the metric executes it, gold or predicted. BIRD runs both as written. The Spider
    test-suite (`exec_eval.eval_exec_match` and `exec_on_db`) first joins the comparison operators a tokenizer
    split ('> =' -> '>=', '< =' -> '<=', '! =' -> '!=', plain text replacement, as the official `postprocess`),
    replaces MySQL's `YEAR(CURDATE())` by 2020 (`replace_cur_year`), and removes DISTINCT unless keep_distinct.
    `dialect` is the dialect `sql` is written in (for tokenising; None: sqlglot's default)."""
    from nl2sql_align.sql.guard import remove_distinct

    if metric != "spider":
        return sql
    sql = sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    sql = _CUR_YEAR.sub("2020", sql)
    return sql if keep_distinct else remove_distinct(sql, dialect)


# --- The one verdict -----------------------------------------------------------------------------------------


def verdict(gold: ExecResult, pred: ExecResult, gold_sql: str, metric: str = "spider") -> bool:
    """Is `pred` correct? The single definition used by eval, self-consistency, compare, the reward engine
    (GRPO, PPO, RLOO), `pairs` and the gold audit, so that what training rewards is what evaluation counts.

    Both queries must have run. Results stop at the executor's row cap: under Spider semantics row counts must
    be equal, so a result cut at the cap (it had more rows than the cap) never equals one that was not; two
    cut results, and BIRD's sets, are compared on the rows fetched (README, "Evaluation"). Under "bird-f1" the
    verdict is BIRD's; its partial credit is `soft_f1`."""
    if not (gold.ok and pred.ok):
        return False
    if metric == "spider" and gold.truncated != pred.truncated:
        return False
    # Equal row lists match under both semantics; the full comparison only when they differ.
    return pred.rows == gold.rows or results_match(gold_sql, gold.rows, pred.rows, metric)


def soft_f1(gold: ExecResult, pred: ExecResult) -> float:
    """BIRD mini-dev's Soft-F1 of `pred` against `gold` (`bird_soft_f1` of their normalised rows), 0.0 when either
    query did not run. The single definition behind eval's `--metric bird-f1` (per example, and its mean) and the
    `soft_f1` reward component, as `verdict` is for EX. Results cut at the row cap are scored on the rows fetched."""
    if not (gold.ok and pred.ok):
        return 0.0
    if pred.rows == gold.rows:  # the same rows pair up the same way: every pair matches whole
        return 1.0
    return float(bird_soft_f1(normalize_rows(gold.rows or []), normalize_rows(pred.rows or [])))


class QueryRewriter:
    """Builds the executor job for a gold or predicted query as the metric runs it (`as_scored`), each
    distinct (SQL, dialect) rewritten once for the object's lifetime: golds repeat once per prediction,
    predictions repeat, and the Spider rewrite tokenizes the query. The one place eval and the reward engine
    turn a query into what executes."""

    def __init__(self, keep_distinct: bool = False, metric: str = "spider") -> None:
        self.keep_distinct, self.metric = keep_distinct, check_metric(metric)
        self._done: dict[tuple[str, str | None], str] = {}

    def scored(self, sql: str, dialect: str | None) -> str:
        key = (sql, dialect)
        if key not in self._done:
            self._done[key] = as_scored(sql, self.keep_distinct, self.metric, dialect)
        return self._done[key]

    def job(self, db: Database, sql: str, dialect: str | None = None) -> tuple[Database, str, str | None]:
        """(db, SQL as scored, dialect): `dialect` is what `sql` is written in (None: the database's own)."""
        return db, self.scored(sql, dialect or db.dialect), dialect or None


# --- BIRD mini-dev: Soft-F1 (evaluation_f1.py) and R-VES (evaluation_ves.py) ---------------------------------
# bird-bench/mini_dev, evaluation/evaluation_f1.py at 47f116d and evaluation_ves.py at f9d2750, ported: the
# scores here are the official per-example scores for the same result rows and timings.


def _row_match(pred_row: Row, gold_row: Row) -> tuple[float, float, float]:
    # calculate_row_match: membership of cell values, as fractions of the gold row's width.
    width = len(gold_row)
    matches = sum(1 for v in pred_row if v in gold_row)
    pred_only = len(pred_row) - matches
    gold_only = sum(1 for v in gold_row if v not in pred_row)
    return matches / width, pred_only / width, gold_only / width


def bird_soft_f1(gold_rows: Sequence[Row], pred_rows: Sequence[Row]) -> float:
    """BIRD mini-dev's Soft-F1 of one prediction (`calculate_f1_score(predicted, ground_truth)`): rows
    de-duplicated through a set, then paired by position (the i-th row of each list), each pair scored by
    cell-value membership; surplus rows count wholly as false positives or negatives. Two empty results score 1.

    Like the official code, the pairing follows the iteration order of `list(set(rows))`, which for rows of
    strings depends on the interpreter's hash seed (PYTHONHASHSEED): the official score can differ between
    runs on such results, and ours agrees with it within one seed."""
    if not pred_rows and not gold_rows:
        return 1.0
    pred = list(set(pred_rows)) if pred_rows else []
    gold = list(set(gold_rows))
    tp = fp = fn = 0.0
    for i, gold_row in enumerate(gold):
        if i >= len(pred):
            fn += 1
            continue
        m, p, g = _row_match(pred[i], gold_row)
        tp, fp, fn = tp + m, fp + p, fn + g
    fp += max(0, len(pred) - len(gold))
    precision = tp / (tp + fp) if tp + fp > 0 else 0
    recall = tp / (tp + fn) if tp + fn > 0 else 0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0


def _clean_abnormal(values: Sequence[float]) -> list[float]:
    # clean_abnormal: drop values 3 population standard deviations or more from the mean.
    mean = sum(values) / len(values)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
    return [x for x in values if mean - 3 * std < x < mean + 3 * std]


def ves_reward(time_ratios: Sequence[float]) -> float:
    """BIRD mini-dev's R-VES reward of one prediction (`iterated_execute_sql`), given gold_time / pred_time of
    each repetition, for a prediction whose result matches the gold's (pass [] for one that does not: 0).
    The mean ratio after dropping outliers, bucketed: >= 2 -> 1.25, [1, 2) -> 1, [0.5, 1) -> 0.75,
    [0.25, 0.5) -> 0.5, else 0.25 (and 0 when the mean ratio is 0)."""
    if not time_ratios:
        return 0.0
    kept = _clean_abnormal(time_ratios)
    # All repetitions equal: std 0, the official filter keeps nothing and divides by zero (the example then
    # scores 0 there, as an exception); a constant ratio is kept here.
    ratio = sum(kept) / len(kept) if kept else time_ratios[0]
    if ratio == 0:
        return 0.0
    if ratio >= 2:
        return 1.25
    if ratio >= 1:
        return 1.0
    if ratio >= 0.5:
        return 0.75
    if ratio >= 0.25:
        return 0.5
    return 0.25


def r_ves(rewards: Sequence[float]) -> float:
    """R-VES over examples (`compute_ves`): the mean of sqrt(reward) x 100."""
    return sum(math.sqrt(r) * 100 for r in rewards) / len(rewards) if rewards else 0.0
