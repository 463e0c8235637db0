"""Untrusted SQL of any shape never crashes a run: property-based fuzzing of every entry point that reads
model output, plus explicit regressions (800 nested parentheses, and a GRPO step whose completions are all
degenerate).

Every parse of model text must end as a refusal, a non-match or "unknown", never an exception: the reward
engine calls the guard in the training process, so one `((((...` from a collapsing policy would otherwise end
a GRPO/PPO/pairs run. Budget: the whole file runs in about 20 s on 2 cores (one executor for the module).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nl2sql_align.data.prompts import extract_sql, has_sql_block
from nl2sql_align.pairs import normalize_sql
from nl2sql_align.rewards import PRESETS, RewardEngine, build_reward_functions, specs_for
from nl2sql_align.rewards.engine import refusal_kind
from nl2sql_align.sql import Database, ExecResult, SQLExecutor, check_read_only, remove_distinct, transpile
from nl2sql_align.sql.guard import MAX_NESTING, parse_untrusted, tokenize_untrusted
from nl2sql_align.sql.hardness import SPIDER_LEVELS, UNKNOWN, spider_hardness
from tests.conftest import SPIDER, sqlite_to_duckdb

SPIDER_DB = SPIDER / "database" / "concert_singer" / "concert_singer.sqlite"
pytestmark = pytest.mark.skipif(not SPIDER_DB.exists(), reason="Spider sample not found")

SINGERS = 6  # rows of concert_singer.singer
PARENS_800 = "SELECT " + "(" * 800 + "1" + ")" * 800  # 1.6 kB, under the 20k-character cap
GOLDS = ["SELECT count(*) FROM singer", "SELECT Name FROM singer ORDER BY Age", "SELECT DISTINCT Country FROM singer"]

# Examples per property (each property also runs its explicit cases). Sized for a 2-core machine: the pure
# parsing properties cost about a millisecond an example, the executing ones a few (two engines, a pool).
PARSE_EXAMPLES = 500
EXECUTE_EXAMPLES = 150
REWARD_EXAMPLES = 120
FUZZ = settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


# --- the grammar ------------------------------------------------------------------------------------------

KEYWORDS = """SELECT FROM WHERE GROUP BY HAVING ORDER LIMIT OFFSET UNION ALL INTERSECT EXCEPT JOIN LEFT INNER
CROSS ON USING AS DISTINCT WITH RECURSIVE CASE WHEN THEN ELSE END NOT AND OR IN EXISTS LIKE GLOB BETWEEN IS
NULL ASC DESC CAST COLLATE NOCASE ESCAPE""".split()
# Other dialects' syntax and statements the guard must refuse, mixed into the same stream.
FOREIGN = """QUALIFY ILIKE PIVOT UNPIVOT EXCLUDE REPLACE TOP FETCH FIRST ROWS ONLY LATERAL ARRAY STRUCT LIST
SAMPLE ASOF POSITIONAL MATCH_RECOGNIZE CONNECT PRIOR MERGE INSERT INTO UPDATE SET DELETE DROP TABLE CREATE TEMP
VIEW ATTACH DETACH PRAGMA COPY EXPORT DATABASE INSTALL LOAD VACUUM CHECKPOINT BEGIN COMMIT CALL DESCRIBE SHOW
SUMMARIZE""".split()
FUNCTIONS = """count sum avg min max abs length lower upper substr round coalesce ifnull typeof levenshtein
repeat printf read_csv read_text glob readfile writefile load_extension query_table sqlite_scan range
generate_series unnest list_value struct_pack""".split()
TABLES = ["singer", "concert", "stadium", "singer_in_concert", "no_such_table", "main.singer", "sqlite_master"]
COLUMNS = ["Name", "Age", "Singer_ID", "Country", "Song_Name", "Is_male", "*", "rowid", "x"]
OPERATORS = "= == <> != < > <= >= + - * / % || , ( ) ; . :: [ ] { } -> ->> @> ? : $1 ~ & |".split()
SPECIALS = [
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d",
    "'",
    '"',
    "`",
    "/*",
    "*/",
    "--",
    "$$",
    "\n",
    "\t",
    "\\",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "é",
    "ß",
    "\r\n",
    "\x1b",
    "\u0085",
    "#",
    "@",
    "%s",
    "{0}",
]

identifiers = st.one_of(
    st.sampled_from(TABLES + COLUMNS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12),
    st.sampled_from(TABLES + COLUMNS).map(lambda s: f'"{s}"'),
    st.sampled_from(COLUMNS).map(lambda s: f"`{s}`"),
    st.sampled_from(COLUMNS).map(lambda s: f"[{s}]"),
    st.integers(1000, 19_000).map(lambda n: "a" * n),  # an extremely long identifier
)
literals = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=20).map(lambda s: "'" + s.replace("'", "''") + "'"),
    st.sampled_from(["NULL", "TRUE", "FALSE", "x'ab'", "X'00'", "1e308", "1e309", "-0.0", "0x7fffffffffffffff", "''"]),
    st.integers(1000, 19_000).map(lambda n: "'" + "x" * n + "'"),  # a huge literal
    st.integers(1000, 19_000).map(lambda n: "9" * n),  # a huge number
)
tokens = st.one_of(
    st.sampled_from(KEYWORDS),
    st.sampled_from(FOREIGN),
    st.sampled_from(FUNCTIONS).map(lambda f: f + "("),
    st.sampled_from(OPERATORS),
    st.sampled_from(SPECIALS),
    identifiers,
    literals,
)
separators = st.sampled_from([" ", " ", " ", "", "\n", "\t", "  "])


@st.composite
def fragments(draw) -> str:
    """Random token soup: keywords, identifiers, literals, operators, odd characters."""
    parts = draw(st.lists(tokens, max_size=40))
    return "".join(p + draw(separators) for p in parts)


@st.composite
def plausible_queries(draw) -> str:
    """Queries that often parse and run, so the ok path is fuzzed too."""
    cols = ", ".join(
        draw(
            st.lists(
                st.sampled_from(["Name", "Age", "Country", "count(*)", "*", "1", "Age + 1"]), min_size=1, max_size=3
            )
        )
    )
    sql = f"SELECT {draw(st.sampled_from(['', 'DISTINCT ']))}{cols} FROM {draw(st.sampled_from(TABLES[:4]))}"
    if draw(st.booleans()):
        sql += f" WHERE Age {draw(st.sampled_from(['>', '<', '=', '!=']))} {draw(st.integers(-5, 60))}"
    if draw(st.booleans()):
        sql += f" ORDER BY {draw(st.sampled_from(['1', 'Name', 'Age DESC']))}"
    if draw(st.booleans()):
        sql += f" LIMIT {draw(st.integers(0, 10))}"
    return sql + draw(st.sampled_from(["", ";", "; -- done", " /* c */"]))


@st.composite
def nested(draw) -> str:
    """Deep and unbalanced nesting of brackets, subqueries, calls, NOT chains and CASE."""
    inner = draw(st.one_of(plausible_queries(), st.sampled_from(["1", "Age", "SELECT 1", ""])))
    opener = draw(st.sampled_from(["(", "[", "{", "abs(", "(SELECT ", "NOT ", "- ", "CASE WHEN 1 THEN ", "(1 IN "]))
    closer = {"(": ")", "[": "]", "{": "}", "abs(": ")", "(SELECT ": ")", "(1 IN ": ")", "CASE WHEN 1 THEN ": " END"}
    depth = draw(st.one_of(st.integers(0, 120), st.integers(120, 4000)))
    close = draw(st.one_of(st.just(depth), st.integers(0, depth + 3)))  # balanced, or not
    return (
        draw(st.sampled_from(["SELECT ", "", "SELECT * FROM "]))
        + opener * depth
        + inner
        + closer.get(opener, "") * close
    )


@st.composite
def repeated(draw) -> str:
    """A short run of tokens repeated many times (what a collapsing policy emits), with or without a prefix."""
    unit = draw(
        st.one_of(
            st.lists(tokens, min_size=1, max_size=3).map("".join),
            st.sampled_from(
                ["(", "((", "[x]", "[1]", "x.", "::INT", "SELECT", " UNION SELECT 1", " AND 1=1", "'", "```"]
            ),
        )
    )
    times = draw(st.integers(1, max(1, min(3000, 60_000 // max(1, len(unit))))))  # up to ~60k characters
    return draw(st.sampled_from(["", "SELECT ", "SELECT 1 WHERE 1=1", "SELECT x"])) + unit * times


@st.composite
def unterminated(draw) -> str:
    base = draw(plausible_queries())
    cut = draw(st.integers(0, len(base)))
    return base[:cut] + draw(st.sampled_from(["'abc", '"abc', "/* abc", "`abc", "[abc", "$$abc", "x'ab", "(", "CASE"]))


sql_texts = st.one_of(plausible_queries(), fragments(), nested(), repeated(), unterminated())


@st.composite
def completions(draw) -> str:
    """Model-style answers: prose, ```sql fences (open, closed, several, wrong language), and any SQL text."""
    sql = draw(sql_texts)
    prefix = draw(
        st.sampled_from(["", "Here is the query:\n", "```sql\n", "```\n", "```duckdb\n", "```SQL ", "``` sql\n"])
    )
    suffix = draw(st.sampled_from(["", "\n```", "```", "\n```\nDone.", "\n``", "\n```sql\n"]))
    text = prefix + sql + suffix
    if draw(st.integers(0, 4)) == 0:
        text = text * draw(st.integers(2, 5))
    return text


