"""compare: error bars, the test against a baseline run, the tables (report.md and an 80-column terminal)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from nl2sql_align.compare import (
    add_paired_stats,
    correct_vector,
    pick_baseline,
    print_table,
    result_tables,
)
from nl2sql_align.errors import UserError


def _vec(n: int, right: set[int]) -> list[bool]:
    return [i in right for i in range(n)]


def _record(name: str, stage: str, vec: list[bool], **extra) -> dict:
    rec = {
        "name": name,
        "path": f"out/{name}",
        "stage": stage,
        "n": len(vec),
        "ex": round(100.0 * sum(vec) / len(vec), 2),
        "ex_complex": 31.25,
        "n_complex": 48,
        "executable": 97.33,
        "ex_by_hardness": {"easy": 80.0, "hard": 20.0},
        "train_seconds": 573.2,
        "steps": 80,
        "seconds_per_step": 2.013,
        "peak_memory_mb": 1035.0,
        "peak_memory_kind": "RSS",
        "tokens_per_second": 1234.0,
    }
    rec.update(extra)
    return rec


def _runs() -> tuple[list[dict], list[list[bool]]]:
    n = 150
    base = set(range(0, 150, 2))  # 75 right
    vectors = [
        _vec(n, base),  # sft
        _vec(n, base | {1, 3}),  # two more right: 2 of 150 questions differ
        _vec(n, base | set(range(1, 61, 2))),  # 30 more right, none lost
        _vec(n, base - set(range(0, 60, 2))),  # 30 fewer right
    ]
    names = [("dpo-sigmoid", "dpo/sigmoid"), ("sft-baseline", "sft"), ("grpo-lr3e-4", "grpo"), ("ppo-kl0.05", "ppo")]
    # The sft run is second in the list: the default baseline is the first sft run, wherever it is.
    order = [1, 0, 2, 3]
    recs = [_record(*names[i], vectors[j]) for i, j in zip(range(4), order, strict=True)]
    return recs, [vectors[j] for j in order]


def test_baseline_is_the_first_sft_run_unless_named():
    assert pick_baseline(["a", "b", "c"], ["dpo/kto", "sft", "sft"]) == 1
    assert pick_baseline(["a", "b"], ["grpo", "ppo"]) == 0
    assert pick_baseline(["a", "b", "c"], ["sft", "grpo", "ppo"], "c") == 2
    with pytest.raises(UserError, match="--baseline 'zzz'.*a, b"):
        pick_baseline(["a", "b"], ["sft", "grpo"], "zzz")


def test_each_run_gets_an_interval_a_difference_a_p_value_and_a_word():
    recs, vectors = _runs()
    base = pick_baseline([r["name"] for r in recs], [r["stage"] for r in recs])
    assert recs[base]["name"] == "sft-baseline"
    add_paired_stats(recs, vectors, base)
    by_name = {r["name"]: r for r in recs}
    for r in recs:
        lo, hi = r["ex_ci"]
        assert lo <= r["ex"] <= hi and hi - lo > 5  # n=150 near 50%: about +-8 points
        assert r["vs_baseline"]["baseline"] == "sft-baseline"
    assert by_name["sft-baseline"]["vs_baseline"]["verdict"] == "baseline"
    assert "p" not in by_name["sft-baseline"]["vs_baseline"]
    close = by_name["dpo-sigmoid"]["vs_baseline"]
    assert close["verdict"] == "no detectable difference"
    assert (close["wins"], close["losses"]) == (2, 0) and close["p"] == pytest.approx(0.5)
    assert close["diff"] == pytest.approx(1.33) and close["diff_ci"][0] <= 0 <= close["diff_ci"][1] + 1e-9
    better = by_name["grpo-lr3e-4"]["vs_baseline"]
    assert better["verdict"] == "better" and better["diff"] == pytest.approx(20.0) and better["wins"] == 30
    assert better["per_minute"] == pytest.approx(20.0 / (573.2 / 60), abs=1e-3)  # EX points per training minute
    assert better["diff_ci"][0] > 0
    worse = by_name["ppo-kl0.05"]["vs_baseline"]
    assert worse["verdict"] == "worse" and worse["losses"] == 30 and worse["diff_ci"][1] < 0
    # Another baseline changes every comparison.
    add_paired_stats(recs, vectors, 2)
    assert by_name["grpo-lr3e-4"]["vs_baseline"]["verdict"] == "baseline"
    assert by_name["sft-baseline"]["vs_baseline"]["verdict"] == "worse"


def _summary() -> dict:
    recs, vectors = _runs()
    add_paired_stats(recs, vectors, 1)
    return {
        "data": "demo:dev",
        "n": 150,
        "metric": "spider",
        "machine": {"platform": "Linux-6.1-x86_64-with-glibc2.36", "python": "3.11", "cpus": 2, "gpu": "no GPU"},
        "runs": recs,
    }


def test_terminal_table_fits_80_columns_without_cutting_names_or_numbers():
    summary = _summary()
    out = io.StringIO()
    print_table(summary, console=Console(width=80, file=out, force_terminal=False, color_system=None))
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    for r in summary["runs"]:
        # Whole on one line: a name or a figure folded across lines would not be found.
        assert any(r["name"] in line for line in lines), r["name"]
        assert any(f" {r['ex']:.1f} " in line for line in lines), r["ex"]
        vs = r["vs_baseline"]
        if "diff" in vs:
            assert any(f"{vs['diff']:+.1f}" in line for line in lines)
    # The words, in the first table (the caption under the second also names them).
    first = "\n".join(lines[: next(i for i, line in enumerate(lines) if "training cost" in line)])
    for word in ("better", "worse", "baseline", "detectable", "difference"):
        assert word in first, word


def test_report_table_has_intervals_tests_and_memory_in_binary_units():
    summary = _summary()
    text = "\n".join(result_tables(summary["runs"]))
    header = text.splitlines()[0]
    for col in ("EX %", "EX 95% CI", "Δ EX vs sft-baseline", "McNemar p", "vs sft-baseline", "peak mem"):
        assert col in header
    by_name = {r["name"]: r for r in summary["runs"]}
    grpo = by_name["grpo-lr3e-4"]
    lo, hi = grpo["ex_ci"]
    assert f"| grpo-lr3e-4 | grpo | {grpo['ex']:.1f} | [{lo:.1f}, {hi:.1f}] | +20.0 |" in text
    assert "| better |" in text and "| worse |" in text and "| no detectable difference |" in text
    assert "| sft-baseline | sft | 50.0 | " in text and "| baseline |" in text
    # 1035 MiB reads as GiB, as on the cost chart; no raw MB figure.
    assert "1.01 GiB" in text and "1035" not in text
    # Runs from a GPU and a CPU side by side say which memory each is.
    summary["runs"][0].update(peak_memory_mb=81920.0, peak_memory_kind="CUDA")
    text = "\n".join(result_tables(summary["runs"]))
    assert "80.0 GiB (CUDA)" in text and "1.01 GiB (RSS)" in text


def test_tables_still_render_an_older_summary_without_statistics():
    # scripts/readme_demo.py renders summary.json files written before the statistics existed.
    recs, _ = _runs()
    text = "\n".join(result_tables(recs))
    assert "| sft-baseline | sft | 50.0 | - | - | - | - | - |" in text


def test_correct_vector_reads_the_per_example_rows_in_data_order(tmp_path: Path):
    rows = [{"index": 2, "correct": True}, {"index": 0, "correct": False}, {"index": 1, "correct": True}]
    (tmp_path / "per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert correct_vector(tmp_path) == [False, True, True]


def test_seed_stats_against_independent_values():
    """Per-seed EX, mean, sample sd (n - 1) and each run's difference to the same seed's baseline."""
    import statistics

    from nl2sql_align.seeds import add_seed_stats, seed_markdown

    def summary(sft: float, grpo: float) -> dict:
        return {"baseline": "sft", "runs": [{"name": "sft", "ex": sft}, {"name": "grpo", "ex": grpo}]}

    per_seed = [summary(21.4, 22.1), summary(19.3, 17.9), summary(15.2, 17.2)]
    main = per_seed[0]
    add_seed_stats(main, per_seed)
    sft, grpo = (r["seeds"] for r in main["runs"])
    assert sft["ex"] == [21.4, 19.3, 15.2] and "diff" not in sft
    assert sft["mean"] == pytest.approx(statistics.mean([21.4, 19.3, 15.2]), abs=0.005)
    assert sft["sd"] == pytest.approx(statistics.stdev([21.4, 19.3, 15.2]), abs=0.005)
    assert (sft["min"], sft["max"]) == (15.2, 21.4)
    assert grpo["diff"] == [0.7, -1.4, 2.0]
    assert grpo["diff_mean"] == pytest.approx(statistics.mean([0.7, -1.4, 2.0]), abs=0.005)
    assert main["seeds"] == 3
    rows = [line for line in seed_markdown(main) if line.startswith("| grpo |")]
    assert rows == ["| grpo | 22.1 17.9 17.2 | 19.1 | 2.6 | 17.2-22.1 | +0.7 -1.4 +2.0 | +0.4 |"]
    one = summary(21.4, 22.1)
    add_seed_stats(one, [one])
    assert one["runs"][0]["seeds"]["sd"] is None and seed_markdown(one) == []
