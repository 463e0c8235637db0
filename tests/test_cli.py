"""The command line: instant --help everywhere, clear errors, and the data/eval/validate tools end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SPIDER

REPO = Path(__file__).resolve().parents[1]
STAGE_COMMANDS = ["sft", "rm", "dpo", "ppo", "grpo", "rloo"]
COMMANDS = [
    *STAGE_COMMANDS,
    "pairs",
    "eval",
    "ask",
    "data",
    "validate",
    "merge",
    "compare",
    "demo",
    "import-gguf",
    "db",
]


# A progress line (nl2sql_align/progress.py: off a TTY, one line per 10% once work has taken 5 s). It is the one
# thing a slow or busy machine may add to stderr; anything else there is noise.
PROGRESS_LINE = re.compile(r"[\w ]+: \d+/\d+ \(\d+%\) [\d.]+ s")


def noise(stderr: str) -> list[str]:
    """The stderr lines that are not progress lines."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.fullmatch(line)]


def cli(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200")
    p = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def test_help_lists_every_command():
    out = cli("--help").stdout
    for c in COMMANDS:
        assert c in out


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command):
    p = cli(command, "--help")
    assert "Usage" in p.stdout and p.stderr.strip() == ""


def test_help_fits_80_columns_without_cutting_names():
    # An 80-column terminal (a laptop's default) shows every command's summary and every option name whole.
    import typer.main
    from typer.testing import CliRunner

    from nl2sql_align.cli import app

    group = typer.main.get_command(app)
    runner = CliRunner()
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).output
    assert all(len(line) <= 80 for line in top.splitlines())
    for c in COMMANDS:
        assert f"  {c} " in top and group.commands[c].short_help in top
    assert "..." not in top.split("Commands:")[1] and "\u2026" not in top
    for c in COMMANDS:
        out = runner.invoke(app, [c, "--help"], env={"COLUMNS": "80"}).output
        assert all(len(line) <= 80 for line in out.splitlines()), c
        for param in group.commands[c].params:
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("--"):
                    assert name in out, (c, name)
        assert "\u2026" not in out


def test_cli_module_does_not_import_torch():
    # --help must stay instant: the CLI imports heavy libraries only inside commands.
    code = "import sys, nl2sql_align.cli; bad = [m for m in ('torch', 'transformers', 'trl') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_matches_module():
    script = Path(sys.executable).with_name("nl2sql-align")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    a = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert a.returncode == 0 and a.stdout == cli("--help").stdout


def test_validate_accepts_shipped_recipe_and_rejects_bad_one(tiny_model_dir: Path, tmp_path: Path):
    p = cli("validate", "recipes/tiny-sft.toml", "--set", f"model.name_or_path={tiny_model_dir}")
    assert "valid" in p.stdout and noise(p.stderr) == []
    bad = tmp_path / "bad.toml"
    bad.write_text('output_dir = "o"\n[model]\nname_or_path = "m"\n[train]\nnum_train_epoch = 3\n')
    p = cli("validate", str(bad), check=False)
    assert p.returncode == 2
    assert "unknown key 'train.num_train_epoch'; did you mean 'num_train_epochs'" in p.stderr
    assert "Traceback" not in p.stderr


def test_validate_grpo_checks_rewards_gold_and_batch_arithmetic(tiny_model_dir: Path, tmp_path: Path):
    model = f"model.name_or_path={tiny_model_dir}"
    p = cli("validate", "recipes/tiny-grpo.toml", "--set", model)
    assert "ok  stage grpo" in p.stdout and "[train] accepted by GRPOConfig" in p.stdout
    assert "reward: 1 x execution + 1 x executable + 1 x format" in p.stdout
    assert "gold SQL of 2739 training examples runs" in p.stdout
    p = cli("validate", "recipes/tiny-grpo.toml", "--set", model, "--set", "train.num_generations=6", check=False)
    assert p.returncode == 2
    assert "set train.per_device_train_batch_size = 18" in p.stderr and "Traceback" not in p.stderr
    # Three processes: 16 x 3 = 48 completions per generation batch, whole groups of 6.
    p = cli(
        "validate", "recipes/tiny-grpo.toml", "--num-processes", "3", "--set", model, "--set", "train.num_generations=6"
    )
    assert "valid" in p.stdout
    p = cli(
        "validate", "recipes/tiny-grpo.toml", "--set", model, "--set", 'reward.components=[{name="mypkg.nothing"}]',
        check=False,
    )  # fmt: skip
    assert p.returncode == 2 and "cannot import mypkg" in p.stderr


