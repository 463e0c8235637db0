"""`compare --recipe`: a pipeline of stage steps, checked before anything runs, reused when up to date, then
compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_align.errors import RecipeError, UserError
from nl2sql_align.pipeline import load_pipeline, plan, run_pipeline
from tests.conftest import REPO
from tests.test_cli import cli

RECIPES = REPO / "recipes"


def _write(tmp: Path, steps: list[dict], head: str = "") -> Path:
    """A pipeline file; each step dict becomes one [[steps]] table."""
    lines = [head, "[compare]", 'data = "demo:dev"', f'report = "{tmp / "report"}"', "limit = 4", ""]
    for s in steps:
        lines.append("[[steps]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in s.items()]
        lines.append("")
    path = tmp / "pipe.toml"
    path.write_text("\n".join(lines))
    return path


def _demo_like(tmp: Path, model: Path | str = "out/tiny-model") -> list[dict]:
    """sft -> pairs -> dpo, on the shipped tiny recipes, sized for the micro model and seconds of CPU."""
    return [
        {
            "name": "sft",
            "command": "sft",
            "recipe": str(RECIPES / "tiny-sft.toml"),
            "set": [
                f"model.name_or_path={json.dumps(str(model))}",
                f"output_dir={json.dumps(str(tmp / 'sft'))}",
                "data.train_limit=16",
                "train.max_steps=2",
                "train.logging_steps=1",
            ],
        },
        {
            "name": "pairs",
            "command": "pairs",
            "recipe": str(RECIPES / "tiny-dpo.toml"),
            "set": [
                f"model.name_or_path={json.dumps(str(tmp / 'sft'))}",
                f"pairs.output={json.dumps(str(tmp / 'pairs'))}",
                "pairs.max_questions=12",
                "pairs.samples=2",
                "pairs.max_new_tokens=16",
            ],
        },
        {
            "name": "dpo",
            "command": "dpo",
            "recipe": str(RECIPES / "tiny-dpo.toml"),
            "set": [
                f"model.name_or_path={json.dumps(str(tmp / 'sft'))}",
                f"output_dir={json.dumps(str(tmp / 'dpo'))}",
                f"data.train={json.dumps(str(tmp / 'pairs' / 'pairs.jsonl'))}",
                "train.max_steps=2",
                "train.logging_steps=1",
                "data.holdout=0.2",
            ],
        },
    ]


HEAD = 'set = ["eval.after_training=false"]'


def test_plan_traces_the_steps_and_checks_every_recipe(tmp_path: Path):
    steps = plan(load_pipeline(_write(tmp_path, _demo_like(tmp_path), HEAD)))
    assert [s.name for s in steps] == ["sft", "pairs", "dpo"]
    assert [s.upstream for s in steps] == [[], ["sft"], ["sft", "pairs"]]
    assert [s.compared for s in steps] == [True, False, True]
    # The pipeline-wide `set` reached every step's recipe, and each step's own after it.
    assert all(s.recipe.eval.after_training is False for s in steps)
    assert steps[2].recipe.data.holdout == 0.2 and steps[1].recipe.pairs.samples == 2
    # A bad key inside a step's recipe is named with the step, before anything runs.
    with pytest.raises(RecipeError, match=r"step dpo \(dpo\).*train\.betaa"):
        plan(load_pipeline(_write(tmp_path, _demo_like(tmp_path), HEAD), ["dpo.train.betaa=0.2"]))


def test_fingerprints_follow_settings_and_upstream_steps(tmp_path: Path):
    path = _write(tmp_path, _demo_like(tmp_path), HEAD)
    base = {s.name: s.fingerprint for s in plan(load_pipeline(path))}
    assert base == {s.name: s.fingerprint for s in plan(load_pipeline(path))}  # deterministic
    dpo_changed = {s.name: s.fingerprint for s in plan(load_pipeline(path, ["dpo.train.beta=0.2"]))}
    assert dpo_changed["sft"] == base["sft"] and dpo_changed["pairs"] == base["pairs"]
    assert dpo_changed["dpo"] != base["dpo"]
    # A change upstream makes everything that reads from it stale too.
    sft_changed = {s.name: s.fingerprint for s in plan(load_pipeline(path, ["sft.train.learning_rate=1e-3"]))}
    assert all(sft_changed[n] != base[n] for n in base)
    # So does a changed input that no step writes (here the base model: rebuilt, its weights differ in size).
    model = tmp_path / "base"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"x" * 10)
    built = _write(tmp_path, _demo_like(tmp_path, model), HEAD)
    first = {s.name: s.fingerprint for s in plan(load_pipeline(built))}
    assert first == {s.name: s.fingerprint for s in plan(load_pipeline(built))}
    (model / "model.safetensors").write_bytes(b"x" * 11)
    rebuilt = {s.name: s.fingerprint for s in plan(load_pipeline(built))}
    assert all(rebuilt[n] != first[n] for n in first)


def test_plumbing_errors_are_named_before_anything_runs(tmp_path: Path):
    steps = _demo_like(tmp_path)
    with pytest.raises(
        RecipeError,
        match="step dpo reads data.train = .*pairs.jsonl', which step pairs writes after it; move pairs before dpo",
    ):
        plan(load_pipeline(_write(tmp_path, [steps[0], steps[2], steps[1]])))
    with pytest.raises(
        RecipeError, match=r"step dpo .*data.train = .*nowhere.jsonl' does not exist and no earlier step writes it"
    ):
        plan(load_pipeline(_write(tmp_path, steps), [f"dpo.data.train={json.dumps(str(tmp_path / 'nowhere.jsonl'))}"]))
    with pytest.raises(RecipeError, match="no step named 'ppo'.*steps: sft, pairs, dpo"):
        load_pipeline(_write(tmp_path, steps), ["ppo.train.max_steps=3"])
    with pytest.raises(RecipeError, match=r"unknown key 'steps\[0\]\.recipes'; did you mean 'recipe'"):
        load_pipeline(_write(tmp_path, [{"name": "sft", "command": "sft", "recipes": "x.toml"}]))
    with pytest.raises(RecipeError, match=r"steps\[0\]\.command = 'sfft' is not one of"):
        load_pipeline(_write(tmp_path, [{"name": "sft", "command": "sfft", "recipe": "x.toml"}]))
    with pytest.raises(RecipeError, match="steps sft and again both write"):
        again = dict(steps[0], name="again")
        plan(load_pipeline(_write(tmp_path, [steps[0], again])))
    with pytest.raises(RecipeError, match="no step trains a policy"):
        load_pipeline(_write(tmp_path, [steps[1]]))
    # The CLI says it in one line and exits non-zero.
    p = cli("compare", "--recipe", str(_write(tmp_path, [steps[0], steps[2], steps[1]])), check=False)
    assert p.returncode == 2 and "move pairs before dpo" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "sft").exists()


def _mtime(out: Path) -> float:
    return (out / "model.safetensors").stat().st_mtime_ns


@pytest.mark.slow
def test_pipeline_runs_compares_then_reuses_what_is_up_to_date(tiny_model_dir, tmp_path: Path):
    path = _write(tmp_path, _demo_like(tmp_path, tiny_model_dir), HEAD)
    report = tmp_path / "report"
    summary = run_pipeline(path)
    pipe = summary["pipeline"]
    assert [(r["name"], r["status"]) for r in pipe["steps"]] == [("sft", "ran"), ("pairs", "ran"), ("dpo", "ran")]
    # The policies were compared (not the pairs): their own outputs, their stages, scored on 4 dev questions.
    assert [(r["name"], r["stage"], r["path"]) for r in summary["runs"]] == [
        ("sft", "sft", str(tmp_path / "sft")),
        ("dpo", "dpo", str(tmp_path / "dpo")),
    ]
    assert summary["n"] == 4 and all(r["steps"] == 2 for r in summary["runs"])
    assert not (tmp_path / "sft" / "eval").exists()  # the stage's own eval was switched off by the pipeline
    md = (report / "report.md").read_text()
    assert f"## Pipeline `{path}`" in md and "| pairs | pairs |" in md
    for png in ("ex.png", "cost.png", "curves.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"
    ex = [r["ex"] for r in summary["runs"]]
    stamps = {n: _mtime(tmp_path / n) for n in ("sft", "dpo")}

    # Again, unchanged: nothing retrains, and the scores are the same.
    again = run_pipeline(path)
    assert [r["status"] for r in again["pipeline"]["steps"]] == ["reused"] * 3
    assert {n: _mtime(tmp_path / n) for n in ("sft", "dpo")} == stamps
    assert [r["ex"] for r in again["runs"]] == ex

    # A changed dpo setting: refused without --overwrite (and nothing touched), then only dpo retrains.
    with pytest.raises(UserError, match=r"dpo -> .*dpo; pass --overwrite"):
        run_pipeline(path, ["dpo.train.beta=0.3"])
    assert _mtime(tmp_path / "dpo") == stamps["dpo"]
    third = run_pipeline(path, ["dpo.train.beta=0.3"], overwrite=True)
    assert [r["status"] for r in third["pipeline"]["steps"]] == ["reused", "reused", "ran"]
    assert _mtime(tmp_path / "sft") == stamps["sft"] and _mtime(tmp_path / "dpo") != stamps["dpo"]
    assert "beta = 0.3" in (tmp_path / "dpo" / "recipe.resolved.toml").read_text()

    # --no-reuse --overwrite retrains every step; the stale dpo cascades from a retrained sft.
    fourth = run_pipeline(path, ["dpo.train.beta=0.3"], overwrite=True, reuse=False)
    assert [r["status"] for r in fourth["pipeline"]["steps"]] == ["ran"] * 3
    assert _mtime(tmp_path / "sft") != stamps["sft"]


def test_shipped_demo_pipeline_plans_the_whole_comparison():
    steps = plan(load_pipeline(RECIPES / "compare-demo.toml"))
    by = {s.name: s for s in steps}
    assert [s.command for s in steps] == ["sft", "pairs", "rm", "dpo", "ppo", "grpo", "sft"]
    assert by["dpo"].upstream == ["sft", "pairs"] and "rm" in by["ppo"].upstream
    assert by["ppo"].recipe.reward.model == "out/demo/rm"
    assert [s.name for s in steps if s.compared] == ["sft", "dpo", "ppo", "grpo", "sft-more"]
    # the compute-matched baseline starts where grpo starts and reruns when grpo changes
    assert by["sft-more"].recipe.model.name_or_path == by["grpo"].recipe.model.name_or_path == "out/demo/sft"
    assert "grpo" in by["sft-more"].upstream
    assert all(s.recipe.eval.after_training is False for s in steps)


def test_seeds_plan_whole_independent_pipelines():
    """Seed k reruns every step with its recipe's seed + k into <output_dir>-seed<k>, reading that seed's upstream
    outputs (not seed 0's); inputs no step writes are shared."""
    from nl2sql_align.pipeline import plan_seeds

    seeded = plan_seeds(load_pipeline(RECIPES / "compare-demo.toml", ["compare.seeds=3"]))
    assert len(seeded) == 3
    first, third = ({s.name: s for s in steps} for steps in (seeded[0], seeded[2]))
    assert first["sft"].output == Path("out/demo/sft") and third["sft"].output == Path("out/demo/sft-seed2")
    assert third["sft"].recipe.seed == first["sft"].recipe.seed + 2
    assert third["pairs"].output == Path("out/demo/pairs-seed2") and third["pairs"].recipe.seed == 2
    assert third["dpo"].recipe.model.name_or_path == "out/demo/sft-seed2"
    assert third["dpo"].recipe.data.train == str(Path("out/demo/pairs-seed2") / "pairs.jsonl")
    assert third["ppo"].recipe.reward.model == "out/demo/rm-seed2"
    assert third["sft-more"].recipe.model.name_or_path == "out/demo/sft-seed2"
    assert third["sft-more"].output == Path("out/demo/sft-more-seed2")
    # The base model is an input no step writes: every seed starts from the same one.
    assert third["sft"].recipe.model.name_or_path == first["sft"].recipe.model.name_or_path
    assert third["dpo"].recipe.data.eval == first["dpo"].recipe.data.eval
    with pytest.raises(RecipeError, match=r"seeds = 0"):
        load_pipeline(RECIPES / "compare-demo.toml", ["compare.seeds=0"])


@pytest.mark.slow
def test_pipeline_with_two_seeds_reports_the_spread(tiny_model_dir, tmp_path: Path):
    path = _write(tmp_path, _demo_like(tmp_path, tiny_model_dir), HEAD + "\n")
    summary = run_pipeline(path, ["compare.seeds=2"])
    names = [r["name"] for r in summary["pipeline"]["steps"]]
    assert names == ["sft", "pairs", "dpo", "sft-seed1", "pairs-seed1", "dpo-seed1"]
    resolved = (tmp_path / "dpo-seed1" / "recipe.resolved.toml").read_text()
    assert f'name_or_path = "{tmp_path / "sft-seed1"}"' in resolved and "pairs-seed1" in resolved
    # Another seed trained other weights from the same start.
    assert (tmp_path / "sft" / "model.safetensors").read_bytes() != (
        tmp_path / "sft-seed1" / "model.safetensors"
    ).read_bytes()
    seed1 = json.loads((tmp_path / "report" / "seed1" / "summary.json").read_text())
    for rec in summary["runs"]:
        other = next(r for r in seed1["runs"] if r["name"] == rec["name"])
        assert rec["seeds"]["ex"] == [rec["ex"], other["ex"]]
        assert rec["seeds"]["mean"] == pytest.approx((rec["ex"] + other["ex"]) / 2, abs=0.01)
    dpo = summary["runs"][1]["seeds"]
    assert dpo["diff"] == [round(a - b, 2) for a, b in zip(dpo["ex"], summary["runs"][0]["seeds"]["ex"], strict=True)]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Across 2 seeds" in md and "| dpo |" in md.split("## Across 2 seeds")[1]


def test_validate_plans_every_seed_like_the_run():
    p = cli("validate", str(RECIPES / "compare-demo.toml"), "--set", "compare.seeds=2")
    assert "valid pipeline of 7 steps x 2 seeds" in p.stdout + p.stderr
    assert "seed +1: dpo: dpo --recipe" in p.stdout and "out/demo/dpo-seed1, after sft, pairs" in p.stdout
    bad = cli("validate", str(RECIPES / "compare-demo.toml"), "--set", "compare.seeds=0", check=False)
    assert bad.returncode == 2 and "seeds = 0" in bad.stderr


def test_nested_outputs_are_read_from_the_deepest_writer_in_every_seed(tmp_path: Path):
    from nl2sql_align.pipeline import plan_seeds

    steps = _demo_like(tmp_path)
    inner = tmp_path / "sft" / "pairs"  # the pairs step writes inside the sft output
    steps[1]["set"] = [s for s in steps[1]["set"] if not s.startswith("pairs.output")] + [
        f"pairs.output={json.dumps(str(inner))}"
    ]
    steps[2]["set"] = [s for s in steps[2]["set"] if not s.startswith("data.train")] + [
        f"data.train={json.dumps(str(inner / 'pairs.jsonl'))}"
    ]
    first, second = plan_seeds(load_pipeline(_write(tmp_path, steps, HEAD), ["compare.seeds=2"]))
    assert first[2].upstream == ["sft", "pairs"]
    assert second[2].recipe.data.train == str(tmp_path / "sft" / "pairs-seed1" / "pairs.jsonl")
    assert second[1].output == tmp_path / "sft" / "pairs-seed1"


def test_a_seed_output_that_is_another_steps_output_is_refused(tmp_path: Path):
    steps = _demo_like(tmp_path)[:1]
    clash = {
        **steps[0],
        "name": "sft2",
        "set": [*steps[0]["set"], f"output_dir={json.dumps(str(tmp_path / 'sft-seed1'))}"],
    }
    from nl2sql_align.pipeline import plan_seeds

    pipe = load_pipeline(_write(tmp_path, [steps[0], clash], HEAD), ["compare.seeds=2"])
    with pytest.raises(RecipeError, match=r"would both write .*sft-seed1"):
        plan_seeds(pipe)


@pytest.mark.slow
def test_a_forked_step_exits_and_writes_as_the_command_does(tmp_path: Path, monkeypatch):
    """A step runs in a process forked from the pipeline's forkserver (where that is safe); its exit status and
    its files must be the ones `nl2sql-align ARGV` run by hand gives, success and failure alike."""
    import subprocess
    import sys

    # An earlier test may have started the forkserver under its own captured stdio, which makes later steps fall
    # back to fresh interpreters; start this test with none, so that the forked path is the one tested.
    from multiprocessing import forkserver

    import nl2sql_align._preload  # noqa: F401  (the forkserver ignores an ImportError here: a rename must fail)
    from nl2sql_align import pipeline
    from nl2sql_align.data import load_examples

    forkserver._forkserver._stop()
    monkeypatch.setattr(pipeline, "_forkserver_state", None)
    forking = pipeline._can_fork_steps()  # CPU-only torch under pytest: true on CI
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\ntrain_sampling_strategy = "group_by_lenght"\n')
    by_hand = subprocess.run([sys.executable, "-m", "nl2sql_align", "validate", str(bad), "--stage", "sft"])
    assert by_hand.returncode != 0
    assert pipeline._run_step_process(["validate", str(bad), "--stage", "sft"]) == by_hand.returncode
    assert (pipeline._forkserver_state is not None) == forking
    if forking:
        assert pipeline._can_fork_steps()  # the same environment and stdio: the next step forks too
    preds = tmp_path / "preds.sql"  # two gold queries and a wrong one: EX 2 of 3
    golds = [ex.sql for ex in load_examples("demo:dev", limit=3)]
    preds.write_text("\n".join([*golds[:2], "SELECT 1"]) + "\n")
    report = tmp_path / "report"
    argv = ["eval", "--data", "demo:dev", "--limit", "3", "--predictions", str(preds), "--report", str(report)]
    assert pipeline._run_step_process(argv) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n"] == 3 and round(summary["ex"], 1) == 66.7
    # Libraries read some variables once, at import: a step under another environment gets a fresh interpreter.
    monkeypatch.setenv("NL2SQL_ALIGN_TEST_VARIABLE", "1")
    assert not pipeline._can_fork_steps()
    forkserver._forkserver._stop()  # the next test starts its own, under its own stdio