# --- fixtures -----------------------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copy(SPIDER_DB, root / "concert_singer.sqlite")
    sqlite_to_duckdb(SPIDER_DB, root / "concert_singer.duckdb")
    return root


@pytest.fixture(scope="module")
def dbs(fuzz_dir: Path) -> dict[str, Database]:
    return {e: Database.from_path(fuzz_dir / f"concert_singer.{e}") for e in ("sqlite", "duckdb")}


@pytest.fixture(scope="module")
def digests(fuzz_dir: Path, dbs) -> dict[str, str]:
    return {e: _digest(Path(db.path)) for e, db in dbs.items()}


@pytest.fixture(scope="module")
def executor(fuzz_dir: Path, dbs, digests):
    # A short timeout: a random cross join or recursive CTE costs at most timeout + grace (0.75 s).
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(fuzz_dir)  # a stray relative file write would land next to the databases
        with SQLExecutor(workers=2, timeout=0.5) as ex:
            ex.execute_many([(dbs["sqlite"], "SELECT 1"), (dbs["duckdb"], "SELECT 1")] * 2)
            yield ex


@pytest.fixture(scope="module")
def engine(executor):
    with RewardEngine(metric="spider", executor=executor) as e:
        yield e


# --- well-formedness --------------------------------------------------------------------------------------


