"""Reward functions on literal completions, against a demo DuckDB database and a Spider SQLite database."""

from __future__ import annotations

import itertools
import time

import pytest

from nl2sql_align.data import load_examples
from nl2sql_align.errors import RecipeError
from nl2sql_align.recipe import RewardComponentSection, RewardSection
from nl2sql_align.rewards import (
    PRESETS,
    ComponentSpec,
    GuardedReward,
    RewardEngine,
    build_reward_functions,
    specs_for,
    sql_r1_length_bonus,
)

SPIDER_GOLD = "SELECT count(*) FROM singer"
DEMO_GOLD = "SELECT name FROM customers WHERE city = 'Dublin'"


def block(sql: str) -> str:
    return f"```sql\n{sql}\n```"


@pytest.fixture(scope="module")
def engine():
    with RewardEngine(metric="spider", timeout=1.0, workers=2) as e:
        yield e


@pytest.fixture(scope="module")
def demo_db():
    ex = load_examples("demo:dev", limit=1)[0]
    assert ex.sql == DEMO_GOLD
    return ex.db


def columns(n, db, gold):
    return {"gold_sql": [gold] * n, "db_path": [db.path] * n, "db_engine": [db.engine] * n, "gold_dialect": [""] * n}


def total(funcs, weights, completions, cols):
    per = [f(prompts=[None] * len(completions), completions=completions, **cols) for f in funcs]
    return [sum(w * (v or 0.0) for w, v in zip(weights, vals, strict=True)) for vals in zip(*per, strict=True)], per


CASES_SPIDER = {
    "match": block("SELECT COUNT(*) FROM singer"),
    "mismatch": block("SELECT COUNT(*) FROM stadium"),
    "error": block("SELECT COUNT(*) FROM no_such_table"),
    "timeout": block("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"),
    "hostile": block("DELETE FROM singer"),
    "no_block": "SELECT COUNT(*) FROM singer",
}


def test_default_components_on_spider(engine, spider_db):
    from nl2sql_align.sql import Database

    db = Database.from_path(spider_db)
    funcs, weights = build_reward_functions(specs_for(None), engine)
    names = [f.__name__ for f in funcs]
    assert names == ["execution", "executable", "format"]
    comps = list(CASES_SPIDER.values())
    totals, per = total(funcs, weights, comps, columns(len(comps), db, SPIDER_GOLD))
    got = dict(zip(CASES_SPIDER, zip(*per, strict=True), strict=True))
    assert got["match"] == (1.0, 0.1, 0.1)
    assert got["mismatch"] == (0.0, 0.1, 0.1)
    assert got["error"] == (0.0, 0.0, 0.1)
    assert got["timeout"] == (0.0, 0.0, 0.1)
    assert got["hostile"] == (0.0, 0.0, 0.0)  # the lowest value of every component, format included
    assert got["no_block"] == (1.0, 0.1, 0.0)  # bare SQL is still executed; only the format term is lost
    assert max(totals) == totals[0]


def test_verdicts_explain_each_case(engine, spider_db):
    from nl2sql_align.sql import Database

    db = Database.from_path(spider_db)
    comps = list(CASES_SPIDER.values())
    c = columns(len(comps), db, SPIDER_GOLD)
    v = dict(zip(CASES_SPIDER, engine.judge(comps, c["gold_sql"], c["db_path"], c["db_engine"]), strict=True))
    assert v["match"].correct and v["match"].executed and v["match"].has_block
    assert v["mismatch"].executed and not v["mismatch"].correct
    assert not v["error"].executed and v["error"].parsed and "no_such_table" in v["error"].error
    assert v["timeout"].timed_out and not v["timeout"].executed
    assert v["hostile"].refused and not v["hostile"].parsed and not v["hostile"].executed
    assert not v["no_block"].has_block and v["no_block"].correct


