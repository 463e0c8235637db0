"""The reward engine: judges a batch of completions by executing their SQL, once, for every reward component.

A GRPO step hands batch x num_generations completions to each reward function in turn (TRL calls them one
after another with the same lists). The engine makes that cheap:

- one persistent, sandboxed `SQLExecutor` pool (sql/sandbox.py) for the whole run, sized to the machine and
  the number of training processes, each worker keeping its database connections open;
- gold results executed once per (database, gold SQL) and cached for the run, in the same pool batch as the
  predictions (a BIRD-scale gold takes seconds; run alone first it would leave the other workers idle);
- within a batch, each distinct (database, SQL) is executed once: the G samples of one prompt often agree;
- the verdicts of the last batch are kept, so the second, third ... component of a step costs a lookup;
- with a `soft_f1` component, each verdict also carries the Soft-F1 of its rows (sql/results.py `soft_f1`, the
  definition eval's `--metric bird-f1` uses), from the same executions; with a `ves` component, its
  `time_ratio` (gold seconds / prediction seconds, one timing each; a new gold is run once more first, so that
  its kept time is a warm one).

A query that hangs or crashes its worker costs its own reward (a timeout/crash verdict), never the step.
Nothing here imports torch.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nl2sql_align.data.prompts import extract_sql, has_sql_block
from nl2sql_align.sql import Database, ExecResult, QueryRewriter, SQLExecutor, verdict
from nl2sql_align.sql.results import check_metric, soft_f1

# Cached gold results. A Spider/BIRD training set has ~10k distinct (database, gold SQL) pairs; results are
# capped at row_cap rows each, so this bounds memory while keeping a whole epoch's gold results.
GOLD_CACHE_SIZE = 20_000

# Guard messages that mean "this does not parse" (a syntax failure), as opposed to "this is not one read-only
# query" (refused: hostile or non-read SQL). See sql/guard.py check_read_only.
_NOT_PARSED = ("refused: could not parse", "refused: empty query", "transpile:")
# sqlglot parses some junk ("(*) FROM x", "gy") as a generic command; the guard refuses it as "found (*)".
# Only a statement that starts with one of these words is non-read SQL; any other "found X" is junk.
_STATEMENT_WORDS = frozenset(
    """INSERT UPDATE DELETE MERGE UPSERT REPLACE CREATE DROP ALTER TRUNCATE TRUNCATETABLE COPY ATTACH DETACH
    PRAGMA SET RESET USE INSTALL LOAD EXPORT IMPORT CALL VACUUM CHECKPOINT SAVEPOINT BEGIN COMMIT ROLLBACK
    TRANSACTION GRANT REVOKE ANALYZE DESCRIBE SHOW SUMMARIZE REINDEX EXECUTE KILL COMMENT DECLARE LOCK INTO
    VALUES PIVOT UNPIVOT COMMAND CACHE UNCACHE REFRESH LOADDATA""".split()
)


def refusal_kind(error: str | None) -> str | None:
    """'refused' (non-read or hostile SQL), 'syntax' (does not parse), or None (not a guard refusal)."""
    if error is None or not error.startswith(("refused:", "transpile:")):
        return None
    if error.startswith(_NOT_PARSED):
        return "syntax"
    marker = "only SELECT queries may run (found "
    if marker in error:
        found = error.split(marker, 1)[1].rstrip(")").upper()
        return "refused" if found in _STATEMENT_WORDS else "syntax"
    return "refused"  # several statements, file access, denied functions, too long


def completion_text(completion) -> str:
    """TRL passes completions as text (standard datasets) or as a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict) and m.get("role") == "assistant")
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return str(completion)


@dataclass(frozen=True)
class Verdict:
    """What the engine found out about one completion."""

    text: str  # the completion as text
    sql: str  # the SQL extracted from the completion
    has_block: bool  # the answer is in a closed ```sql block
    parsed: bool  # sqlglot parses it as exactly one read-only query
    refused: bool  # it parses but is not a read-only query (DML/DDL, file access, several statements)
    executed: bool  # it ran without error within the timeout
    correct: bool  # its result matches the gold result under the metric
    gold_ok: bool  # the gold SQL itself ran (if not, the example cannot be scored)
    error: str | None = None
    timed_out: bool = False
    soft_f1: float = 0.0  # BIRD mini-dev's Soft-F1 against the gold rows (0 unless it ran; engine.soft_f1 asks)
    # gold seconds / prediction seconds, one execution each (None unless both ran and engine.time_ratio asks)
    time_ratio: float | None = None

    def passed(self, check: str) -> bool:
        return {
            "format": self.has_block,
            "syntax": self.parsed,
            "executable": self.executed,
            "execution": self.correct,
        }[check]

    @property
    def label(self) -> str:
        if self.correct:
            return "correct"
        if self.executed:
            return "wrong result"
        return self.error or "failed"


