"""Self-consistency: the execution-result vote on hand-made results, and `eval --samples` end to end."""

from __future__ import annotations

import json
from collections import Counter
from math import comb
from pathlib import Path

import pytest

from nl2sql_align.evaluate import result_groups, vote
from nl2sql_align.sql import ExecResult
from tests.test_cli import cli


def ok(*rows: tuple) -> ExecResult:
    return ExecResult(rows=list(rows), columns=None, error=None)


FAIL = ExecResult(rows=None, columns=None, error="no such column: x")


def _vote(results: list[ExecResult], metric: str = "spider") -> int:
    return vote([f"q{i}" for i in range(len(results))], results, metric)


def test_majority_wins():
    assert _vote([ok((1,)), ok((2,)), ok((2,)), ok((3,))]) == 1
    assert _vote([ok((1,)), ok((2,)), ok((3,)), ok((3,)), ok((3,)), ok((2,))]) == 2


def test_failures_are_dropped_not_grouped():
    # Three failures would be the largest "group" if failures were grouped together.
    assert _vote([FAIL, FAIL, ok((5,)), FAIL]) == 2
    assert result_groups([FAIL, ok((5,)), FAIL]) == [None, 0, None]


def test_tie_goes_to_the_group_sampled_first():
    assert _vote([ok((1,)), ok((2,)), ok((2,)), ok((1,))]) == 0
    assert _vote([FAIL, ok((2,)), ok((1,)), ok((1,)), ok((2,))]) == 1
    assert _vote([ok((1,)), ok((2,))]) == 0


def test_all_failed_gives_the_first_candidate():
    assert _vote([FAIL, FAIL, FAIL]) == 0
    assert _vote([]) == 0


def test_row_order_does_not_split_a_group():
    results = [ok((9,)), ok((1, "a"), (2, "b")), ok((2, "b"), (1, "a"))]
    assert _vote(results) == 1
    assert result_groups(results) == [0, 1, 1]


def test_duplicates_count_for_spider_not_for_bird():
    results = [ok((1,)), ok((1,), (1,)), ok((1,), (1,))]
    assert _vote(results, "spider") == 1  # multisets: {1} and {1, 1} differ
    assert result_groups(results, "bird") == [0, 0, 0]  # sets: all the same answer


def test_a_result_cut_at_the_row_cap_is_its_own_group():
    cut = ExecResult(rows=[(1,)], columns=None, error=None, truncated=True)
    assert result_groups([ok((1,)), cut, cut]) == [0, 1, 1]


