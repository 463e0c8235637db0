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
        stage, REPO / "recipes" / f"tiny-{stage}.toml", [f"model.name_or_path={model_dir}", f"output_dir={out}", *overrides]
    )
    return recipe


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
                tuple(
                    str(v) if t == "VARCHAR" and v is not None else v for v, t in zip(r, types, strict=True)
                )
                for r in rows
            ]
            target.execute(
                f'CREATE TABLE "{table}" ('
                + ", ".join(f'"{c}" {t}' for c, t in zip(columns, types, strict=True))
                + ")"
            )
            if rows:
                target.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" * len(columns))})', rows)
    finally:
        target.close()
        source.close()