def assert_well_formed(r: ExecResult) -> None:
    assert isinstance(r, ExecResult)
    if r.ok:
        assert r.error is None and isinstance(r.rows, list) and isinstance(r.columns, list)
        assert all(isinstance(row, tuple) for row in r.rows)
    else:
        assert isinstance(r.error, str) and r.error and r.rows is None and r.columns is None
    assert isinstance(r.timed_out, bool)


def assert_reason(reason) -> None:
    assert reason is None or (isinstance(reason, str) and reason and len(reason) <= 400)


# --- properties: parsing ----------------------------------------------------------------------------------


@settings(FUZZ, max_examples=PARSE_EXAMPLES)
@given(sql=sql_texts)
def test_guard_never_raises(sql: str) -> None:
    for dialect in ("sqlite", "duckdb"):
        reason = check_read_only(sql, dialect)
        assert_reason(reason)
        if "\x00" in sql or any("\ud800" <= c <= "\udfff" for c in sql):
            assert reason is not None  # no engine can be handed such text
    other = transpile_or_reason(sql, "sqlite", "duckdb")
    assert isinstance(other, str)
    out = remove_distinct(sql, "sqlite")
    assert isinstance(out, str) and len(out) <= len(sql)
    assert spider_hardness(sql, "sqlite") in (*SPIDER_LEVELS, UNKNOWN)
    assert spider_hardness(sql) in (*SPIDER_LEVELS, UNKNOWN)
    assert isinstance(normalize_sql(sql, "sqlite"), str)
    assert isinstance(normalize_sql(sql, "duckdb"), str)
    parsed, problem = parse_untrusted(sql, "duckdb")
    assert (parsed is None) != (problem is None)
    toks, problem = tokenize_untrusted(sql, "sqlite")
    assert (toks is None) != (problem is None)


