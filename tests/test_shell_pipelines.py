"""Shell-pipeline conventions (README "In shell pipelines and CI"): `-` for stdin/stdout, `--json` alone on
stdout, one output-folder line from a training stage, exit codes 0/1/2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "nl2sql_align", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip


def gold_sql(n: int) -> list[str]:
    p = run("data", "demo:dev", "--limit", str(n))
    assert p.returncode == 0, p.stderr
    return [json.loads(line)["sql"] for line in p.stdout.splitlines()]


def test_predictions_from_stdin_score_like_the_same_file(tmp_path: Path) -> None:
    preds = gold_sql(6)
    preds[2] = "SELECT 1"  # one wrong answer, so EX is not trivially 100
    text = "\n".join(preds) + "\n"
    (tmp_path / "p.sql").write_text(text, encoding="utf-8")
    common = ("eval", "--data", "demo:dev", "--limit", "6", "--json")
    piped = run(*common, "--predictions", "-", stdin=text)
    filed = run(*common, "--predictions", str(tmp_path / "p.sql"))
    assert piped.returncode == 0 and filed.returncode == 0, piped.stderr + filed.stderr
    a, b = json.loads(piped.stdout), json.loads(filed.stdout)  # stdout parses whole: nothing else is on it
    assert a == b and a["n"] == 6 and a["ex"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert "EX on demo:dev" in piped.stderr  # the human table went to stderr


def test_min_ex_gates_with_exit_1_and_write_predictions_dash_is_stdout() -> None:
    preds = gold_sql(4)
    preds[0] = "SELECT 1"  # EX 75
    text = "\n".join(preds) + "\n"
    common = ("eval", "--data", "demo:dev", "--limit", "4", "--predictions", "-")
    assert run(*common, "--min-ex", "80", stdin=text).returncode == 1
    assert "below --min-ex 80" in run(*common, "--min-ex", "80", stdin=text).stderr
    ok = run(*common, "--min-ex", "70", "--write-predictions", "-", stdin=text)
    assert ok.returncode == 0
    lines = ok.stdout.splitlines()
    assert [line.split("\t") for line in lines] == [[p, "shop"] for p in preds]


def test_missing_files_exit_2() -> None:
    p = run("eval", "--data", "demo:dev", "--predictions", "no/such/file.sql")
    assert p.returncode == 2 and "predictions file not found: no/such/file.sql" in p.stderr
    assert run("validate", "no/such/recipe.toml").returncode == 2
    assert run("data", "no/such/data.jsonl").returncode == 2


def test_validate_reads_stdin_and_json_reports_invalid_recipes(tiny_model_dir: Path) -> None:
    recipe = (REPO / "recipes" / "tiny-sft.toml").read_text(encoding="utf-8")
    model = f"model.name_or_path={json.dumps(str(tiny_model_dir))}"
    good = run("validate", "-", "--stage", "sft", "--set", model, "--json", stdin=recipe)
    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert doc["valid"] is True and doc["recipe"] == "<stdin>" and any("TRL" in c or "SFT" in c for c in doc["checks"])
    bad = run("validate", "-", "--stage", "sft", "--set", model, "--set", "eval.metric=nope", "--json", stdin=recipe)
    assert bad.returncode == 2
    doc = json.loads(bad.stdout)
    assert doc["valid"] is False and "metric" in doc["error"] and "metric" in bad.stderr


def test_data_stats_json_counts_levels_and_databases(tmp_path: Path) -> None:
    p = run("data", "demo:dev", "--stats", "--json")
    assert p.returncode == 0, p.stderr
    stats = json.loads(p.stdout)
    records = [json.loads(line) for line in run("data", "demo:dev").stdout.splitlines()]
    assert stats["n"] == len(records) == sum(stats["by_db"].values()) == sum(stats["by_level"].values())
    by_db: dict[str, int] = {}
    for r in records:
        by_db[r["db"]] = by_db.get(r["db"], 0) + 1
    assert stats["by_db"] == by_db


@pytest.mark.slow
def test_a_training_stage_prints_only_its_output_folder(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "sft"
    p = run(
        "sft", "--recipe", "recipes/tiny-sft.toml", "--set", f"model.name_or_path={json.dumps(str(tiny_model_dir))}",
        "--set", f"output_dir={json.dumps(str(out))}", "--set", "train.max_steps=2", "--set", "data.train_limit=8", "--set", "data.eval_limit=8",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [str(out)] and (out / "recipe.resolved.toml").is_file()