def test_demo_duckdb_and_syntax(engine, demo_db):
    funcs, weights = build_reward_functions([ComponentSpec("syntax"), ComponentSpec("execution")], engine)
    comps = [
        block(DEMO_GOLD),
        block("SELECT name FROM customers WHERE city = 'Paris'"),
        block("SELEC name FROM customers"),  # does not parse
        block("SELECT name FROM customers WHERE city = 'Dublin'; DROP TABLE customers"),
        block("SELECT * FROM read_csv('/etc/passwd')"),
        block(
            "SELECT name FROM customers WHERE city = 'Dublin' ORDER BY name DESC"
        ),  # order ignored: no ORDER BY in gold
    ]
    _, (syntax, execution) = total(funcs, weights, comps, columns(len(comps), demo_db, DEMO_GOLD))
    assert syntax == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert execution == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_conversational_completions(engine, demo_db):
    funcs, _ = build_reward_functions([ComponentSpec("execution")], engine)
    comps = [[{"role": "assistant", "content": block(DEMO_GOLD)}], [{"role": "assistant", "content": "no idea"}]]
    assert funcs[0](prompts=[None, None], completions=comps, **columns(2, demo_db, DEMO_GOLD)) == [1.0, 0.0]


def test_bird_semantics_ignore_duplicates_but_not_column_order(spider_db):
    from nl2sql_align.sql import Database

    db = Database.from_path(spider_db)
    gold = "SELECT name, country FROM singer"
    comps = [
        block("SELECT name, country FROM singer UNION ALL SELECT name, country FROM singer"),
        block("SELECT country, name FROM singer"),
    ]
    with (
        RewardEngine(metric="bird", timeout=1.0, workers=1) as bird,
        RewardEngine(metric="spider", timeout=1.0, workers=1) as spider,
    ):
        for eng, expected in ((bird, [1.0, 0.0]), (spider, [0.0, 1.0])):
            (f,), _ = build_reward_functions([ComponentSpec("execution")], eng)
            assert f(prompts=[None] * 2, completions=comps, **columns(2, db, gold)) == expected


# --- presets: the totals the papers specify ------------------------------------------------------------


def outcomes(engine, db, gold):
    correct = block(gold)
    return {
        "bad_format": gold,  # right SQL, no ```sql block
        "fails": block("SELECT nope FROM customers"),
        "wrong": block("SELECT name FROM customers WHERE city = 'Paris'"),
        "correct": correct,
        "hostile": block("DROP TABLE customers"),
    }


def preset_totals(engine, db, preset):
    cases = outcomes(engine, db, DEMO_GOLD)
    funcs, weights = build_reward_functions(PRESETS[preset], engine)
    totals, _ = total(funcs, weights, list(cases.values()), columns(len(cases), db, DEMO_GOLD))
    return dict(zip(cases, totals, strict=True)), cases


def test_preset_sql_r1(engine, demo_db):
    t, cases = preset_totals(engine, demo_db, "sql-r1")
    assert t["bad_format"] == -1.0  # format -1; nothing else is scored
    assert t["fails"] == pytest.approx(1 - 2)  # format +1, executes -2, result not scored
    assert t["wrong"] == pytest.approx(1 + 2 - 3)
    assert t["correct"] == pytest.approx(1 + 2 + 3 + sql_r1_length_bonus(cases["correct"], DEMO_GOLD))
    assert 6.0 < t["correct"] <= 7.5
    assert t["hostile"] == pytest.approx(-1 - 2 - 3) == min(t.values())


def test_preset_arctic(engine, demo_db):
    t, _ = preset_totals(engine, demo_db, "arctic")
    assert t["correct"] == pytest.approx(1.0)
    assert t["wrong"] == pytest.approx(0.1)
    assert t["fails"] == pytest.approx(0.0)
    assert t["bad_format"] == pytest.approx(1.0)  # Arctic has no format term
    assert t["hostile"] == pytest.approx(0.0) == min(t.values())


def test_preset_skyrl(engine, demo_db):
    t, _ = preset_totals(engine, demo_db, "skyrl")
    assert t == {"bad_format": -1.0, "fails": 0.0, "wrong": 0.0, "correct": 1.0, "hostile": -1.0}


def test_sql_r1_length_bonus_formula():
    text = "x" * 1024
    assert sql_r1_length_bonus(text, "y" * 256) == pytest.approx(0.5 * 0.5 + 0.25)
    assert sql_r1_length_bonus("a" * 5000, "a" * 5000) == pytest.approx(1.5)


