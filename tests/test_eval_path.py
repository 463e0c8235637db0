"""One evaluation path: `eval --model DIR` scores with the recipe DIR was trained with, and the eval flags and
[eval] keys are one set of settings (a recipe's metric is the metric used)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from nl2sql_align.stages import sft
from tests.conftest import stage_recipe
from tests.test_cli import cli


def _rows(report: Path) -> list[dict]:
    return [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]


def test_eval_model_dir_uses_the_trained_recipe(tiny_model_dir: Path, tmp_path: Path):
    # Non-default prompt settings: a system prompt of our own and the DDL schema (the tiny recipe says compact).
    out = sft.run(
        stage_recipe(
            "sft",
            tiny_model_dir,
            tmp_path / "run",
            "data.train_limit=8",
            "data.eval_limit=6",
            'data.system_prompt="Answer with one SQL query for {engine}."',
            'data.schema.format="ddl"',
            "train.max_steps=2",
            "eval.max_new_tokens=24",
        )
    )
    after_training = _rows(out / "eval")
    p = cli("eval", "--model", str(out), "--data", "demo:dev", "--limit", "6", "--report", str(tmp_path / "r"))
    again = _rows(tmp_path / "r")
    assert [r["output"] for r in again] == [r["output"] for r in after_training]
    assert [r["pred"] for r in again] == [r["pred"] for r in after_training]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (
        summary["recipe"] == str(out / "recipe.resolved.toml")
        and summary["ex"] == json.loads((out / "eval" / "summary.json").read_text())["ex"]
    )
    assert str(out / "recipe.resolved.toml") in p.stderr  # it says which recipe it used
    # The report folder is not replaced without --overwrite.
    p = cli(
        "eval", "--model", str(out), "--data", "demo:dev", "--limit", "1", "--report", str(tmp_path / "r"), check=False
    )
    assert p.returncode == 2 and "--overwrite" in p.stderr


def test_recipe_eval_metric_is_the_metric_and_flags_override_it(tmp_path: Path):
    db = tmp_path / "t.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x INTEGER, y TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, "ab"[i % 2]) for i in range(6)])
    con.commit()
    con.close()
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "sql": "SELECT y FROM t WHERE x < 4", "db": str(db)}) + "\n")
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT y FROM t WHERE x < 2\n")  # the same set of values, half the rows
    recipe = tmp_path / "bird.toml"
    recipe.write_text('[eval]\nmetric = "bird"\ntimeout = 7.0\n')
    base = ["eval", "--data", str(data), "--predictions", str(preds), "--recipe", str(recipe)]

    cli(*base, "--report", str(tmp_path / "bird"))
    bird = json.loads((tmp_path / "bird" / "summary.json").read_text())
    assert (bird["metric"], bird["ex"], bird["timeout"]) == ("bird", 100.0, 7.0)  # BIRD: set equality

    cli(*base, "--report", str(tmp_path / "spider"), "--metric", "spider")
    spider = json.loads((tmp_path / "spider" / "summary.json").read_text())
    assert (spider["metric"], spider["ex"], spider["timeout"]) == ("spider", 0.0, 7.0)  # Spider: row counts differ