def test_eval_samples_reports_greedy_and_voted(tiny_model_dir: Path, tmp_path: Path):
    report = tmp_path / "r"
    out = cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        "demo:dev",
        "--limit",
        "6",
        "--report",
        str(report),
        "--samples",
        "4",
        "--temperature",
        "1.0",
        "--set",
        "eval.max_new_tokens=16",
    )
    assert "maj@4" in out.stdout and "pass@4" in out.stdout  # greedy EX, voted EX (maj@4) and pass@k
    summary = json.loads((report / "summary.json").read_text())
    assert {"ex", "ex_voted", "executable"} <= set(summary)
    assert summary["samples"] == 4 and summary["temperature"] == 1.0 and summary["n"] == 6
    rows = [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        cands = r["candidates"]
        assert len(cands) == 4
        # Group sizes agree with the group numbers, and failures are in no group.
        sizes = Counter(c["group"] for c in cands if c["group"] is not None)
        for c in cands:
            assert c["group_size"] == (sizes[c["group"]] if c["executable"] else 0)
            assert (c["group"] is None) == (not c["executable"])
        # The vote recomputed from the stored groups: the first member of the largest, earliest group.
        expected = min(sizes, key=lambda k: (-sizes[k], k)) if sizes else None
        i = next(j for j, c in enumerate(cands) if c["group"] == expected) if sizes else 0
        assert r["voted_index"] == i
        assert r["voted_pred"] == cands[i]["sql"]
        assert r["voted_correct"] == cands[i]["correct"]
        assert r["voted_executable"] == cands[i]["executable"]
    voted = round(100.0 * sum(r["voted_correct"] for r in rows) / len(rows), 2)
    greedy = round(100.0 * sum(r["correct"] for r in rows) / len(rows), 2)
    assert summary["ex_voted"] == voted and summary["ex"] == greedy
    # pass@k from the candidates' own verdicts: 1 - C(n-c, k) / C(n, k), averaged over questions.
    counts = [sum(c["correct"] for c in r["candidates"]) for r in rows]
    assert [r["samples_correct"] for r in rows] == counts
    expected = {str(k): 100 * sum(1 - comb(4 - c, k) / comb(4, k) for c in counts) / 6 for k in (1, 2, 4)}
    assert summary["pass_at_k"] == pytest.approx(expected, abs=0.006)  # rounded to 2 decimals
    assert (report / "pass_at_k.png").is_file()


def test_samples_need_a_model_and_a_temperature(tmp_path: Path):
    from tests.conftest import SPIDER

    p = cli(
        "eval",
        "--data",
        f"spider:{SPIDER}",
        "--predictions",
        str(SPIDER / "dev_gold.sql"),
        "--report",
        str(tmp_path / "r"),
        "--samples",
        "4",
        check=False,
    )
    assert p.returncode == 2 and "--samples needs --model" in p.stderr
    p = cli(
        "eval",
        "--data",
        "demo:dev",
        "--model",
        "nowhere",
        "--report",
        str(tmp_path / "r"),
        "--samples",
        "4",
        "--temperature",
        "0",
        check=False,
    )
    assert p.returncode == 2 and "temperature above 0" in p.stderr


def test_score_predictions_votes_on_executed_candidates(tmp_path: Path, spider_db: Path):
    from nl2sql_align.data import load_examples
    from nl2sql_align.evaluate import score_predictions, summarize
    from nl2sql_align.sql import SQLExecutor

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "sql": "SELECT count(*) FROM singer", "db": str(spider_db)}) + "\n")
    examples = load_examples(str(data))
    cands = [
        [
            "SELECT nope FROM singer",
            "SELECT count(*) FROM stadium",
            "SELECT count(*) FROM singer",
            "SELECT count(singer_id) FROM singer",
            "SELECT count(*) FROM singer",
        ]
    ]
    with SQLExecutor(workers=1, timeout=5.0) as ex:
        jobs: list[int] = []
        run = ex.execute_many
        ex.execute_many = lambda js, progress=False: jobs.append(len(js)) or run(js, progress=progress)
        rows = score_predictions(examples, ["SELECT count(*) FROM stadium"], executor=ex, candidates=cands)
    assert jobs[-1] == 4  # the repeated candidate ran once
    r = rows[0]
    assert not r["correct"] and r["voted_correct"] and r["voted_index"] == 2
    assert [c["group"] for c in r["candidates"]] == [None, 0, 1, 1, 1]
    assert [c["group_size"] for c in r["candidates"]] == [0, 1, 3, 3, 3]
    assert [c["correct"] for c in r["candidates"]] == [False, False, True, True, True]
    summary = summarize(rows, "spider")
    assert summary["ex"] == 0.0 and summary["ex_voted"] == 100.0
    assert "ex_voted" not in summarize([{k: v for k, v in r.items() if not k.startswith("voted")}], "spider")


def test_recipe_eval_samples_vote_after_training_as_eval_does(tiny_model_dir: Path, tmp_path: Path):
    """`[eval] samples` gives the after-training eval (and compare) the same self-consistency as `eval --samples`:
    same candidates, same vote."""
    from nl2sql_align.data import load_examples
    from nl2sql_align.evaluate import evaluate
    from nl2sql_align.generation import load_generator
    from nl2sql_align.recipe import load_recipe
    from tests.conftest import REPO

    recipe_path = REPO / "recipes" / "tiny-sft.toml"
    r = load_recipe(recipe_path, ["eval.samples=3", "eval.temperature=1.0", "eval.max_new_tokens=16"])
    summary, _ = evaluate(
        load_examples("demo:dev", limit=5),
        r,
        generator=load_generator(str(tiny_model_dir), r),
        report_dir=tmp_path / "a",
        print_table=False,
    )
    cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        "demo:dev",
        "--limit",
        "5",
        "--report",
        str(tmp_path / "b"),
        "--recipe",
        str(recipe_path),
        "--samples",
        "3",
        "--temperature",
        "1.0",
        "--set",
        "eval.max_new_tokens=16",
    )
    other = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["samples"] == other["samples"] == 3 and "ex_voted" in summary
    assert summary["ex_voted"] == other["ex_voted"] and summary["ex"] == other["ex"]

    def cands(d: Path) -> list[list[str]]:
        rows = [json.loads(line) for line in (d / "per_example.jsonl").read_text().splitlines()]
        return [[c["sql"] for c in row["candidates"]] for row in rows]

    assert cands(tmp_path / "a") == cands(tmp_path / "b") and all(len(c) == 3 for c in cands(tmp_path / "a"))