def test_recipe_components_replace_preset():
    section = RewardSection(
        preset="sql-r1",
        components=[RewardComponentSection(name="execution", weight=2.0, hit=1.0, miss=-1.0, requires=["format"])],
    )
    assert specs_for(section) == [ComponentSpec("execution", 2.0, 1.0, -1.0, ("format",))]
    assert specs_for(RewardSection(preset="skyrl")) == PRESETS["skyrl"]


# --- the engine: caching and de-duplication ---------------------------------------------------------------


def test_gold_cached_and_identical_sql_run_once(demo_db):
    with RewardEngine(timeout=1.0, workers=1) as eng:
        (f,), _ = build_reward_functions([ComponentSpec("execution")], eng)
        group = [block(DEMO_GOLD)] * 6 + [block("SELECT name FROM customers")] * 2
        c = columns(len(group), demo_db, DEMO_GOLD)
        assert f(prompts=None, completions=group, **c) == [1.0] * 6 + [0.0] * 2
        assert eng.executed == 2 and eng.gold_executed == 1
        # A second component on the same batch is a cache hit: nothing runs again.
        (g,), _ = build_reward_functions([ComponentSpec("executable")], eng)
        assert g(prompts=None, completions=group, **c) == [1.0] * 8
        assert eng.executed == 2 and eng.batches == 1
        # A new batch with the same gold: the gold result comes from the cache.
        f(prompts=None, completions=[block("SELECT 1")], **columns(1, demo_db, DEMO_GOLD))
        assert eng.gold_executed == 1 and eng.executed == 3


def test_missing_golds_run_in_the_same_pool_batch_as_the_predictions(demo_db):
    """One pool batch per judge call: a gold that takes seconds must not run alone while workers idle."""
    from nl2sql_align.sql import SQLExecutor

    class Recording(SQLExecutor):
        def execute_many(self, jobs):
            self.batches.append(list(jobs))
            return super().execute_many(jobs)

    with Recording(workers=2, timeout=2.0) as ex:
        ex.batches = []
        eng = RewardEngine(executor=ex)
        (f,), _ = build_reward_functions([ComponentSpec("execution")], eng)
        group = [block(DEMO_GOLD), block("SELECT name FROM customers"), block("SELECT 1")]
        assert f(prompts=None, completions=group, **columns(3, demo_db, DEMO_GOLD)) == [1.0, 0.0, 0.0]
        assert len(ex.batches) == 1 and len(ex.batches[0]) == 3  # the gold (its text is also a prediction) + 2
        assert eng.gold_executed == 1 and eng.executed == 3
        f(prompts=None, completions=[block("SELECT 2")], **columns(1, demo_db, DEMO_GOLD))
        assert len(ex.batches) == 2 and len(ex.batches[1]) == 1  # the cached gold does not run again


def test_gold_cache_evicts_the_least_recently_used(demo_db, monkeypatch):
    import nl2sql_align.rewards.engine as engine_module

    monkeypatch.setattr(engine_module, "GOLD_CACHE_SIZE", 2)
    golds = ["SELECT 1", "SELECT 2", "SELECT 3"]
    with RewardEngine(timeout=2.0, workers=1) as eng:
        (f,), _ = build_reward_functions([ComponentSpec("execution")], eng)

        def judge(*gs):
            return f(prompts=None, completions=[block(g) for g in gs], gold_sql=list(gs),
                     db_path=[demo_db.path] * len(gs), db_engine=[demo_db.engine] * len(gs))  # fmt: skip

        assert judge(golds[0]) == [1.0] and judge(golds[1]) == [1.0]
        assert eng.gold_executed == 2
        assert judge(golds[0], golds[2]) == [1.0, 1.0]  # g1 used again: g2 is the least recently used
        assert eng.gold_executed == 3
        judge(golds[0])
        assert eng.gold_executed == 3  # g1 still cached
        judge(golds[1])
        assert eng.gold_executed == 4  # g2 was evicted
        # A batch with more distinct golds than the cache holds still gets every result.
        assert judge(*golds, "SELECT 4") == [1.0] * 4