def transpile_or_reason(sql: str, read: str, write: str) -> str:
    try:
        return transpile(sql, read, write)
    except ValueError as e:  # TranspileError: the one exception transpile may raise
        return f"transpile: {e}"


@settings(FUZZ, max_examples=PARSE_EXAMPLES)
@given(text=completions())
def test_extraction_never_raises(text: str) -> None:
    sql = extract_sql(text)
    assert isinstance(sql, str) and len(sql) <= len(text)
    assert isinstance(has_sql_block(text), bool)
    assert_reason(check_read_only(sql, "sqlite"))


# --- properties: execution --------------------------------------------------------------------------------


@settings(FUZZ, max_examples=EXECUTE_EXAMPLES)
@given(sqls=st.lists(sql_texts, min_size=1, max_size=2), dialect=st.sampled_from([None, "sqlite", "duckdb"]))
def test_executor_always_answers_with_a_result(executor, dbs, sqls: list[str], dialect) -> None:
    jobs = [(db, sql, dialect) for sql in sqls for db in dbs.values()]
    results = executor.execute_many(jobs + [(db, "SELECT count(*) FROM singer") for db in dbs.values()])
    assert len(results) == len(jobs) + 2
    for r in results:
        assert_well_formed(r)
    assert [r.rows for r in results[-2:]] == [[(SINGERS,)]] * 2  # the pool still answers, the data is intact
    assert len(executor.worker_pids) == 2


# --- properties: rewards (TRL's contract) -----------------------------------------------------------------


def _call(func, texts: list, golds: list[str], db: Database):
    n = len(texts)
    return func(
        prompts=[[{"role": "user", "content": "q"}]] * n,
        completions=texts,
        completion_ids=None,
        gold_sql=golds,
        db_path=[db.path] * n,
        db_engine=[db.engine] * n,
        gold_dialect=[""] * n,
    )


@settings(FUZZ, max_examples=REWARD_EXAMPLES)
@given(
    texts=st.lists(completions(), min_size=1, max_size=4),
    conversational=st.booleans(),
    engine_name=st.sampled_from(["sqlite", "duckdb"]),
    gold=st.sampled_from(GOLDS),
    preset=st.sampled_from([None, *PRESETS]),
)
def test_reward_functions_give_defined_rewards(engine, dbs, texts, conversational, engine_name, gold, preset) -> None:
    db = dbs[engine_name]
    completions_ = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    specs = specs_for(None) if preset is None else list(PRESETS[preset])
    funcs, weights = build_reward_functions(specs, engine)
    verdicts = engine.judge(completions_, [gold] * len(texts), [db.path] * len(texts), [db.engine] * len(texts))
    for v in verdicts:
        assert v.gold_ok
        assert v.executed == (v.error is None)
        assert not v.correct or v.executed
        assert not v.refused or not v.parsed
        assert refusal_kind(v.error) in (None, "syntax", "refused")
    for spec, func in zip(specs, funcs, strict=True):
        values = _call(func, completions_, [gold] * len(texts), db)
        assert len(values) == len(texts)
        for v, value in zip(verdicts, values, strict=True):
            required_failed = not v.refused and any(not v.passed(r) for r in spec.requires)
            if required_failed:
                assert value is None  # "not scored": a check it requires failed
                continue
            # The gold runs, so every component without a failed requirement scores: a defined float.
            assert isinstance(value, float) and math.isfinite(value), (spec, value, v)
            if spec.name != "length":
                assert value in (spec.hit, spec.miss)
    total = [
        sum(w * (x or 0.0) for w, x in zip(weights, xs, strict=True))
        for xs in zip(*[_call(f, completions_, [gold] * len(texts), db) for f in funcs], strict=True)
    ]
    assert all(math.isfinite(t) for t in total)


