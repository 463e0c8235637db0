"""`compare --runs`: trained folders scored on one eval set, beside the training cost from their metrics.jsonl."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nl2sql_align.stages import sft
from tests.conftest import stage_recipe
from tests.test_cli import cli

PNG = b"\x89PNG\r\n\x1a\n"


def _train(model_dir: Path, out: Path, *extra: str) -> Path:
    return sft.run(
        stage_recipe(
            "sft",
            model_dir,
            out,
            "data.train_limit=16",
            'data.eval=""',
            "train.logging_steps=1",
            "train.per_device_train_batch_size=8",
            "train.learning_rate=3e-3",
            *extra,
        )
    )


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    a = _train(tiny_model_dir, root / "a", "train.max_steps=2")
    b = _train(tiny_model_dir, root / "b", "train.max_steps=3", "seed=1")
    return a, b


def _train_end(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == "train_end"][-1]


def _preds(report: Path) -> list[str]:
    return [json.loads(line)["pred"] for line in (report / "per_example.jsonl").read_text().splitlines()]


def test_compare_reports_eval_and_training_cost(two_runs, tmp_path: Path):
    a, b = two_runs
    out = tmp_path / "cmp"
    p = cli("compare", "--runs", str(a), str(b), "--data", "demo:dev", "--limit", "8", "--report", str(out))
    for name in ("report.md", "summary.json", "ex.png", "cost.png", "curves.png"):
        assert (out / name).is_file(), name
    for name in ("ex.png", "cost.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["a", "b"]
    assert summary["n"] == 8 and summary["data"] == "demo:dev"
    report = (out / "report.md").read_text()
    for run in summary["runs"]:
        run_dir = Path(run["path"])
        assert run["stage"] == "sft" and run["curve"] == "loss"
        # The same model, data and prompt through `eval` gives the same EX.
        ev = tmp_path / f"eval-{run['name']}"
        cli(
            "eval",
            "--model",
            str(run_dir),
            "--data",
            "demo:dev",
            "--limit",
            "8",
            "--report",
            str(ev),
            "--recipe",
            str(run_dir / "recipe.resolved.toml"),
        )
        evs = json.loads((ev / "summary.json").read_text())
        assert run["ex"] == evs["ex"] and run["executable"] == evs["executable"] and run["n"] == evs["n"]
        assert run["ex_by_hardness"] == {k: v["ex"] for k, v in evs["ex_by_hardness"].items()}
        # ... because each model saw the same prompts and wrote the same SQL (EX alone may be 0 for a 2-step run).
        assert _preds(out / "runs" / run["name"]) == _preds(ev)
        # Each run's own per-example report is kept.
        assert (out / "runs" / run["name"] / "per_example.jsonl").is_file()
        # Training cost comes from the run's train_end row, unchanged.
        end = _train_end(run_dir)
        assert run["steps"] == end["steps"] and run["seconds_per_step"] == end["seconds_per_step"]
        assert run["train_seconds"] == end["train_seconds"]
        assert run["peak_memory_mb"] == end.get("cuda_max_allocated_mb", end["peak_rss_mb"])
        assert f"| {run['name']} | sft | {run['ex']:.1f} |" in report
    assert [r["steps"] for r in summary["runs"]] == [2, 3]
    # Error bars and the test against the baseline (the first sft run: a), from the runs' own verdicts.
    assert summary["baseline"] == "a" and summary["stats"]["bootstrap_resamples"] == 2000
    verdicts = [[json.loads(line)["correct"] for line in (out / "runs" / n / "per_example.jsonl").open()] for n in "ab"]
    for run, vec in zip(summary["runs"], verdicts, strict=True):
        assert run["ex"] == round(100.0 * sum(vec) / len(vec), 2)
        lo, hi = run["ex_ci"]
        assert lo <= run["ex"] <= hi
        assert run["vs_baseline"]["baseline"] == "a"
    assert summary["runs"][0]["vs_baseline"]["verdict"] == "baseline"
    vs = summary["runs"][1]["vs_baseline"]
    assert vs["wins"] == sum(b and not a for a, b in zip(*verdicts, strict=True))
    assert vs["losses"] == sum(a and not b for a, b in zip(*verdicts, strict=True))
    assert vs["verdict"] in ("better", "worse", "no detectable difference")
    assert f"| {vs['verdict']} |" in report and "McNemar p" in report
    assert "compare --runs" in summary["command"] and summary["command"] in report
    assert summary["machine"]["cpus"] and summary["machine"]["gpu"] in report
    assert "EX %" in p.stdout and "s/step" in p.stdout  # the terminal table
    # The report is not replaced without --overwrite; with it, it is.
    args = ["compare", "--runs", str(a), "--data", "demo:dev", "--limit", "2", "--report", str(out)]
    again = cli(*args, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert json.loads((out / "summary.json").read_text())["n"] == 8
    cli(*args, "--overwrite")
    assert json.loads((out / "summary.json").read_text())["n"] == 2


def test_compare_names_a_run_without_metrics(two_runs, tmp_path: Path):
    a, _ = two_runs
    broken = tmp_path / "broken-run"
    shutil.copytree(a, broken)
    (broken / "metrics.jsonl").unlink()
    out = tmp_path / "cmp"
    p = cli(
        "compare",
        "--runs",
        str(a),
        str(broken),
        "--data",
        "demo:dev",
        "--limit",
        "8",
        "--report",
        str(out),
        check=False,
    )
    assert p.returncode != 0
    assert str(broken) in p.stderr and "metrics.jsonl" in p.stderr and "Traceback" not in p.stderr
    assert not (out / "runs").exists(), "no run is evaluated when one folder is unusable"
    # A metrics.jsonl without the train_end row is just as clear.
    rows = [line for line in (a / "metrics.jsonl").read_text().splitlines() if '"train_end"' not in line]
    (broken / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    p = cli("compare", "--runs", str(broken), "--data", "demo:dev", "--report", str(out), check=False)
    assert p.returncode != 0 and str(broken) in p.stderr and "train_end" in p.stderr
    # A reward model writes no SQL: named, not scored.
    (broken / "metrics.jsonl").write_text((a / "metrics.jsonl").read_text().replace('"stage": "sft"', '"stage": "rm"'))
    p = cli("compare", "--runs", str(broken), "--data", "demo:dev", "--report", str(out), check=False)
    assert p.returncode != 0 and str(broken) in p.stderr and "reward model" in p.stderr


def test_compare_scores_a_trained_model_like_eval(subset_sft, two_runs, tmp_path: Path):
    """A run that has learned something (nonzero EX) next to one that has not: compare tells them apart and
    agrees with `eval` on each."""
    data, warm = subset_sft
    a, _ = two_runs
    out = tmp_path / "cmp"
    cli("compare", "--runs", str(warm), str(a), "--data", str(data), "--report", str(out))
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert runs[0]["ex"] > runs[1]["ex"]
    for run in runs:
        ev = tmp_path / f"eval-{run['name']}"
        cli(
            "eval",
            "--model",
            run["path"],
            "--data",
            str(data),
            "--report",
            str(ev),
            "--recipe",
            str(Path(run["path"]) / "recipe.resolved.toml"),
        )
        assert run["ex"] == json.loads((ev / "summary.json").read_text())["ex"]


def test_compare_help():
    p = cli("compare", "--help")
    assert "--runs" in p.stdout and "--data" in p.stdout and "--report" in p.stdout


def test_compare_executes_each_query_once_across_runs(two_runs, tmp_path: Path, monkeypatch):
    """The gold SQL (and any query two models both wrote) runs once for the whole comparison, not once per run."""
    from collections import Counter

    from nl2sql_align.compare import compare_runs
    from nl2sql_align.sql import SQLExecutor

    seen: Counter = Counter()
    real = SQLExecutor.execute_many

    def spy(self, jobs, *args, **kwargs):
        seen.update(jobs)
        return real(self, jobs, *args, **kwargs)

    monkeypatch.setattr(SQLExecutor, "execute_many", spy)
    summary = compare_runs(list(two_runs), "demo:dev", tmp_path / "cmp", limit=8, baseline="b")
    assert summary["baseline"] == "b" and summary["runs"][1]["vs_baseline"]["verdict"] == "baseline"
    # Both runs are scored against the same 8 gold queries, so without the shared results they would run twice.
    assert seen and max(seen.values()) == 1, [j[1] for j, n in seen.items() if n > 1]
    assert [r["n"] for r in summary["runs"]] == [8, 8]


def test_compare_names_an_unknown_baseline_before_any_model_loads(two_runs, tmp_path: Path, monkeypatch):
    from nl2sql_align import compare
    from nl2sql_align.errors import UserError

    monkeypatch.setattr(compare, "load_generator", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(UserError, match="--baseline 'nope'.*a, b"):
        compare.compare_runs(list(two_runs), "demo:dev", tmp_path / "cmp", limit=2, baseline="nope")


def test_per_run_lines_appear_only_when_some_run_has_the_figure():
    """The lines under the EX table (Soft-F1, R-VES, agent tool calls) list every run, '-' for a run without the
    figure, and are left out when no run has it."""
    from nl2sql_align.compare import agent_lines, r_ves_lines, soft_f1_lines

    recs = [
        {"name": "grpo", "agent_tool_calls": None, "r_ves": None, "soft_f1": None},
        {"name": "agent-grpo", "agent_tool_calls": 1.0, "r_ves": None, "soft_f1": None},
    ]
    assert r_ves_lines(recs) == [] and soft_f1_lines(recs) == []
    assert agent_lines(recs) == ["", "Tool calls per question (agent runs): grpo -, agent-grpo 1.00."]
