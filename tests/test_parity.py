"""Parity with the official evaluators, verdict by verdict, on the real Spider sample (and the BIRD sample).

Each case is a gold query, a predicted query and a database, with the official verdict in three settings:
Spider test-suite execution match with DISTINCT removed (the official default), the same with keep_distinct,
and BIRD's `set(predicted_res) == set(ground_truth_res)`. Our verdicts come from `score_predictions` (and, end
to end, from `nl2sql-align eval` on predictions files in each format); a test fails listing every case where
ours differs from the official one. The predictions are realistic right and wrong answers: hand-written ones
per example (HAND_WRITTEN below, each with its verdicts and the official rule that decides them), and
mechanical mutations of every gold query (tests/fixtures/parity_mutations.jsonl).

How the expected verdicts were established: by running the official evaluators' own comparison code on every
case, outside this repository (none of that code is in the repository, and no test imports it):
  - Spider: taoyds/test-suite-sql-eval, `exec_eval.eval_exec_match` at commit
    14784c3546b8aac64dc6ce018ce923bc5efbc75d, with plug_value off and keep_distinct off and on; the DISTINCT
    strings (parity_remove_distinct.jsonl, TRICKY_DISTINCT) are its `remove_distinct(postprocess(sql))`
    (parse.py, sqlparse);
  - BIRD: `execute_model` / `execute_sql` of AlibabaResearch/DAMO-ConvAI `bird/llm/src/evaluation.py` in its
    strict revision (the one before commit 1743ec4, which sorts the cells of each row), the comparison that
    bird-bench/mini_dev `evaluation/evaluation_ex.py` (`calculate_ex`, commit
    47f116d828a45d139c0261cf804e610e031b572a) also makes;
on a private copy of the Spider sample (shared/data/spider_sample; the official code opens databases
read-write), and for the BIRD sample on the databases that `build_bird_sample_databases` below builds.

Data files: tests/fixtures/parity_mutations.jsonl (one case per line: id "<example>:<kind>", example index in
the Spider sample's dev.json, db_id, gold, pred, and the verdicts "spider", "spider_keep_distinct", "bird"),
parity_bird_sample.jsonl (question_id, db_id, gold, pred, "bird") and parity_remove_distinct.jsonl (each gold
query of the Spider sample as test-suite executes it).

To regenerate (after changing a case, the sample data or the database builder): check out test-suite-sql-eval
and BIRD's evaluation code at the commits above, install what they import (sqlparse, tqdm, func_timeout), and
run `python -m tests.regenerate_parity_fixtures --exec-eval CHECKOUT/exec_eval.py --bird-eval
CHECKOUT/evaluation/evaluation_ex.py`. That script (our code only: it imports the official modules from the
paths given) copies the Spider sample to a temporary folder, generates the mutations, runs the official
`eval_exec_match` and `execute_model` on every case, rewrites the three fixtures, and prints every verdict
written in this file (HAND_WRITTEN, TRICKY_DISTINCT, ROW_CAP_OFFICIAL) that the official code contradicts;
those are corrected by hand. Review the fixtures' diff: a changed verdict is a change in the official answer.

Where the official scripts deliberately differ from ours (README, "Evaluation"), the case is left out below
with a comment saying why.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import NamedTuple

import pytest

from nl2sql_align.data import load_examples
from nl2sql_align.evaluate import score_predictions
from nl2sql_align.predictions import write_predictions
from nl2sql_align.sql import SQLExecutor, as_scored
from tests.conftest import BIRD, SPIDER

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The settings, by their names in the fixtures: (metric, keep_distinct).
SETTINGS = {"spider": ("spider", False), "spider_keep_distinct": ("spider", True), "bird": ("bird", False)}


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()]


def db_path(db_id: str) -> Path:
    return SPIDER / "database" / db_id / f"{db_id}.sqlite"


@pytest.fixture(scope="module")
def examples():
    return load_examples(f"spider:{SPIDER}")


@pytest.fixture(scope="module")
def executor():
    with SQLExecutor(workers=2, timeout=10.0) as ex:
        yield ex


@pytest.fixture(scope="module")
def mutation_cases(examples) -> list[dict]:
    cases = read_jsonl("parity_mutations.jsonl")
    # The fixture is about this data: every case's gold and database are those of its example.
    stale = [
        c["id"] for c in cases if (examples[c["example"]].sql, examples[c["example"]].db_id) != (c["gold"], c["db_id"])
    ]
    assert not stale, f"parity_mutations.jsonl no longer matches the Spider sample (regenerate it): {stale[:10]}"
    return cases


def by_example(cases: list[dict]) -> dict[int, list[dict]]:
    """The mutation cases of each example, in the order they were generated (gold first)."""
    out: dict[int, list[dict]] = {}
    for c in cases:
        out.setdefault(c["example"], []).append(c)
    return out


# ---------------------------------------------------------------------------------------------------------
# Hand-written predictions on the Spider sample (dev.json indexes; dev_gold.sql has the gold queries), four
# databases, with the official verdicts: spider (test-suite, DISTINCT removed), keep (test-suite with
# keep_distinct) and bird (set equality), and the official rule that decides them.


class Hand(NamedTuple):
    example: int
    pred: str
    spider: bool
    keep: bool
    bird: bool
    why: str


Y, N = True, False

HAND_WRITTEN: list[Hand] = [
    # concert_singer
    Hand(
        0,
        "SELECT count(singer_id) FROM singer",
        Y,
        Y,
        Y,
        "same one cell (6): only results are compared, never the SQL text or column names",
    ),
    Hand(
        0,
        "SELECT count(*) FROM concert",
        Y,
        Y,
        Y,
        "wrong table, but concert also has 6 rows: execution match sees only the result",
    ),
    Hand(0, "SELECT count(*) FROM singer WHERE age > 30", N, N, N, "extra condition: 4 against 6"),
    Hand(
        2,
        "SELECT name, country, age FROM singer ORDER BY age ASC",
        N,
        N,
        Y,
        "the gold has ORDER BY, so test-suite compares rows in order; BIRD's sets ignore order",
    ),
    Hand(
        2,
        "SELECT country, name, age FROM singer ORDER BY age DESC",
        Y,
        Y,
        N,
        "columns swapped: test-suite's result_eq tries column permutations; BIRD compares tuples as they are",
    ),
    Hand(
        2,
        "SELECT name, country, age FROM singer",
        N,
        N,
        Y,
        "ORDER BY dropped: another row order while the gold has ORDER BY; same set for BIRD",
    ),
    Hand(
        2,
        "SELECT name, country, age FROM singer ORDER BY age DESC LIMIT 3",
        N,
        N,
        N,
        "LIMIT added: 3 rows against 6, not equal even as sets",
    ),
    Hand(
        2,
        "SELECT name, country, age, singer_id FROM singer ORDER BY age DESC",
        N,
        N,
        N,
        "extra column: 4 columns against 3",
    ),
    Hand(
        4,
        "SELECT max(age), min(age), avg(age) FROM singer WHERE country = 'France'",
        Y,
        Y,
        N,
        "aggregates permuted: one row with its cells permuted, a column permutation (test-suite only)",
    ),
    Hand(
        4,
        "SELECT avg(age), min(age), max(age) FROM singer WHERE country = 'france'",
        N,
        N,
        N,
        "SQLite's = is case-sensitive: a row of NULLs",
    ),
    Hand(
        4,
        'SELECT avg(age), min(age), max(age) FROM singer WHERE country = "France"',
        Y,
        Y,
        Y,
        "SQLite reads a double-quoted name that is no column as a string: the same query",
    ),
    Hand(
        4,
        "SELECT avg(age), min(age), max(age) FROM singer WHERE country = 'France' AND age > = 0",
        Y,
        Y,
        N,
        "test-suite's postprocess joins '> =' before running; BIRD runs it as written: a syntax error",
    ),
    Hand(
        4,
        "SELECT avg(age), min(age), max(age) FROM singer WHERE country = 'France' AND YEAR(CURDATE()) > 2000",
        Y,
        Y,
        N,
        "test-suite's replace_cur_year makes YEAR(CURDATE()) 2020; BIRD: SQLite has no CURDATE, an error",
    ),
    Hand(
        6,
        "SELECT song_name, song_release_year FROM singer ORDER BY age DESC LIMIT 1",
        N,
        N,
        N,
        "direction flipped: the oldest singer's song, not the youngest's",
    ),
    Hand(
        6,
        "SELECT song_name, song_release_year FROM singer ORDER BY age LIMIT 2",
        N,
        N,
        N,
        "LIMIT changed: 2 rows against 1",
    ),
    Hand(
        6,
        "SELECT song_name, song_release_year FROM singer WHERE age = (SELECT min(age) FROM singer)",
        Y,
        Y,
        Y,
        "a rewrite with the same single row",
    ),
    Hand(
        8,
        "SELECT country FROM singer WHERE age > 20",
        Y,
        N,
        Y,
        "DISTINCT dropped: by default test-suite removes DISTINCT from the gold too (6 rows each); kept, 6 "
        "rows against 3; BIRD's sets ignore duplicates",
    ),
    Hand(
        8,
        "SELECT country FROM singer WHERE age > 20 GROUP BY country",
        N,
        Y,
        Y,
        "GROUP BY for DISTINCT: the gold without DISTINCT has 6 rows, this 3 (multisets differ); with "
        "keep_distinct, and as sets, the same 3 countries (no ORDER BY in the gold: order ignored)",
    ),
    Hand(
        8,
        "SELECT DISTINCT country FROM singer WHERE age >= 20",
        Y,
        Y,
        Y,
        "boundary changed, but no singer is 20: same rows",
    ),
    Hand(
        10,
        "SELECT count(*), country FROM singer GROUP BY country",
        Y,
        Y,
        N,
        "columns swapped: a permutation for test-suite, different tuples for BIRD",
    ),
    Hand(
        10,
        "SELECT country, count(DISTINCT name) FROM singer GROUP BY country",
        Y,
        Y,
        Y,
        "names are unique, so the counts agree (with or without the DISTINCT)",
    ),
    Hand(10, "SELECT country, sum(age) FROM singer GROUP BY country", N, N, N, "aggregate changed: other values"),
    Hand(
        14,
        "SELECT location, name FROM stadium WHERE capacity >= 5000 AND capacity <= 10000",
        Y,
        Y,
        Y,
        "BETWEEN rewritten; no stadium is in range: two empty results are equal",
    ),
    Hand(
        14,
        "SELECT location, name FROM stadium WHERE capacity > 5000 AND capacity < 10000",
        Y,
        Y,
        Y,
        "bounds exclusive, still empty against empty: equal",
    ),
    Hand(
        20,
        "SELECT count(*) FROM concert WHERE year IN (2014, 2015)",
        Y,
        Y,
        Y,
        "year is a text column; SQLite's affinity converts 2014 to '2014' in the comparison: same count",
    ),
    Hand(20, "SELECT count(*) FROM concert WHERE year IN ('2014', '2015')", Y, Y, Y, "same count"),
    Hand(20, "SELECT count(*) FROM concert WHERE year = 2014 AND year = 2015", N, N, N, "OR -> AND: 0 against 6"),
    Hand(
        22,
        "SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id GROUP BY T2.name",
        Y,
        Y,
        Y,
        "same 5 rows in another order; the gold has no ORDER BY, so order is ignored",
    ),
    Hand(
        22,
        "SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.concert_id = T2.stadium_id GROUP BY T2.stadium_id",
        N,
        N,
        N,
        "wrong join: 6 rows against 5",
    ),
    Hand(
        28,
        "SELECT name FROM stadium WHERE stadium_id IN (SELECT stadium_id FROM concert)",
        N,
        N,
        N,
        "NOT IN -> IN: the other stadiums",
    ),
    Hand(
        28,
        "SELECT name FROM stadium EXCEPT SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id",
        Y,
        Y,
        Y,
        "same 4 names, sorted by EXCEPT; no ORDER BY in the gold",
    ),
    Hand(
        30,
        "SELECT country FROM singer WHERE age > 40 UNION SELECT country FROM singer WHERE age < 30",
        N,
        N,
        N,
        "UNION for INTERSECT: 2 rows against 1",
    ),
    Hand(
        43,
        "select count(*) from concert where stadium_id = (select stadium_id from stadium order by capacity asc limit 1)",
        Y,
        Y,
        Y,
        "wrong stadium, but no concert is at either: 0 = 0",
    ),
    Hand(
        43,
        "SELECT count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id WHERE T2.capacity = (SELECT max(capacity) FROM stadium)",
        Y,
        Y,
        Y,
        "a rewrite, 0 = 0",
    ),
    Hand(0, "SELECT nope FROM singer", N, N, N, "an execution error is wrong in every setting"),
    # pets_1
    Hand(45, "SELECT count(*) FROM pets WHERE weight > 10.0", Y, Y, Y, "same count"),
    Hand(
        45,
        "SELECT count(*) FROM pets WHERE NOT weight < = 10",
        Y,
        Y,
        N,
        "'< =' split: joined by test-suite's postprocess (same count); BIRD runs it as written: a syntax error",
    ),
    Hand(45, "SELECT count(*) FROM pets WHERE weight < 10", N, N, N, "1 against 2"),
    Hand(
        49,
        "SELECT petType, max(weight) FROM pets GROUP BY petType",
        Y,
        Y,
        N,
        "columns swapped: a permutation for test-suite, different tuples for BIRD",
    ),
    Hand(49, "SELECT min(weight), petType FROM pets GROUP BY petType", N, N, N, "aggregate changed"),
    Hand(
        55,
        "SELECT count(pettype) FROM pets",
        Y,
        N,
        N,
        "the gold's count(DISTINCT pettype) loses its DISTINCT by default (3 = 3); kept, and in BIRD, 2 against 3",
    ),
    Hand(
        55, "SELECT count(*) FROM (SELECT DISTINCT pettype FROM pets)", Y, Y, Y, "kept: 2 = 2; removed from both: 3 = 3"
    ),
    Hand(
        57,
        "SELECT T1.Fname FROM student AS T1 JOIN has_pet AS T2 ON T1.stuid = T2.stuid JOIN pets AS T3 ON T3.petid = T2.petid WHERE T3.pettype = 'cat' OR T3.pettype = 'dog'",
        Y,
        N,
        Y,
        "DISTINCT dropped: a duplicate that counts only when DISTINCT is kept (3 rows against 2)",
    ),
    Hand(
        79,
        "SELECT T1.stuid, count(*) FROM student AS T1 JOIN has_pet AS T2 ON T1.stuid = T2.stuid GROUP BY T1.stuid",
        Y,
        Y,
        N,
        "columns swapped: a permutation for test-suite, different tuples for BIRD",
    ),
    Hand(
        85,
        "select avg(age) from student where stuid in (select stuid from has_pet)",
        N,
        N,
        N,
        "NOT IN -> IN: another average",
    ),
    Hand(
        85,
        "SELECT avg(age) FROM student WHERE NOT EXISTS (SELECT 1 FROM has_pet WHERE has_pet.stuid = student.stuid)",
        Y,
        Y,
        Y,
        "a rewrite with the same value",
    ),
    # car_1
    Hand(87, "SELECT count(*) FROM CONTINENTS", Y, Y, Y, "no trailing semicolon: the same result"),
    Hand(87, "SELECT count(*) FROM countries", N, N, N, "wrong table: 15 against 5"),
    Hand(
        95,
        "SELECT T1.Model FROM CAR_NAMES AS T1 JOIN CARS_DATA AS T2 ON T1.MakeId = T2.Id ORDER BY CAST(T2.horsepower AS INTEGER) ASC LIMIT 1",
        N,
        N,
        N,
        "horsepower is stored as text: the gold sorts strings, the cast numbers (another model)",
    ),
    Hand(
        95,
        "SELECT T1.Model FROM CAR_NAMES AS T1 JOIN CARS_DATA AS T2 ON T1.MakeId = T2.Id ORDER BY T2.horsepower DESC LIMIT 1",
        N,
        N,
        N,
        "direction flipped: another model",
    ),
    Hand(
        101,
        "SELECT T1.Year, T2.Make FROM CARS_DATA AS T1 JOIN CAR_NAMES AS T2 ON T1.Id = T2.MakeId WHERE T1.Year = (SELECT min(YEAR) FROM CARS_DATA)",
        Y,
        Y,
        N,
        "columns swapped (35 rows): a permutation for test-suite, different tuples for BIRD",
    ),
    Hand(117, "SELECT sum(mpg) / count(mpg) FROM CARS_DATA WHERE Cylinders = 4", Y, Y, Y, "the same float"),
    Hand(117, "SELECT avg(mpg) FROM CARS_DATA WHERE Cylinders = 6", N, N, N, "literal changed: another value"),
    Hand(
        121,
        "SELECT Model, Maker FROM MODEL_LIST",
        Y,
        Y,
        N,
        "columns swapped: a permutation for test-suite, different tuples for BIRD",
    ),
    Hand(
        121,
        "SELECT Maker, Model FROM MODEL_LIST ORDER BY Model",
        Y,
        Y,
        Y,
        "order matters only when the gold has ORDER BY; a prediction's own ORDER BY does not count",
    ),
    Hand(
        153,
        "select year from cars_data where weight between 3000 and 4000",
        Y,
        N,
        Y,
        "DISTINCT dropped: 107 rows against 13 unless DISTINCT is removed from the gold too; equal as sets",
    ),
    Hand(
        161,
        "select count(*) from countries as t1 join car_makers as t2 on t1.countryid = t2.country group by t1.countryid having count(*) >= 2",
        N,
        N,
        N,
        "boundary changed: 6 rows against 4",
    ),
    Hand(
        173,
        "SELECT CountryName FROM countries WHERE countryId NOT IN (SELECT Country FROM CAR_MAKERS)",
        Y,
        Y,
        Y,
        "same 7 countries in another order; no ORDER BY in the gold",
    ),
    Hand(
        173,
        "SELECT CountryName FROM countries WHERE countryId NOT IN (SELECT CAST(Country AS INTEGER) FROM CAR_MAKERS)",
        Y,
        Y,
        Y,
        "same 7 countries",
    ),
    # flight_2 (airport codes are stored with a leading space, so many gold results are empty)
    Hand(
        179,
        "SELECT Country FROM AIRLINES WHERE Airline = 'JetBlue Airways'",
        Y,
        Y,
        Y,
        "single quotes for the gold's double quotes: the same string in SQLite",
    ),
    Hand(179, "SELECT Country FROM AIRLINES WHERE Airline LIKE 'JetBlue%'", Y, Y, Y, "the same one row"),
    Hand(
        179,
        "SELECT Country FROM AIRLINES WHERE Airline = 'Jetblue Airways'",
        N,
        N,
        N,
        "case differs: = is case-sensitive, nothing against one row",
    ),
    Hand(
        187,
        "SELECT count(DISTINCT Airline) FROM AIRLINES",
        Y,
        Y,
        Y,
        "airline names are unique: the same count, DISTINCT removed or kept",
    ),
    Hand(
        203,
        "SELECT count(*) FROM FLIGHTS WHERE SourceAirport = ' APG'",
        N,
        N,
        N,
        "the stored value, not the gold's: the gold counts 0 ('APG' never matches), this 11",
    ),
    Hand(
        221,
        "SELECT T1.City FROM AIRPORTS AS T1 JOIN FLIGHTS AS T2 ON T1.AirportCode = T2.DestAirport GROUP BY T1.City ORDER BY count(*) DESC LIMIT 3",
        Y,
        Y,
        Y,
        "the join matches nothing (leading spaces): empty against empty is equal, whatever the LIMIT",
    ),
    Hand(
        221,
        "SELECT T1.City FROM AIRPORTS AS T1 JOIN FLIGHTS AS T2 ON T1.AirportCode = T2.DestAirport GROUP BY T1.City ORDER BY count(*) ASC LIMIT 1",
        Y,
        Y,
        Y,
        "empty against empty, whatever the order",
    ),
    Hand(
        245,
        "SELECT DISTINCT T1.FlightNo FROM FLIGHTS AS T1 JOIN AIRLINES AS T2 ON T2.uid = T1.Airline WHERE T2.Airline = 'United Airlines'",
        Y,
        Y,
        Y,
        "flight numbers are unique: the same 100 rows, DISTINCT removed or kept",
    ),
    Hand(
        245,
        "SELECT T1.FlightNo FROM FLIGHTS AS T1 JOIN AIRLINES AS T2 ON T2.uid = T1.Airline WHERE T2.Airline = 'United Airlines' ORDER BY T1.FlightNo DESC",
        Y,
        Y,
        Y,
        "the gold has no ORDER BY: row order is not compared",
    ),
    Hand(
        247,
        "SELECT FlightNo FROM FLIGHTS WHERE SourceAirport = 'XYZ'",
        Y,
        Y,
        Y,
        "an empty result against the gold's empty one: two empty results are equal",
    ),
    Hand(247, "SELECT FlightNo FROM FLIGHTS WHERE SourceAirport = ' APG'", N, N, N, "11 rows against none"),
    Hand(
        257,
        "SELECT AirportName FROM Airports WHERE AirportCode NOT IN (SELECT SourceAirport FROM Flights)",
        Y,
        Y,
        Y,
        "no code in FLIGHTS matches (leading spaces), so both keep all 100 airports",
    ),
]

# Left out on purpose, because the official code behaves in a way we chose not to copy (README, "Evaluation"):
#  - "" (an empty prediction): sqlparse.parse("")[0] raises IndexError, so test-suite's remove_distinct crashes
#    the whole run; with keep_distinct, sqlite runs "" as nothing and an empty gold result "matches" it. Ours
#    scores an empty prediction as a failed query.
#  - "SELECT count(*) FROM singer; DROP TABLE singer": test-suite's remove_distinct keeps only the first
#    statement, so the official harness scores it right; our sandbox runs exactly one read-only statement and
#    refuses it. Under keep_distinct both say wrong (sqlite3 refuses two statements).
#  - "DELETE FROM singer WHERE 0" (or any write): the official harnesses execute it on a read-write
#    connection (an empty result, "equal" to an empty gold); ours refuses anything but a query.
#  - queries that run past the timeout: test-suite's asyncio.wait_for never fires (the call blocks), BIRD's
#    func_timeout leaves the thread running; ours stops the query at --timeout and scores it wrong.

# test-suite's remove_distinct(postprocess(sql)) (sqlparse tokens) on SQL where tokenizers could disagree.
TRICKY_DISTINCT: list[tuple[str, str]] = [
    ("SELECT count(DISTINCT(name)) FROM singer", "SELECT count((name)) FROM singer"),
    # The keyword goes, with the space on each side left; the string and the comment keep theirs.
    (
        "select Distinct name FROM singer WHERE name = 'distinct' -- distinct",
        "select  name FROM singer WHERE name = 'distinct' -- distinct",
    ),
    # Quoted identifiers and comments are single tokens: nothing is removed.
    (
        'SELECT "distinct", `distinct`, [distinct] FROM t /* DISTINCT */',
        'SELECT "distinct", `distinct`, [distinct] FROM t /* DISTINCT */',
    ),
    (
        "SELECT name FROM singer WHERE age > = 30 AND age < = 40 AND age ! = 35",
        "SELECT name FROM singer WHERE age >= 30 AND age <= 40 AND age != 35",
    ),
]


# ---------------------------------------------------------------------------------------------------------
# Scoring ours against the recorded official verdicts


def ours(examples, preds, executor, metric: str, keep_distinct: bool = False) -> list[bool]:
    rows = score_predictions(examples, preds, metric=metric, keep_distinct=keep_distinct, executor=executor)
    assert [r["index"] for r in rows] == list(range(len(preds)))
    return [r["correct"] for r in rows]


def check_parity(cases: list[tuple[str, object, str, dict[str, bool]]], executor) -> None:
    """Score (label, example, prediction, official verdicts) cases in the three settings; fail with every
    case where ours differs from the recorded official verdict."""
    exs = [ex for _, ex, _, _ in cases]
    preds = [p for _, _, p, _ in cases]
    mismatches = []
    for name, (metric, keep) in SETTINGS.items():
        mine = ours(exs, preds, executor, metric, keep)
        for (label, ex, p, official), m in zip(cases, mine, strict=True):
            if official[name] != m:
                mismatches.append(
                    f"[{name}] {label} ({ex.db_id})\n  gold: {ex.sql}\n  pred: {p}\n  official={official[name]} ours={m}"
                )
    assert not mismatches, f"{len(mismatches)} verdicts differ from the official evaluator:\n" + "\n".join(mismatches)


def test_hand_written_predictions_agree_with_the_official_evaluators(examples, executor):
    cases = [
        (
            f"HAND_WRITTEN {h.example} ({h.why})",
            examples[h.example],
            h.pred,
            {"spider": h.spider, "spider_keep_distinct": h.keep, "bird": h.bird},
        )
        for h in HAND_WRITTEN
    ]
    assert len(cases) >= 40 and len({ex.db_id for _, ex, _, _ in cases}) == 4
    for name in SETTINGS:
        right = sum(v[name] for *_, v in cases)
        assert 0 < right < len(cases), f"{name}: the cases must contain both right and wrong predictions"
    # The metrics really differ on these cases: column order (Spider permutes, BIRD does not), duplicates and
    # DISTINCT (BIRD compares sets; Spider drops DISTINCT unless kept).
    column = {name: [v[name] for *_, v in cases] for name in SETTINGS}
    assert column["spider"] != column["bird"] and column["spider"] != column["spider_keep_distinct"]
    check_parity(cases, executor)


def test_mutations_of_every_gold_agree_with_the_official_evaluators(examples, executor, mutation_cases):
    groups = by_example(mutation_cases)
    assert sorted(groups) == list(range(len(examples)))  # every gold query, mutated
    assert len({c["id"] for c in mutation_cases}) == len(mutation_cases) > 5 * len(examples)
    assert all(g[0]["pred"] == g[0]["gold"] for g in groups.values())  # the first case is the gold itself
    cases = [(c["id"], examples[c["example"]], c["pred"], c) for c in mutation_cases]
    for name in SETTINGS:
        right = sum(c[name] for c in mutation_cases)
        assert 0 < right < len(cases)
    check_parity(cases, executor)


def test_remove_distinct_matches_the_official_on_every_gold(examples):
    # Our DISTINCT removal uses sqlglot's tokenizer, the official one sqlparse's: same text on every gold of
    # the sample and on the tricky cases.
    golds = read_jsonl("parity_remove_distinct.jsonl")
    assert [(g["example"], g["sql"]) for g in golds] == [(i, ex.sql) for i, ex in enumerate(examples)]
    cases = [(g["sql"], g["scored"]) for g in golds] + TRICKY_DISTINCT
    assert any(sql != scored for sql, scored in cases)
    wrong = [
        (sql, expected, mine)
        for sql, expected in cases
        if (mine := as_scored(sql, metric="spider", dialect="sqlite")) != expected
    ]
    assert not wrong, "\n".join(f"{sql!r}\n  official: {e!r}\n  ours:     {m!r}" for sql, e, m in wrong)


# ---------------------------------------------------------------------------------------------------------
# End to end: `nl2sql-align eval` on predictions files, against the official verdicts


def _cli(*args: str):
    from tests.test_cli import cli

    return cli(*args)


def _per_example(report: Path) -> list[bool]:
    return [json.loads(line)["correct"] for line in (report / "per_example.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_eval_command_on_a_spider_text_file_agrees_example_by_example(
    examples, mutation_cases, tmp_path: Path, setting
):
    # One prediction per example (a different kind of mutation for each), written in Spider's text format.
    groups = by_example(mutation_cases)
    picked = [groups[i][i % len(groups[i])] for i in range(len(examples))]
    pred_file = tmp_path / "pred.sql"
    write_predictions(pred_file, [c["pred"] for c in picked], [ex.db_id for ex in examples])
    metric, keep = SETTINGS[setting]
    _cli(
        "eval",
        "--data",
        f"spider:{SPIDER}",
        "--predictions",
        str(pred_file),
        "--report",
        str(tmp_path / "r"),
        "--metric",
        metric,
        *(["--keep-distinct"] if keep else []),
    )
    official = [c[setting] for c in picked]
    assert _per_example(tmp_path / "r") == official
    assert 0 < sum(official) < len(official)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["ex"] == round(100 * sum(official) / len(official), 2)


# ---------------------------------------------------------------------------------------------------------
# BIRD layout: predict_dev.json and dev_gold.sql, scored by `eval --data bird:DIR`. BIRD's own script pairs
# the i-th value of predict_dev.json with the i-th line of dev_gold.sql and runs both on the database the
# prediction names; our writer puts the keys in order, so its verdict for each pair is the recorded one.


def _bird_layout(root: Path, records: list[dict], databases: dict[str, Path]) -> None:
    root.mkdir(parents=True)
    (root / "dev.json").write_text(json.dumps(records, indent=2))
    (root / "dev_gold.sql").write_text("".join(f"{r['SQL']}\t{r['db_id']}\n" for r in records))
    for db_id, src in databases.items():
        (root / "dev_databases" / db_id).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "dev_databases" / db_id / f"{db_id}.sqlite")


def _bird_eval(root: Path, preds: list[str], tmp_path: Path) -> list[bool]:
    records = json.loads((root / "dev.json").read_text())
    pred_file = tmp_path / "pred" / "predict_dev.json"
    write_predictions(pred_file, preds, [r["db_id"] for r in records])
    _cli(
        "eval",
        "--data",
        f"bird:{root}",
        "--predictions",
        str(pred_file),
        "--metric",
        "bird",
        "--report",
        str(tmp_path / "r"),
    )
    return _per_example(tmp_path / "r")


def test_bird_layout_on_spider_databases_agrees_with_bird_evaluation(examples, mutation_cases, tmp_path: Path):
    # BIRD-shaped records over two real databases (the BIRD sample ships no SQLite files).
    groups = by_example(mutation_cases)
    picked = [i for i, ex in enumerate(examples) if ex.db_id in ("concert_singer", "pets_1")][::4]
    cases = [groups[i][j % 5] for j, i in enumerate(picked)]
    records = [
        {
            "question_id": j,
            "db_id": examples[i].db_id,
            "question": examples[i].question,
            "evidence": "",
            "SQL": examples[i].sql,
            "difficulty": "simple",
        }
        for j, i in enumerate(picked)
    ]
    root = tmp_path / "bird"
    _bird_layout(root, records, {d: db_path(d) for d in ("concert_singer", "pets_1")})
    official = [c["bird"] for c in cases]
    assert _bird_eval(root, [c["pred"] for c in cases], tmp_path) == official
    assert 0 < sum(official) < len(official)


def _database_from_schema(entry: dict, path: Path, rows_per_table: int = 4) -> None:
    """A SQLite file with the tables of a BIRD dev_tables.json entry and a few deterministic rows."""
    conn = sqlite3.connect(path)
    tables = entry["table_names_original"]
    for t, table in enumerate(tables):
        cols = [
            (c, ty)
            for (ti, c), ty in zip(entry["column_names_original"], entry["column_types"], strict=True)
            if ti == t
        ]
        sql_types = {"integer": "INTEGER", "real": "REAL", "number": "REAL", "date": "DATE", "datetime": "DATETIME"}
        conn.execute(
            f'CREATE TABLE "{table}" (' + ", ".join(f'"{c}" {sql_types.get(ty, "TEXT")}' for c, ty in cols) + ")"
        )
        for i in range(1, rows_per_table + 1):
            values = [i if ty == "integer" else i + 0.5 if ty in ("real", "number") else f"{c} {i}" for c, ty in cols]
            conn.execute(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(cols))})', values)
    conn.commit()
    conn.close()


def build_bird_sample_databases(bird: Path, db_root: Path) -> None:
    """db_root/<db_id>/<db_id>.sqlite for every database of `bird`'s dev_tables.json (the BIRD sample ships
    no SQLite files), with a few rows each so that every gold query runs. The recorded BIRD-sample verdicts
    were made on these databases: change this, regenerate parity_bird_sample.jsonl."""
    for entry in json.loads((bird / "dev_tables.json").read_text()):
        (db_root / entry["db_id"]).mkdir(parents=True)
        _database_from_schema(entry, db_root / entry["db_id"] / f"{entry['db_id']}.sqlite")


def test_bird_sample_predictions_agree_with_bird_evaluation(tmp_path: Path):
    # The real BIRD sample (dev.json, its gold SQL and db_ids), on databases built from its dev_tables.json.
    root = tmp_path / "bird_sample"
    root.mkdir()
    shutil.copy(BIRD / "dev.json", root / "dev.json")
    records = json.loads((root / "dev.json").read_text())
    (root / "dev_gold.sql").write_text("".join(f"{r['SQL']}\t{r['db_id']}\n" for r in records))
    build_bird_sample_databases(BIRD, root / "dev_databases")
    cases = read_jsonl("parity_bird_sample.jsonl")
    assert [(c["question_id"], c["db_id"], c["gold"]) for c in cases] == [
        (r["question_id"], r["db_id"], r["SQL"]) for r in records
    ], "parity_bird_sample.jsonl no longer matches the BIRD sample (regenerate it)"
    official = [c["bird"] for c in cases]
    mine = _bird_eval(root, [c["pred"] for c in cases], tmp_path)
    wrong = [
        f"{c['question_id']}: pred {c['pred']!r} official={c['bird']} ours={m}"
        for c, m in zip(cases, mine, strict=True)
        if c["bird"] != m
    ]
    assert not wrong, "\n".join(wrong)
    assert any(official) and not all(official)


# ---------------------------------------------------------------------------------------------------------
# Results longer than the executor's row cap

ROW_CAP_GOLD = "SELECT stuid FROM student ORDER BY stuid LIMIT 5"  # exactly 5 rows
ROW_CAP_PRED = "SELECT stuid FROM student ORDER BY stuid"  # all 34 students, in the same order
# test-suite's result_eq: 34 rows against 5, "if length is not the same", wrong.
ROW_CAP_OFFICIAL = False


def test_a_result_cut_at_the_row_cap_never_equals_one_that_was_not(tmp_path: Path):
    # Under a row cap of 5 the prediction arrives cut to the same 5 rows as the gold; it must stay wrong.
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "sql": ROW_CAP_GOLD, "db": str(db_path("pets_1"))}) + "\n")
    examples = load_examples(str(data))
    with SQLExecutor(workers=1, timeout=10.0, row_cap=5) as ex:
        assert ours(examples, [ROW_CAP_PRED], ex, "spider") == [ROW_CAP_OFFICIAL]
        assert ours(examples, [ROW_CAP_GOLD], ex, "spider") == [True]