# --- explicit regressions: 800 nested parentheses through every entry point ------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb"])
def test_800_parentheses_are_refused_by_the_guard(dialect: str) -> None:
    assert len(PARENS_800) < 20_000
    reason = check_read_only(PARENS_800, dialect)
    assert (
        reason == f"could not parse as {dialect} SQL: nested too deeply (800 levels of brackets, limit {MAX_NESTING})"
    )
    assert check_read_only("SELECT " + "(" * MAX_NESTING + "1" + ")" * MAX_NESTING, dialect) is None


def test_800_parentheses_through_transpile_hardness_distinct_and_pairs() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        transpile(PARENS_800, "sqlite", "duckdb")
    assert remove_distinct(PARENS_800) == PARENS_800
    assert remove_distinct("SELECT DISTINCT " + PARENS_800[7:]) == "SELECT  " + PARENS_800[7:]
    assert spider_hardness(PARENS_800) == UNKNOWN
    assert spider_hardness(PARENS_800, "sqlite") == UNKNOWN
    assert normalize_sql(PARENS_800, "sqlite") == PARENS_800.lower()
    text = f"```sql\n{PARENS_800}\n```"
    assert extract_sql(text) == PARENS_800 and has_sql_block(text)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "NOT " * 4000 + "1",  # no brackets: sqlglot recurses once per NOT (RecursionError)
        "SELECT " + "- " * 8000 + "1",
        "SELECT " + "CASE WHEN 1 THEN " * 1000 + "1" + " END" * 1000,
        "SELECT " + "abs(" * 2000 + "1" + ")" * 2000,
        "SELECT * FROM " + "(SELECT * FROM " * 900 + "singer" + ")" * 900,
        "SELECT '" + "(" * 15000 + "'",  # brackets in a string do not nest: allowed
        "SELECT 1\x00",
        "SELECT '\ud800'",
        "SELECT 'abc",
        "SELECT 1 /* abc",
    ],
)
def test_other_degenerate_shapes_never_raise(sql: str) -> None:
    for dialect in ("sqlite", "duckdb"):
        assert_reason(check_read_only(sql, dialect))
    transpile_or_reason(sql, "sqlite", "duckdb")
    assert spider_hardness(sql) in (*SPIDER_LEVELS, UNKNOWN)
    assert isinstance(normalize_sql(sql, "duckdb"), str)
    assert isinstance(remove_distinct(sql), str)


def test_nul_and_surrogates_are_refused_as_unparseable() -> None:
    assert check_read_only("SELECT 1\x00", "sqlite") == (
        "could not parse as sqlite SQL: it contains a NUL character (position 8)"
    )
    reason = check_read_only("SELECT '\ud800'", "duckdb")
    assert reason == "could not parse as duckdb SQL: it is not valid Unicode text (lone surrogate U+D800 at position 8)"
    assert refusal_kind(f"refused: {reason}") == "syntax"  # junk, not hostile SQL


def test_refusals_do_not_quote_huge_pieces_of_the_query() -> None:
    reason = check_read_only("SELECT 1 FROM " + "'" + "x" * 15000 + ".csv'", "duckdb")
    assert reason is not None and len(reason) <= 300


def test_a_long_and_chain_still_gets_a_hardness_level() -> None:
    # 2,400 ANDs make a tree 2,400 deep; the hardness analysis walks it without recursion.
    sql = "SELECT Name FROM singer WHERE " + " AND ".join(["Age > 1"] * 2400)
    assert spider_hardness(sql) == "medium"