def _time_ratio(gold: ExecResult, pred: ExecResult) -> float | None:
    # R-VES's ratio from the one execution each that scoring made: the gold's cached run (a warm one: see
    # `_golds_and`) and the prediction's run in its batch. The floor keeps a sub-0.1 ms query's ratio finite.
    if not (gold.ok and pred.ok):
        return None
    return max(gold.elapsed, 1e-4) / max(pred.elapsed, 1e-4)


def default_workers(num_processes: int | None = None) -> int:
    """SQL workers per training process: the cores shared out among the processes, at least 1, at most 8.

    Generation and the backward pass keep the GPU (or, on CPU, the cores) busy while rewards are scored
    between them, so one worker per core is enough; N training processes on one machine each get 1/N."""
    if num_processes is None:
        num_processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")) or 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, num_processes)))


class RewardEngine:
    """Judge completions against gold SQL by execution; shared by every reward component of a run."""

    def __init__(
        self,
        *,
        metric: str = "spider",
        keep_distinct: bool = False,
        timeout: float = 5.0,
        workers: int | None = None,
        row_cap: int = 10_000,
        memory_mb: int | None = 2048,
        executor: SQLExecutor | None = None,
        soft_f1: bool = False,
        time_ratio: bool = False,
    ) -> None:
        self.metric = check_metric(metric)
        # Score each verdict's Soft-F1 too (a soft_f1 reward component switches it on: `want_soft_f1`).
        self.soft_f1 = soft_f1
        # Give each verdict gold seconds / prediction seconds (a ves reward component switches it on).
        self.time_ratio = time_ratio
        self.keep_distinct = keep_distinct
        self.rewriter = QueryRewriter(keep_distinct, metric)  # the same jobs eval builds
        self._own_executor = executor is None
        self.executor = executor or SQLExecutor(
            workers=workers or default_workers(), timeout=timeout, row_cap=row_cap, memory_mb=memory_mb
        )
        self._gold: OrderedDict[tuple, ExecResult] = OrderedDict()
        self._last_key: tuple | None = None
        self._last: list[Verdict] = []
        # Counters for benchmarks and logs.
        self.seconds = 0.0
        self.batches = 0
        self.completions = 0
        # Distinct (database, SQL) pairs of predictions, and of golds, sent to the pool. A prediction whose text
        # is a gold not yet cached shares that gold's job and counts in both.
        self.executed = 0
        self.gold_executed = 0

    # -- public ---------------------------------------------------------------------------------------------

    def judge(
        self,
        completions: Sequence,
        gold_sql: Sequence[str],
        db_path: Sequence[str],
        db_engine: Sequence[str],
        gold_dialect: Sequence[str | None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
    ) -> list[Verdict]:
        """One verdict per completion. Repeated calls with the same batch return the cached verdicts.

        `log_extra` / `log_metric` are TRL's hooks (GRPOTrainer passes them to reward functions): the SQL and
        verdict of each completion go to the completions log, the seconds spent here to the metrics, where
        they can be set against TRL's step_time."""
        texts = [completion_text(c) for c in completions]
        n = len(texts)
        dialects = list(gold_dialect) if gold_dialect is not None else [None] * n
        for name, col in (
            ("gold_sql", gold_sql),
            ("db_path", db_path),
            ("db_engine", db_engine),
            ("gold_dialect", dialects),
        ):
            if len(col) != n:
                raise ValueError(f"reward engine: {name} has {len(col)} values for {n} completions")
        key = (tuple(texts), tuple(gold_sql), tuple(db_path), tuple(dialects))
        if key == self._last_key:
            return self._last
        started = time.perf_counter()
        verdicts = self._judge(texts, list(gold_sql), list(db_path), list(db_engine), [d or None for d in dialects])
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.batches += 1
        self.completions += n
        self._last_key, self._last = key, verdicts
        if log_extra is not None:  # columns of TRL's completions table (and our completions.jsonl)
            log_extra("sql", [v.sql for v in verdicts])
            log_extra("verdict", [v.label for v in verdicts])
        if log_metric is not None:
            log_metric("reward_engine/seconds", elapsed)
        return verdicts

    def want_soft_f1(self) -> None:
        """Give every verdict from now on its Soft-F1 (`Verdict.soft_f1`)."""
        if not self.soft_f1:
            self.soft_f1 = True
            self._last_key, self._last = None, []  # the cached batch has none

    def want_time_ratio(self) -> None:
        """Give every verdict from now on its `time_ratio` (the ves reward component's input)."""
        if not self.time_ratio:
            self.time_ratio = True
            self._last_key, self._last = None, []  # the cached batch has none

    def close(self) -> None:
        if self._own_executor:
            self.executor.close()

    def __enter__(self) -> RewardEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gold_results(self, items: list[tuple[Database, str, str | None]]) -> list[ExecResult]:
        """Results of (database, gold SQL, dialect) items, each distinct one executed once per run."""
        return self._golds_and(items, [])[0]

    def _golds_and(
        self, items: list[tuple[Database, str, str | None]], extra: list[tuple]
    ) -> tuple[list[ExecResult], dict[tuple, ExecResult]]:
        """`gold_results`, and the results of the `extra` jobs (the batch's predictions), run in the same pool
        batch as the golds still missing: at BIRD scale a gold takes seconds, and run alone before the
        predictions it would leave the other workers idle."""
        keys = [self.rewriter.job(db, sql, dialect) for db, sql, dialect in items]
        cached = {}
        for k in dict.fromkeys(keys):
            if k in self._gold:
                self._gold.move_to_end(k)  # used again: the last to be evicted
                cached[k] = self._gold[k]
        missing = [k for k in dict.fromkeys(keys) if k not in cached]
        if missing and self.time_ratio:
            # The kept gold time is the ves component's yardstick for the whole run: time a warm run, not the
            # first one, which pays for cold caches (OS pages, DuckDB/PostgreSQL buffers) that predictions
            # timed later would not.
            self.executor.execute_many(missing)
        jobs = list(dict.fromkeys([*missing, *extra]))  # golds first: the long ones start first
        results = dict(zip(jobs, self.executor.execute_many(jobs), strict=True)) if jobs else {}
        if missing:
            for k in missing:
                self._gold[k] = results[k]
            self.gold_executed += len(missing)
            while len(self._gold) > GOLD_CACHE_SIZE:
                self._gold.popitem(last=False)
        return [cached[k] if k in cached else results[k] for k in keys], {k: results[k] for k in extra}

    # -- internals ------------------------------------------------------------------------------------------

    def _judge(
        self, texts: list[str], golds: list[str], paths: list[str], engines: list[str], dialects: list[str | None]
    ) -> list[Verdict]:
        dbs = [Database(p, e) for p, e in zip(paths, engines, strict=True)]
        sqls = [extract_sql(t) for t in texts]
        # Distinct (database, SQL as scored) pairs run once; the model writes in the database's own dialect.
        pred_keys = [self.rewriter.job(db, sql) for db, sql in zip(dbs, sqls, strict=True)]
        unique = list(dict.fromkeys(pred_keys))
        gold, results = self._golds_and(list(zip(dbs, golds, dialects, strict=True)), unique)
        self.executed += len(unique)
        verdicts = []
        match_cache: dict[tuple, bool] = {}
        for text, sql, gold_sql, pk, g in zip(texts, sqls, golds, pred_keys, gold, strict=True):
            r = results[pk]
            error = r.error
            kind = refusal_kind(error)
            mk = (pk, gold_sql)
            if mk not in match_cache:
                match_cache[mk] = (verdict(g, r, gold_sql, self.metric), soft_f1(g, r) if self.soft_f1 else 0.0)
            correct, f1 = match_cache[mk]
            verdicts.append(
                Verdict(
                    text=text,
                    sql=sql,
                    has_block=has_sql_block(text),
                    parsed=kind is None,
                    refused=kind == "refused",
                    executed=r.ok,
                    correct=correct,
                    gold_ok=g.ok,
                    error=error,
                    timed_out=r.timed_out,
                    soft_f1=f1,
                    time_ratio=_time_ratio(g, r) if self.time_ratio else None,
                )
            )
        return verdicts
