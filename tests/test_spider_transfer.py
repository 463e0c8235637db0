"""scripts/spider_transfer.py holds out by database: the GRPO side never sees a question on a held-out database,
and both split files load as Spider data with their gold SQL running on the real sample databases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from nl2sql_align.data import load_examples
from tests.conftest import SPIDER

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("spider_transfer", REPO / "scripts" / "spider_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_split_is_by_database_and_loses_no_question(tmp_path: Path):
    mod = _script()
    files = mod.split_by_database(SPIDER, tmp_path / "split")
    train = load_examples(f"spider:{files['train']}")
    held = load_examples(f"spider:{files['heldout']}")
    assert {e.db_id for e in train} == set(mod.TRAIN_DBS)
    assert {e.db_id for e in held} == set(mod.HELDOUT_DBS)
    everything = json.loads((SPIDER / "dev.json").read_text(encoding="utf-8"))
    assert len(train) + len(held) == len(everything)  # the four databases, each on one side
    assert sorted(e.question for e in train + held) == sorted(r["question"] for r in everything)


def test_a_database_on_both_sides_or_absent_is_refused(tmp_path: Path):
    mod = _script()
    with pytest.raises(ValueError, match="both sides"):
        mod.split_by_database(SPIDER, tmp_path / "a", ("car_1", "pets_1"), ("pets_1",))
    with pytest.raises(ValueError, match="no questions on"):
        mod.split_by_database(SPIDER, tmp_path / "b", ("car_1",), ("no_such_db",))
