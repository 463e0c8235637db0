"""The embedded demo dataset: determinism, executable non-empty gold SQL, clean splits, SQL coverage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from nl2sql_align.data import demo
from nl2sql_align.data.demo import DEMO_VERSION, build_demo, demo_dir, demo_examples

REPO = Path(__file__).resolve().parents[1]
_BUILD = (
    "import sys; from pathlib import Path; from nl2sql_align.data.demo import build_demo; build_demo(Path(sys.argv[1]))"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """Two independent builds of the demo: one here, one in a fresh process with another hash seed (so that
    nothing may depend on set iteration order or on in-process caches)."""
    base = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", _BUILD, str(base / "b")], check=True, cwd=REPO, env=env, timeout=120)
    return build_demo(base / "a"), base / "b"


@pytest.fixture(scope="module")
def examples() -> dict[str, list[dict]]:
    return demo_examples()


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _connect(root: Path, db_id: str) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(root / "databases" / f"{db_id}.duckdb"), read_only=True)


# ---------------------------------------------------------------------------------------------------------
# Build layout and determinism


def test_build_layout(built):
    root, _ = built
    assert (root / ".complete").read_text(encoding="utf-8").strip() == DEMO_VERSION
    assert sorted(p.name for p in (root / "databases").iterdir()) == sorted(f"{d}.duckdb" for d in demo.DB_IDS)
    for split in demo.SPLITS:
        lines = (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        for line in lines:
            assert list(json.loads(line)) == ["id", "db", "question", "sql", "hardness"]
    # The demo is meant to stay small: well under the ~2 MB budget for all databases together.
    size = sum(p.stat().st_size for p in (root / "databases").iterdir())
    assert size < 2 * 1024 * 1024, size
    # Nothing left behind next to the build.
    assert sorted(p.name for p in root.parent.iterdir()) == ["a", "b"]


def test_builds_are_identical(built, examples):
    a, b = built
    for split in demo.SPLITS:
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
        # The in-memory records are exactly what was written, in the same order.
        assert _read_jsonl(a / f"{split}.jsonl") == examples[split]


def test_demo_examples_returns_fresh_copies(examples):
    again = demo_examples()
    assert again == examples
    again["train"][0]["sql"] = "mutated"
    assert demo_examples()["train"][0]["sql"] != "mutated"


def test_every_gold_query_is_usable_and_deterministic(built, examples):
    """Every gold query runs, has a non-trivial answer, no tie at a LIMIT, and gives the same rows on both builds."""
    a, b = built
    for db_id in demo.DB_IDS:
        con_a, con_b = _connect(a, db_id), _connect(b, db_id)
        try:
            for split in demo.SPLITS:
                for ex in (e for e in examples[split] if e["db"] == db_id):
                    rows = con_a.execute(ex["sql"]).fetchall()
                    assert rows, ex
                    assert not (len(rows) == 1 and all(v is None or v == 0 for v in rows[0])), ex
                    assert demo._usable(con_a, ex["sql"]), ex
                    # Without ORDER BY the row order is the engine's business; compare as multisets.
                    assert sorted(map(repr, rows)) == sorted(map(repr, con_b.execute(ex["sql"]).fetchall())), ex
        finally:
            con_a.close()
            con_b.close()


def test_databases_have_realistic_sizes(built):
    root, _ = built
    for db_id in demo.DB_IDS:
        con = _connect(root, db_id)
        try:
            tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_oid").fetchall()]
            assert 3 <= len(tables) <= 4, (db_id, tables)
            for t in tables:
                (n,) = con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()
                assert 8 <= n <= 300, (db_id, t, n)
                ncols = len(con.execute(f"SELECT * FROM {t} LIMIT 0").description)
                assert 3 <= ncols <= 6, (db_id, t, ncols)
        finally:
            con.close()


# ---------------------------------------------------------------------------------------------------------
# Splits


def test_split_sizes_ids_and_labels(examples):
    train, dev = examples["train"], examples["dev"]
    assert len(train) >= 500 and len(dev) >= 100
    ids = [e["id"] for e in train + dev]
    assert len(ids) == len(set(ids))
    for split, recs in examples.items():
        for e in recs:
            kind = "-(new_values|new_combination|value_variant)" if split == "test" else ""
            assert re.fullmatch(rf"{e['db']}-{split}-\d{{4}}{kind}", e["id"]), e
            assert e["hardness"] in demo.HARDNESS_LEVELS, e
    assert len({e["db"] for e in train}) >= 3 and {e["db"] for e in dev} == {e["db"] for e in train}
    for db_id in demo.DB_IDS:
        assert sum(e["db"] == db_id for e in train) >= 150 and sum(e["db"] == db_id for e in dev) >= 30
    for split in ("train", "dev"):
        assert set(Counter(e["hardness"] for e in examples[split])) == set(demo.HARDNESS_LEVELS), split


def test_no_dev_question_in_train(examples):
    train_questions = [e["question"] for e in examples["train"]]
    dev_questions = [e["question"] for e in examples["dev"]]
    assert len(set(train_questions)) == len(train_questions)
    assert len(set(dev_questions)) == len(dev_questions)
    assert not set(dev_questions) & set(train_questions)


def test_dev_templates_are_well_covered_in_train():
    instances = demo._generate()
    train_fills: dict[str, set] = {}
    for i in instances:
        if i.split == "train":
            train_fills.setdefault(i.template, set()).add(i.slots)
    counts = Counter((i.template, i.split) for i in instances)
    for i in instances:
        if i.split != "dev":
            continue
        assert counts[(i.template, "train")] >= 2, i.template
        if i.slots:  # dev uses slot values that train never uses with this template
            assert i.slots not in train_fills[i.template], i
            assert len(train_fills[i.template]) >= 3, i.template
    templated = {i.template for i in instances if i.split in ("train", "dev")}
    assert sum(demo._TEMPLATES[d].__len__() for d in demo.DB_IDS) == len(templated)


# ---------------------------------------------------------------------------------------------------------
# SQL content and style

_FEATURES = {
    "equality": r"WHERE \S+ = '",
    "greater": r" > \d",
    "less": r" < ",
    "between": r" BETWEEN \d+ AND \d+",
    "like prefix": r" LIKE '[^'%]+%'",
    "count": r"COUNT\(\*\)",
    "avg": r"AVG\(",
    "sum": r"SUM\(",
    "min/max": r"(MIN|MAX)\(",
    "group by": r" GROUP BY ",
    "having": r" HAVING ",
    "join": r" JOIN .* ON ",
    "3-table join": r" JOIN .* JOIN ",
    "nested IN": r" IN \(SELECT ",
    "nested NOT IN": r" NOT IN \(SELECT ",
    "nested comparison": r"[<>] \(SELECT (AVG|MIN|MAX)\(",
    "order by limit": r" ORDER BY .* LIMIT \d+$",
    "distinct": r"SELECT DISTINCT ",
}


def test_sql_coverage(examples):
    for split in ("train", "dev"):
        sqls = [e["sql"] for e in examples[split]]
        missing = [name for name, pat in _FEATURES.items() if not any(re.search(pat, s) for s in sqls)]
        assert not missing, (split, missing)
    # Each database on its own has most of the categories.
    for db_id in demo.DB_IDS:
        sqls = [e["sql"] for e in examples["train"] if e["db"] == db_id]
        present = [name for name, pat in _FEATURES.items() if any(re.search(pat, s) for s in sqls)]
        assert len(present) >= len(_FEATURES) - 3, (db_id, sorted(set(_FEATURES) - set(present)))


def test_sql_is_canonical(examples):
    for e in examples["train"] + examples["dev"]:
        sql = e["sql"]
        assert sql == sql.strip() and "  " not in sql and not sql.endswith(";"), sql
        assert '"' not in sql and "`" not in sql, sql
        assert not re.search(r"\b(select|from|where|join|group by|order by|having|limit|and|as|on|desc)\b", sql), sql
        assert " ASC" not in sql, sql
        # Aliases T1/T2/T3 exactly when there is a join, and then every column is qualified.
        assert ("T1." in sql) == (" JOIN " in sql), sql
        if " JOIN " in sql:
            assert re.search(r"FROM \w+ AS T1 JOIN \w+ AS T2 ON T1\.\w+ = T2\.\w+", sql), sql


def test_sql_values_appear_in_the_question(examples):
    for e in examples["train"] + examples["dev"]:
        sql, question = e["sql"], e["question"]
        for literal in re.findall(r"'([^']*)'", sql):
            assert literal.rstrip("%") in question, e
        unquoted = re.sub(r"'[^']*'", "''", sql)
        for number in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", unquoted):
            if number == "1" and unquoted.endswith("LIMIT 1"):
                continue  # "the cheapest ..." asks for one row without saying 1
            assert re.search(rf"(?<![\w.]){re.escape(number)}(?!\w|\.\d)", question), e


def test_hardness_rules():
    assert demo.hardness("SELECT name FROM customers WHERE city = 'Lyon'") == "easy"
    assert demo.hardness("SELECT COUNT(*) FROM customers WHERE city = 'Lyon'") == "medium"
    assert demo.hardness("SELECT name FROM products WHERE price BETWEEN 10 AND 20") == "easy"
    assert demo.hardness("SELECT name FROM products WHERE price > (SELECT AVG(price) FROM products)") == "hard"
    assert (
        demo.hardness(
            "SELECT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id "
            "WHERE T1.city = 'Lyon' GROUP BY T1.name ORDER BY COUNT(*) DESC LIMIT 1"
        )
        == "extra"
    )


# ---------------------------------------------------------------------------------------------------------
# Idempotence, stale builds, concurrent builds, default location


def test_build_is_idempotent_and_replaces_stale_builds(tmp_path):
    root = build_demo(tmp_path / "demo")
    stamp = (root / "train.jsonl").stat().st_mtime_ns
    assert build_demo(root) == root
    assert (root / "train.jsonl").stat().st_mtime_ns == stamp  # complete: not rebuilt

    (root / ".complete").write_text("0-old\n", encoding="utf-8")  # another DEMO_VERSION
    (root / "stale.txt").write_text("x", encoding="utf-8")
    build_demo(root)
    assert (root / ".complete").read_text(encoding="utf-8").strip() == DEMO_VERSION
    assert not (root / "stale.txt").exists()

    half = tmp_path / "half"  # what a crash mid-copy by some other tool would leave: no marker
    (half / "databases").mkdir(parents=True)
    build_demo(half)
    assert (half / ".complete").is_file() and (half / "dev.jsonl").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "half"]


def test_concurrent_builds_end_with_one_complete_copy(tmp_path):
    root = tmp_path / "demo"
    results: list[Path] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            results.append(build_demo(root))
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [root] * 3
    assert (root / ".complete").read_text(encoding="utf-8").strip() == DEMO_VERSION
    assert _read_jsonl(root / "dev.jsonl") == demo_examples()["dev"]
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_demo_dir_uses_the_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NL2SQL_ALIGN_CACHE", str(tmp_path / "cache"))
    root = demo_dir()
    assert root == tmp_path / "cache" / f"demo-{DEMO_VERSION}"
    assert (root / ".complete").is_file() and (root / "databases" / "shop.duckdb").is_file()
    assert demo_dir() == root
    assert os.listdir(tmp_path / "cache") == [f"demo-{DEMO_VERSION}"]


# ---------------------------------------------------------------------------------------------------------
# The test split: reported on, never tuned on


def _skeleton(sql: str) -> str:
    """The SQL with its literal values masked: the shape a template gives."""
    return re.sub(r"'[^']*'|\b\d+(\.\d+)?\b", "?", sql)


def test_test_split_is_disjoint_and_measures_generalisation(examples):
    train, dev, test = examples["train"], examples["dev"], examples["test"]
    seen_questions = {e["question"] for e in train + dev}
    seen_sql = {e["sql"] for e in train + dev}
    assert len(test) >= 130 and {e["db"] for e in test} == set(demo.DB_IDS)
    assert not {e["question"] for e in test} & seen_questions
    kinds = Counter(e["id"].rsplit("-", 1)[1] for e in test)
    assert kinds["new_values"] >= 100 and kinds["new_combination"] >= 20 and kinds["value_variant"] >= 10
    train_shapes = {_skeleton(e["sql"]) for e in train}
    for e in test:
        kind = e["id"].rsplit("-", 1)[1]
        if kind == "new_values":  # a seen template, with values train and dev never used with it
            assert e["sql"] not in seen_sql and _skeleton(e["sql"]) in train_shapes, e
        elif kind == "new_combination":  # filters train never shows together
            assert _skeleton(e["sql"]) not in train_shapes, e
        else:  # the question's value differs from the database's (and the gold SQL's) only in case
            literal = re.search(r"= '([^']+)'", e["sql"]).group(1)
            assert literal not in e["question"] and literal.lower() in e["question"], e


def test_adding_the_test_split_left_train_and_dev_as_they_were(examples):
    # Train and dev draw from their own random streams; a digest of the version-3 splits pins them, so the
    # README's trained numbers stay comparable across the change.
    import hashlib

    digest = {s: hashlib.sha256(json.dumps(examples[s]).encode()).hexdigest()[:12] for s in ("train", "dev")}
    assert digest == {"train": "f7fa4477cea0", "dev": "1653f41686d8"}