def test_pairs_then_validate_a_dpo_recipe_on_them(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "pairs"
    p = cli(
        "pairs",
        "--model",
        str(tiny_model_dir),
        "--recipe",
        "recipes/tiny-dpo.toml",
        "--data",
        "demo:train",
        "--limit",
        "6",
        "--samples",
        "2",
        "--set",
        "pairs.max_new_tokens=8",
        "--output",
        str(out),
    )
    # the table goes to stderr; stdout is the output folder alone, as for a training stage
    assert "prompts with a pair" in p.stderr and p.stdout.splitlines() == [str(out)] and (out / "pairs.jsonl").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 12 and summary["config"]["samples"] == 2
    pairs, model = f"data.train={out}/pairs.jsonl", f"model.name_or_path={tiny_model_dir}"
    p = cli("validate", "recipes/tiny-dpo.toml", "--set", pairs, "--set", model)
    assert "[train] accepted by DPOConfig (preference.method = dpo)" in p.stdout
    import re

    n_train, n_held = map(int, re.search(r"\((\d+) pairs, (\d+) held out\)", p.stdout).groups())
    assert n_train + n_held == summary["pairs"] and n_held > 0  # tiny-dpo.toml holds out 10% of the questions
    p = cli("validate", "recipes/tiny-dpo.toml", "--set", pairs, "--set", model, "--set", "preference.method=orpo")
    assert "accepted by ORPOConfig" in p.stdout
    unpaired = f"data.train={out}/unpaired.jsonl"
    p = cli("validate", "recipes/tiny-dpo.toml", "--set", unpaired, "--set", model, "--set", "preference.method=kto")
    assert "labelled completions" in p.stdout
    # A reward model trains on pairs only: validate refuses what the run would refuse.
    p = cli("validate", "recipes/tiny-rm.toml", "--set", unpaired, "--set", model, check=False)
    assert p.returncode == 2 and "a reward model trains on pairs" in p.stderr
    again = cli(
        "pairs", "--model", str(tiny_model_dir), "--data", "demo:dev", "--limit", "2", "--output", str(out), check=False
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_validate_checks_data(tiny_model_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad-data.toml"
    bad.write_text(
        f'output_dir = "o"\n[model]\nname_or_path = "{tiny_model_dir}"\n[data]\ntrain = "{tmp_path}/none.jsonl"\n'
    )
    p = cli("validate", str(bad), check=False)
    assert p.returncode == 2 and "data not found" in p.stderr


def test_data_prints_records_and_prompts():
    lines = cli("data", f"spider:{SPIDER}", "--limit", "3").stdout.splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["index"] for r in recs] == [0, 1, 2]
    assert recs[0]["db"] == "concert_singer" and recs[0]["sql"] == "SELECT count(*) FROM singer"
    assert set(recs[0]) >= {"index", "id", "db", "question", "evidence", "sql"}
    prompts = [json.loads(line) for line in cli("data", "demo:dev", "--prompts", "--limit", "2").stdout.splitlines()]
    assert len(prompts) == 2
    roles = [m["role"] for m in prompts[0]["messages"]]
    assert roles == ["system", "user"] and "CREATE TABLE" in prompts[0]["messages"][1]["content"]


def test_eval_gold_predictions_on_spider_sample_is_100(tmp_path: Path):
    # dev_gold.sql is the official "SQL<TAB>db_id" gold file: scoring gold against gold must give EX = 100%.
    cli("eval", "--data", f"spider:{SPIDER}", "--predictions", str(SPIDER / "dev_gold.sql"), "--report", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n"] == 259 and summary["ex"] == 100.0 and summary["executable"] == 100.0
    rows = [json.loads(line) for line in (tmp_path / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 259 and set(rows[0]) >= {"index", "db", "gold", "pred", "correct", "error"}


def test_eval_scores_wrong_and_broken_predictions(tmp_path: Path):
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"index": 0, "sql": "SELECT count(*) FROM singer"},  # right
                {"index": 1, "sql": "SELECT count(*) FROM stadium"},  # runs, wrong answer
                {"index": 2, "sql": "SELECT nme FROM singer"},  # error
                {"index": 3, "sql": "DROP TABLE singer"},  # refused
            ]
        )
    )
    cli(
        "eval",
        "--data",
        f"spider:{SPIDER}",
        "--limit",
        "4",
        "--predictions",
        str(preds),
        "--report",
        str(tmp_path / "r"),
    )
    rows = [json.loads(line) for line in (tmp_path / "r" / "per_example.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, False, False]
    assert [r["executable"] for r in rows] == [True, True, False, False]
    assert "nme" in rows[2]["error"] and rows[3]["error"].startswith("refused")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["ex"] == 25.0 and summary["executable"] == 50.0


def test_eval_rejects_misaligned_predictions(tmp_path: Path):
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT 1\nSELECT 2\n")
    p = cli(
        "eval", "--data", f"spider:{SPIDER}", "--predictions", str(preds), "--report", str(tmp_path / "r"), check=False
    )
    assert p.returncode == 2 and "2 lines for 259 examples" in p.stderr


def test_eval_model_generates_and_reports(tiny_model_dir: Path, tmp_path: Path):
    cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        "demo:dev",
        "--limit",
        "4",
        "--report",
        str(tmp_path),
        "--set",
        "eval.max_new_tokens=8",
    )
    rows = [json.loads(line) for line in (tmp_path / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("output" in r for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # The summary is the rows' own count, not a number computed elsewhere.
    assert summary["n"] == 4 and summary["ex"] == round(100 * sum(r["correct"] for r in rows) / 4, 2)
    assert summary["recipe"].startswith("defaults")  # a bare model folder: no recipe.resolved.toml to read


@pytest.mark.slow
def test_demo_runs_the_shipped_pipeline_end_to_end_on_a_few_steps(tiny_model_dir: Path, tmp_path: Path):
    """`make demo`'s command on the shipped recipes, shortened: every step runs, PPO uses the RM that the rm step
    trained, and the four policies are compared. It runs in a copy of recipes/ so its out/ is the test's own."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    short = [
        "sft.train.max_steps=2",
        "sft.data.train_limit=16",
        "pairs.pairs.max_questions=8",
        "pairs.pairs.samples=2",
        "pairs.pairs.max_new_tokens=16",
        "rm.train.max_steps=2",
        "dpo.train.max_steps=2",
        "ppo.train.max_steps=2",
        "ppo.train.max_completion_length=16",
        "grpo.train.max_steps=1",
        "grpo.train.max_completion_length=16",
        "compare.limit=4",
        *(f"{s}.eval.max_new_tokens=16" for s in ("sft", "dpo", "ppo", "grpo")),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "nl2sql_align",
            "demo",
            "--model-dir",
            str(tiny_model_dir),
            *(a for s in short for a in ("--set", s)),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "out" / "demo"
    summary = json.loads((out / "compare" / "summary.json").read_text())
    assert [(r["name"], r["stage"]) for r in summary["runs"]] == [
        ("sft", "sft"),
        ("dpo", "dpo"),
        ("ppo", "ppo"),
        ("grpo", "grpo"),
        ("sft-more", "sft"),
    ]
    assert summary["n"] == 4 and [r["steps"] for r in summary["runs"]][:4] == [2, 2, 2, 1]
    assert summary["data"] == "demo:test" and summary["baseline"] == "sft"
    assert [r["status"] for r in summary["pipeline"]["steps"]] == ["ran"] * 7
    # The compute-matched baseline trained for the seconds the grpo step took, from the same SFT start.
    ends = {
        name: [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines() if "train_end" in x][-1]
        for name in ("grpo", "sft-more")
    }
    assert ends["sft-more"]["budget"]["limit"] == ends["grpo"]["train_seconds"]
    assert 'name_or_path = "out/demo/sft"' in (out / "sft-more" / "recipe.resolved.toml").read_text()
    # PPO was rewarded by the reward model the rm step trained, beside execution.
    ppo_rows = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/reward_model/mean" in r for r in ppo_rows)
    assert "out/demo/rm" in (out / "ppo" / "recipe.resolved.toml").read_text()
    for name in ("sft", "dpo", "ppo", "grpo"):  # the terminal table
        assert f"│ {name} " in p.stdout
    assert (out / "compare" / "report.md").is_file() and "hard+ EX %" in p.stdout