def test_deep_nesting_cannot_crash_a_process_with_a_raised_recursion_limit() -> None:
    # Without the nesting cap, 5000 levels of "(" overflowed the C stack (SIGSEGV) under a raised limit.
    code = (
        "import sys; sys.setrecursionlimit(100000)\n"
        "from nl2sql_align.sql.guard import check_read_only\n"
        "from nl2sql_align.sql.hardness import spider_hardness\n"
        "s = 'SELECT ' + '(' * 5000 + '1' + ')' * 5000\n"
        "print(check_read_only(s, 'duckdb')); print(spider_hardness(s))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr
    assert "nested too deeply" in out.stdout and out.stdout.strip().endswith(UNKNOWN)


@pytest.mark.parametrize("engine_name", ["sqlite", "duckdb"])
def test_800_parentheses_through_the_executor(executor, dbs, engine_name) -> None:
    for dialect in (None, "sqlite", "duckdb"):
        r = executor.execute(dbs[engine_name], PARENS_800, dialect)
        assert_well_formed(r)
        assert not r.ok and "nested too deeply" in r.error
        assert refusal_kind(r.error) == "syntax"
    # Deep but allowed nesting reaches the engine, whose own limit (SQLite 3.40: "parser stack overflow" at
    # 94 levels; later versions grow the stack) is an ordinary result, not a dead worker.
    r = executor.execute(dbs["sqlite"], "SELECT " + "(" * 99 + "1" + ")" * 99)
    assert_well_formed(r)
    assert r.rows == [(1,)] if r.ok else "parser stack overflow" in r.error
    assert executor.execute(dbs[engine_name], "SELECT count(*) FROM singer").rows == [(SINGERS,)]


def test_800_parentheses_through_the_reward_functions(engine, dbs) -> None:
    texts = [f"```sql\n{PARENS_800}\n```", PARENS_800, "```sql\n" + "(" * 5000, "(" * 19_999]
    completions_ = [[{"role": "assistant", "content": t}] for t in texts]
    funcs, _ = build_reward_functions(specs_for(None), engine)
    values = {f.__name__: _call(f, completions_, [GOLDS[0]] * 4, dbs["duckdb"]) for f in funcs}
    assert values == {"execution": [0.0] * 4, "executable": [0.0] * 4, "format": [0.1, 0.0, 0.0, 0.0]}


def test_800_parentheses_through_score_predictions(executor, dbs) -> None:
    from nl2sql_align.data import Example
    from nl2sql_align.evaluate import score_predictions

    examples = [
        Example(id=f"e{i}", question="How many singers?", sql=GOLDS[0], db=db, db_id="concert_singer")
        for i, db in enumerate([dbs["sqlite"], dbs["duckdb"]] * 2)
    ]
    predictions = [PARENS_800, PARENS_800, "SELECT count(*) FROM singer", "SELECT " + "NOT " * 4000 + "1"]
    rows = score_predictions(examples, predictions, executor=executor)
    assert [(r["correct"], r["executable"]) for r in rows] == [
        (False, False),
        (False, False),
        (True, True),
        (False, False),
    ]
    assert "nested too deeply" in rows[0]["error"]
    rows = score_predictions(examples[:2], [PARENS_800] * 2, executor=executor, pred_dialect="sqlite")
    assert [(r["correct"], r["executable"]) for r in rows] == [(False, False)] * 2


# --- the last lines of defence: whatever raises inside, the caller gets a refusal or an error result --------


def test_guard_fails_closed_when_its_checks_raise(monkeypatch) -> None:
    from nl2sql_align.sql import guard

    def broken(parsed, sql):
        raise IndexError("a corner of the tree the checks did not expect")

    monkeypatch.setattr(guard, "_refusal", broken)
    assert (
        check_read_only("SELECT 1", "sqlite")
        == "could not parse as sqlite SQL: IndexError: a corner of the tree the checks did not expect"
    )


def test_executor_refuses_when_the_guard_raises(executor, dbs, monkeypatch) -> None:
    from nl2sql_align.sql import sandbox

    def broken(sql, dialect, max_sql_chars):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(sandbox, "check_read_only", broken)
    results = executor.execute_many([(dbs["sqlite"], "SELECT 1"), (dbs["duckdb"], "SELECT 1", "sqlite")])
    assert [r.error for r in results] == [
        "refused: could not parse as sqlite SQL: maximum recursion depth exceeded"
    ] * 2
    assert all(r.rows is None for r in results)


def test_worker_answers_when_a_backend_raises(tmp_path) -> None:
    from collections import OrderedDict

    from nl2sql_align.sql.sandbox import _run_job

    class Exploding:
        def run(self, sql):
            raise RecursionError("maximum recursion depth exceeded while converting a result")

    path = str(tmp_path / "x.sqlite")
    r = _run_job(OrderedDict({path: Exploding()}), {}, path, "sqlite", "SELECT 1")
    assert_well_formed(r)
    assert r.error == "query failed: maximum recursion depth exceeded while converting a result"


# --- a GRPO step whose completions are all degenerate ------------------------------------------------------

DEGENERATE = [
    f"```sql\n{PARENS_800}\n```",
    "SELECT " + "(" * 800,
    "```sql\n" + "((((" * 150,
    "```sql\nSELECT 'unterminated\n```",
    "```sql\nSELECT " + "NOT " * 300 + "1\n```",
    "\x00```sql\nDROP TABLE customers;\n```",
    "",
    "```" * 100,
]


def test_grpo_step_with_only_degenerate_completions_logs_defined_rewards(tiny_model_dir, tmp_path, monkeypatch):
    # The model's generate() is replaced (a public transformers API that GRPOTrainer's generation path calls,
    # so no TRL internals are touched): every completion of the step is one of DEGENERATE, tokenized, then
    # TRL decodes, scores, computes advantages and takes an optimiser step on them as on any other batch.
    import torch
    from transformers import AutoTokenizer
    from transformers.generation.utils import GenerationMixin

    from nl2sql_align.stages import grpo
    from tests.conftest import stage_recipe

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.eos_token_id
    encoded = [tok(t, add_special_tokens=False)["input_ids"] + [eos] for t in DEGENERATE]
    calls = []

    def degenerate_generate(self, input_ids=None, attention_mask=None, **kwargs):
        rows = [encoded[(len(calls) * input_ids.shape[0] + i) % len(encoded)] for i in range(input_ids.shape[0])]
        calls.append(len(rows))
        width = max(len(r) for r in rows)
        completion = torch.tensor([r + [eos] * (width - len(r)) for r in rows], device=input_ids.device)
        return torch.cat([input_ids, completion], dim=1)

    monkeypatch.setattr(GenerationMixin, "generate", degenerate_generate)
    out = tmp_path / "grpo-degenerate"
    recipe = stage_recipe(
        "grpo",
        tiny_model_dir,
        out,
        "data.train_limit=4",
        'data.eval=""',
        "train.max_steps=1",
        "train.num_generations=4",
        "train.per_device_train_batch_size=8",
        "train.logging_steps=1",
        "reward.log_completions=8",
        "reward.timeout=1.0",
    )
    grpo.run(recipe)
    assert calls, "generation was not forced"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(x for x in rows if "loss" in x)
    assert math.isfinite(step["loss"])
    rewards = {k: v for k, v in step.items() if k.startswith("reward")}
    for key in ("rewards/execution/mean", "rewards/executable/mean", "rewards/format/mean", "reward"):
        assert key in rewards, key
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in rewards.values()), rewards
    # Only the NOT chain runs (and returns a wrong answer): 1 in 8 completions earns executable's 0.1.
    assert step["rewards/execution/mean"] == 0.0
    assert step["rewards/executable/mean"] == pytest.approx(0.1 / len(DEGENERATE))
    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(samples) == 8
    for s in samples:  # every completion got every reward: None here would be a reward lost to a crash
        assert set(s["rewards"]) == {"execution", "executable", "format"}
        assert all(isinstance(v, (int, float)) for v in s["rewards"].values()), s
        assert s["completion"] in DEGENERATE
        hostile = refusal_kind(s["verdict"]) == "refused"  # DROP TABLE: a miss from every component
        assert s["rewards"]["format"] == (0.1 if has_sql_block(s["completion"]) and not hostile else 0.0)


# --- last: nothing above changed the databases ------------------------------------------------------------


def test_databases_are_unchanged(executor, dbs, digests) -> None:
    for e, db in dbs.items():
        assert _digest(Path(db.path)) == digests[e]
        assert executor.execute(db, "SELECT count(*) FROM singer").rows == [(SINGERS,)]
    with sqlite3.connect(f"file:{dbs['sqlite'].path}?mode=ro", uri=True) as c:
        assert c.execute("SELECT count(*) FROM singer").fetchone() == (SINGERS,)