def test_log_extra_receives_sql_and_verdicts(engine, demo_db):
    logged = {}
    (f,), _ = build_reward_functions([ComponentSpec("execution")], engine)
    comps = [block(DEMO_GOLD), block("SELECT nope FROM customers"), block("SELECT 42 AS q")]
    f(prompts=None, completions=comps, log_extra=logged.__setitem__, **columns(3, demo_db, DEMO_GOLD))
    assert logged["sql"][0] == DEMO_GOLD
    assert logged["verdict"][0] == "correct" and logged["verdict"][2] == "wrong result"
    assert "nope" in logged["verdict"][1]


def test_missing_gold_database_is_not_scored(engine, tmp_path):
    (f,), _ = build_reward_functions([ComponentSpec("execution")], engine)
    cols = {"gold_sql": ["SELECT 1"], "db_path": [str(tmp_path / "gone.sqlite")], "db_engine": ["sqlite"]}
    assert f(prompts=None, completions=[block("SELECT 1")], **cols) == [None]


# --- user functions ------------------------------------------------------------------------------------


def picky(prompts, completions, **kw):
    if any("boom" in c for c in completions):
        raise RuntimeError("I do not like boom")
    return [float(len(c)) for c in completions]


def sleepy(prompts, completions, **kw):
    if any("sleep" in c for c in completions):
        time.sleep(30)
    return [1.0] * len(completions)


def test_guarded_user_function_isolates_a_raising_completion():
    g = GuardedReward(picky, timeout=5)
    assert g(prompts=None, completions=["ab", "boom", "abcd"]) == [2.0, None, 4.0]
    assert g.failures == 1 and g.__name__ == "picky"


def test_guarded_user_function_abandons_a_hang():
    g = GuardedReward(sleepy, timeout=0.5)
    started = time.monotonic()
    assert g(prompts=None, completions=["a", "sleep", "b"]) == [1.0, None, 1.0]
    assert time.monotonic() - started < 5
    assert g.abandoned == 2  # the batch call, then the one completion


def test_user_function_by_dotted_path(engine):
    funcs, weights = build_reward_functions(
        [ComponentSpec("tests.test_rewards.picky", weight=0.5), ComponentSpec("format")], engine
    )
    assert [f.__name__ for f in funcs] == ["picky", "format"] and weights == [0.5, 1.0]
    with pytest.raises(RecipeError, match="no callable 'nothing'"):
        build_reward_functions([ComponentSpec("tests.test_rewards.nothing")], engine)
    with pytest.raises(RecipeError, match="built-in"):
        build_reward_functions([ComponentSpec("exection")], engine)
    with pytest.raises(RecipeError, match="twice"):
        build_reward_functions([ComponentSpec("format"), ComponentSpec("format")], engine)


def test_every_preset_gives_hostile_sql_the_lowest_total(engine, demo_db):
    # Non-read SQL must never beat an honest failure, whatever the preset.
    for preset in PRESETS:
        t, _ = preset_totals(engine, demo_db, preset)
        assert t["hostile"] == min(t.values()), preset
        assert t["correct"] == max(t.values()), preset
        for a, b in itertools.combinations(["fails", "correct"], 2):
            assert t[a] < t[b]


@pytest.mark.parametrize(
    "error, kind",
    [
        ("refused: only SELECT queries may run (found Insert)", "refused"),
        ("refused: only SELECT queries may run (found PRAGMA)", "refused"),
        ("refused: only one statement may run (found 2)", "refused"),
        ("refused: function read_csv() is not allowed (it reaches files, external data or engine state)", "refused"),
        ("refused: only SELECT queries may run (found (*))", "syntax"),  # junk sqlglot read as a command
        ("refused: could not parse as duckdb SQL: Invalid expression", "syntax"),
        ("transpile: unsupported", "syntax"),
        ("Binder Error: column nope not found", None),
        (None, None),
    ],
)
def test_refusal_kind_tells_hostile_sql_from_junk(error, kind):
    from nl2sql_align.rewards.engine import refusal_kind

    assert refusal_kind(error) == kind
