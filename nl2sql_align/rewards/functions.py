"""Reward functions in TRL's GRPO contract, presets that reproduce published designs, and user plug-ins.

TRL calls `f(prompts=..., completions=..., completion_ids=..., **columns)` and logs the mean of each
function's raw output as `rewards/<name>/mean`; the weighted sum (GRPOConfig.reward_weights) is the reward.
Our dataset columns `gold_sql`, `db_path`, `db_engine`, `gold_dialect` arrive as keywords.

Built-in checks (each a `SQLCheckReward`, all sharing one `RewardEngine`, so SQL runs once per step):

    format      the answer is in a closed ```sql block
    syntax      sqlglot parses the SQL as exactly one read-only query
    executable  it runs without error within the timeout
    execution   its result matches the gold result (spider or bird semantics)
    length      SQL-R1's length bonus, on a correct answer only
    soft_f1     partial credit: BIRD mini-dev's Soft-F1 of its result rows against the gold's (x `hit`) when it
                runs, `miss` (0) when it does not; the engine computes it from the same executions
    ves         efficiency: on a correct answer, BIRD mini-dev's R-VES reward (0.25-1.25, by gold time /
                prediction time) x `hit`; `miss` otherwise. The times come from the one execution each that
                scoring already makes (R-VES repeats them; `eval --ves N` does), run beside the batch's other
                queries, so they are noisy for queries of a few milliseconds: for databases whose queries take
                tenths of seconds or more. A gold's time is taken once per run, on a warm second run.

Each returns `hit` when its check passes, `miss` when not, and None ("not scored": TRL adds nothing and
leaves it out of the logged mean) when a check it `requires` failed. SQL that is not a read-only query
(DML, DDL, file access, several statements) gets `miss` from every component, gates ignored: the lowest
total a preset can give.

Presets (docs/DESIGN.md, "Published reward designs"; values read from the authors' code where it is public):

    sql-r1   SQL-R1 (Ma et al. 2025, verl synsql.py): format +1/-1; then executes +2/-2; then result +3/-3;
             a length bonus on a match. Totals: bad format -1, fails -1, wrong 0, correct 6 + bonus.
    arctic   Arctic-Text2SQL-R1 (Yao et al. 2025): 1 if the result matches, 0.1 if it only executes, else 0.
    skyrl    SkyRL-SQL (NovaSky 2025): -1 for a bad format, else 1 if the result matches, else 0.
    default  execution 1/0 plus executable 0.1 and format 0.1: Arctic's design with a format term, dense
             enough for small models (Think2SQL found small models need denser rewards).

Differences from the papers, on purpose: their format checks also require <think>/<answer> (SQL-R1) or
<solution> (SkyRL) tags from reasoning prompts; ours is the ```sql block our prompts ask for. SQL-R1's length
bonus counts the whole completion as the "think + answer" text.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nl2sql_align.errors import RecipeError
from nl2sql_align.rewards.engine import RewardEngine, Verdict
from nl2sql_align.sql.results import ves_reward

log = logging.getLogger(__name__)

CHECKS = ("format", "syntax", "executable", "execution", "length", "soft_f1", "ves")
# The checks that pass or fail, which a component may require; length, soft_f1 and ves are scores.
GATES = ("format", "syntax", "executable", "execution")


@dataclass(frozen=True)
class ComponentSpec:
    """One reward component: a built-in check or a user function, with its weight."""

    name: str
    weight: float = 1.0
    hit: float = 1.0
    miss: float = 0.0
    requires: tuple[str, ...] = ()


PRESETS: dict[str, list[ComponentSpec]] = {
    "default": [
        ComponentSpec("execution", 1.0, hit=1.0, miss=0.0),
        ComponentSpec("executable", 1.0, hit=0.1, miss=0.0),
        ComponentSpec("format", 1.0, hit=0.1, miss=0.0),
    ],
    "sql-r1": [
        ComponentSpec("format", 1.0, hit=1.0, miss=-1.0),
        ComponentSpec("executable", 1.0, hit=2.0, miss=-2.0, requires=("format",)),
        ComponentSpec("execution", 1.0, hit=3.0, miss=-3.0, requires=("format", "executable")),
        ComponentSpec("length", 1.0, hit=1.0, miss=0.0, requires=("format", "execution")),
    ],
    # 1 on a match (0.9 + 0.1), 0.1 when it only executes. Raw components stay 0/1 rates in the logs.
    "arctic": [
        ComponentSpec("execution", 0.9, hit=1.0, miss=0.0),
        ComponentSpec("executable", 0.1, hit=1.0, miss=0.0),
    ],
    "skyrl": [
        ComponentSpec("format", 1.0, hit=0.0, miss=-1.0),
        ComponentSpec("execution", 1.0, hit=1.0, miss=0.0, requires=("format",)),
    ],
}


def sql_r1_length_bonus(text: str, sql: str) -> float:
    """SQL-R1's length term on a correct answer: 0.5 * min(1, len(response)/2048) + len(sql)/len(response)
    (characters). It favours a complete SQL answer over padding around it."""
    n = max(1, len(text))
    return 0.5 * min(1.0, n / 2048) + min(1.0, len(sql) / n)


class SQLCheckReward:
    """A built-in reward component over the shared engine (see module docstring)."""

    def __init__(
        self, check: str, engine: RewardEngine, hit: float = 1.0, miss: float = 0.0, requires: Sequence[str] = ()
    ):
        if check not in CHECKS:
            raise ValueError(f"unknown reward check {check!r}: expected one of {', '.join(CHECKS)}")
        for r in requires:
            if r not in GATES:
                raise ValueError(f"{check}: requires {r!r}, expected one of {', '.join(GATES)}")
        self.check, self.engine, self.hit, self.miss, self.requires = check, engine, hit, miss, tuple(requires)
        self.__name__ = check  # TRL names the metric rewards/<__name__>/mean
        if check == "soft_f1" and engine is not None:
            engine.want_soft_f1()
        if check == "ves" and engine is not None:
            engine.want_time_ratio()

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kw) -> list[float | None]:
        verdicts = self.engine.judge(
            completions,
            kw["gold_sql"],
            kw["db_path"],
            kw["db_engine"],
            kw.get("gold_dialect"),
            log_extra=kw.get("log_extra"),
            log_metric=kw.get("log_metric"),
        )
        return [self.score(v) for v in verdicts]

    def score(self, v: Verdict) -> float | None:
        if v.refused:
            return self.miss  # non-read SQL: the lowest value of every component
        if not v.gold_ok and self.check in ("execution", "length", "soft_f1", "ves"):
            return None  # the gold SQL fails: this example cannot be scored (validate reports it)
        if any(not v.passed(r) for r in self.requires):
            return None
        if self.check == "length":
            return sql_r1_length_bonus(v.text, v.sql) * self.hit if v.correct else self.miss
        if self.check == "soft_f1":
            return v.soft_f1 * self.hit if v.executed else self.miss
        if self.check == "ves":
            return ves_reward([v.time_ratio]) * self.hit if v.correct and v.time_ratio is not None else self.miss
        return self.hit if v.passed(self.check) else self.miss

    def __repr__(self) -> str:
        return f"SQLCheckReward({self.check}, hit={self.hit}, miss={self.miss}, requires={self.requires})"


# ---------------------------------------------------------------------------------------------------------
# User functions: guarded so that one that raises or hangs costs rewards, never the training step.


class _Abandoned(Exception):
    pass


def _call_with_timeout(fn: Callable, kwargs: dict, timeout: float):
    box: dict = {}

    def target():
        try:
            box["out"] = fn(**kwargs)
        except BaseException as e:  # noqa: BLE001  reported to the caller
            box["err"] = e

    # A daemon thread: Python cannot kill a thread, so a hung call is abandoned, and it must not keep the
    # interpreter alive at exit.
    t = threading.Thread(target=target, daemon=True, name=f"reward-{getattr(fn, '__name__', 'fn')}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise _Abandoned(f"no answer within {timeout:g} s")
    if "err" in box:
        raise box["err"]
    return box["out"]


@dataclass
class GuardedReward:
    """Wrap a user's reward function: a call that raises, hangs past `timeout` or returns the wrong number of
    values is retried one completion at a time; the completions that still fail get None (not scored)."""

    fn: Callable
    timeout: float = 60.0
    failures: int = 0
    abandoned: int = 0
    max_abandoned: int = 8  # hung threads we tolerate before giving up on per-completion retries

    def __post_init__(self):
        self.__name__ = getattr(self.fn, "__name__", type(self.fn).__name__)

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kw) -> list[float | None]:
        n = len(completions)
        call_kw = dict(kw, prompts=prompts, completions=completions, completion_ids=completion_ids)
        try:
            return self._checked(call_kw, n)
        except Exception as e:  # noqa: BLE001
            self._warn(f"failed on a batch of {n} ({type(e).__name__}: {e}); retrying one completion at a time")
        if self.abandoned >= self.max_abandoned:
            return [None] * n
        results: list[float | None] = []
        for i in range(n):
            one = {k: (v[i : i + 1] if isinstance(v, list) and len(v) == n else v) for k, v in call_kw.items()}
            try:
                results.append(self._checked(one, 1)[0])
            except Exception as e:  # noqa: BLE001
                self.failures += 1
                self._warn(f"completion {i}: {type(e).__name__}: {e}; its reward is None (not scored)")
                results.append(None)
                if self.abandoned >= self.max_abandoned:
                    results += [None] * (n - len(results))
                    break
        return results

    def _checked(self, kwargs: dict, n: int) -> list[float | None]:
        try:
            out = _call_with_timeout(self.fn, kwargs, self.timeout)
        except _Abandoned:
            self.abandoned += 1
            raise
        out = list(out)
        if len(out) != n:
            raise ValueError(f"returned {len(out)} values for {n} completions")
        return [None if v is None else float(v) for v in out]

    def _warn(self, message: str) -> None:
        log.warning("reward function %s %s", self.__name__, message)


def load_user_function(path: str) -> Callable:
    """`package.module.function` (or `package.module:function`) -> the callable."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise RecipeError(
            f"reward component {path!r}: expected a built-in ({', '.join(CHECKS)}) or a dotted path mypkg.rewards.fn"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RecipeError(f"reward component {path!r}: cannot import {module_name}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RecipeError(f"reward component {path!r}: {module_name} has no callable {attr!r}")
    return fn


def build_reward_functions(
    specs: Sequence[ComponentSpec], engine: RewardEngine, function_timeout: float = 60.0
) -> tuple[list[Callable], list[float]]:
    """Reward callables and their weights, in order, for GRPOTrainer(reward_funcs=...) and reward_weights."""
    funcs: list[Callable] = []
    names = []
    for spec in specs:
        if spec.name in CHECKS:
            funcs.append(SQLCheckReward(spec.name, engine, spec.hit, spec.miss, spec.requires))
        else:
            funcs.append(GuardedReward(load_user_function(spec.name), timeout=function_timeout))
        names.append(funcs[-1].__name__)
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RecipeError(f"reward components {sorted(dup)} appear twice; each metric rewards/<name>/mean needs one")
    return funcs, [s.weight for s in specs]
