"""Shared fixtures. The tiny model is built once per test run; nothing is downloaded."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

# No hub access from tests, ever (CI sets these too).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPIDER = SHARED_DATA / "spider_sample"
BIRD = SHARED_DATA / "bird_sample"


@pytest.fixture(scope="session", autouse=True)
def _demo_cache(tmp_path_factory):
    """Build the demo into a per-run cache so tests never depend on (or write to) the user's ~/.cache."""
    if "NL2SQL_ALIGN_CACHE" not in os.environ:
        os.environ["NL2SQL_ALIGN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A micro Qwen2 model (random weights, BPE tokenizer trained on the demo): the session builds it once."""
    from nl2sql_align.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "micro", size="micro", vocab_size=1024)


def stage_recipe(stage: str, model_dir: Path, out: Path, *overrides: str):
    """The shipped recipes/tiny-<stage>.toml pointed at `model_dir` and `out`, with the stage's TRL config."""
    from nl2sql_align.stages import load_stage_recipe

    recipe, _, _ = load_stage_recipe(
        stage,
        REPO / "recipes" / f"tiny-{stage}.toml",
        [f"model.name_or_path={model_dir}", f"output_dir={out}", *overrides],
    )
    return recipe


# Eight questions on the demo shop database whose answers need no value copying: a micro model learns the
# template in a short SFT and then mixes up tables, which is what the RL stages' execution reward can fix.
SUBSET = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers"),
    ("How many products are there?", "SELECT COUNT(*) FROM products"),
    ("How many orders are there?", "SELECT COUNT(*) FROM orders"),
    ("List all customer names.", "SELECT name FROM customers"),
    ("List all product names.", "SELECT name FROM products"),
    ("List all customer cities.", "SELECT city FROM customers"),
    ("List all product categories.", "SELECT category FROM products"),
    ("List all order dates.", "SELECT order_date FROM orders"),
]


@pytest.fixture(scope="session")
def subset_sft(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(SUBSET as a JSONL file, the micro model after a short SFT on it): the warm start of the RL tests."""
    import json

    from nl2sql_align.data import load_examples
    from nl2sql_align.stages import sft

    root = tmp_path_factory.mktemp("subset")
    shop = next(ex.db.path for ex in load_examples("demo:train") if ex.db_id == "shop")
    data = root / "subset.jsonl"
    data.write_text("".join(json.dumps({"question": q, "sql": s, "db": shop}) + "\n" for q, s in SUBSET))
    warm = sft.run(
        stage_recipe(
            "sft",
            tiny_model_dir,
            root / "sft",
            f"data.train={data}",
            f"data.eval={data}",
            "eval.after_training=false",
            "train.max_steps=70",
            "train.per_device_train_batch_size=8",
            "train.learning_rate=3e-3",
            "train.lr_scheduler_type=constant",
            "train.warmup_steps=0",
        )
    )
    return data, warm


def capture_trainer(monkeypatch, stage_module) -> dict:
    """Make a grpo/ppo stage keep the trainer it builds in the returned dict (key "trainer")."""
    seen: dict = {}
    original = stage_module._build_with

    def spy(holder):
        build = original(holder)
        return lambda ctx: seen.setdefault("trainer", build(ctx))

    monkeypatch.setattr(stage_module, "_build_with", spy)
    return seen


def kill_after_checkpoint(args: list[str], partial: Path, step: int, log: Path) -> int:
    """Run `nl2sql-align ARGS`, SIGKILL it once `partial` holds a complete checkpoint at `step` or later, and
    return the newest complete checkpoint's step. Fails if the run ends first."""
    import signal
    import subprocess
    import sys
    import time

    from nl2sql_align.stages.runner import checkpoint_step, complete_checkpoints

    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nl2sql_align", *args],
            cwd=REPO,
            stdout=out,
            stderr=out,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        while proc.poll() is None:  # poll the process and the folder, not the clock
            if partial.is_dir() and any(checkpoint_step(c) >= step for c in complete_checkpoints(partial)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: raise max_steps (log: {log})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return checkpoint_step(complete_checkpoints(partial)[-1])


@pytest.fixture
def spider_db() -> Path:
    return SPIDER / "database" / "concert_singer" / "concert_singer.sqlite"


def sqlite_to_duckdb(src: Path, dst: Path) -> None:
    """Copy every table of a SQLite file into a new DuckDB file (here, since the sandbox forbids ATTACH)."""
    import duckdb

    source = sqlite3.connect(src)
    target = duckdb.connect(str(dst))
    try:
        for (table,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            cursor = source.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            types = []
            for i in range(len(columns)):
                values = [r[i] for r in rows if r[i] is not None]
                if all(isinstance(v, int) for v in values):
                    types.append("BIGINT")
                elif all(isinstance(v, (int, float)) for v in values):
                    types.append("DOUBLE")
                else:
                    types.append("VARCHAR")
            rows = [
                tuple(str(v) if t == "VARCHAR" and v is not None else v for v, t in zip(r, types, strict=True))
                for r in rows
            ]
            target.execute(
                f'CREATE TABLE "{table}" (' + ", ".join(f'"{c}" {t}' for c, t in zip(columns, types, strict=True)) + ")"
            )
            if rows:
                target.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(columns))})', rows)
    finally:
        target.close()
        source.close()
