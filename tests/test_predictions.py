"""Predictions files: Spider text, BIRD JSON and our JSONL read, write, round-trip, and fail clearly."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nl2sql_align.errors import UserError
from nl2sql_align.predictions import detect_format, one_line, read_predictions, write_predictions
from tests.conftest import SPIDER
from tests.test_cli import cli

DBS = ["concert_singer", "concert_singer", "pets_1", "car_1"]
PREDS = [
    "SELECT count(*) FROM singer",
    "",  # an empty prediction (the model wrote nothing usable)
    "SELECT petid, weight FROM pets WHERE pet_age > 1",
    "SELECT Maker FROM MODEL_LIST WHERE Model = 'amc ✓'",  # non-ASCII text survives
]


# ---------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.sql", "p.txt"])
def test_each_format_round_trips(tmp_path: Path, name: str):
    path = tmp_path / name
    fmt = write_predictions(path, PREDS, DBS)
    assert fmt == {"jsonl": "jsonl", "json": "bird", "sql": "spider", "txt": "spider"}[name.split(".")[1]]
    assert detect_format(path, path.read_text()) == fmt
    assert read_predictions(path, len(PREDS), DBS) == PREDS


def test_written_files_are_in_the_official_layouts(tmp_path: Path):
    write_predictions(tmp_path / "pred.sql", PREDS, DBS)
    lines = (tmp_path / "pred.sql").read_text().splitlines()
    # test-suite's evaluation.py keeps `l.strip().split('\t')[0]`; the gold file format is SQL<TAB>db_id.
    assert lines[0] == "SELECT count(*) FROM singer\tconcert_singer" and len(lines) == 4
    write_predictions(tmp_path / "predict_dev.json", PREDS, DBS)
    obj = json.loads((tmp_path / "predict_dev.json").read_text())
    # BIRD's evaluation.py: `sql, db_name = sql_str.split('\t----- bird -----\t')`, values in key order.
    assert list(obj) == ["0", "1", "2", "3"]
    assert [v.split("\t----- bird -----\t") for v in obj.values()] == [[p, d] for p, d in zip(PREDS, DBS, strict=True)]


def test_multiline_sql_round_trips_exactly_in_json_formats_and_keeps_its_meaning_in_text(tmp_path: Path):
    sql = "SELECT name -- the singer's name\n  , '--x\tnot a comment' AS s\nFROM singer\t/* a\nblock */ WHERE age > 30"
    for name in ("p.jsonl", "p.json"):
        write_predictions(tmp_path / name, [sql], ["concert_singer"])
        assert read_predictions(tmp_path / name, 1) == [sql]
    write_predictions(tmp_path / "p.sql", [sql], ["concert_singer"])
    assert len((tmp_path / "p.sql").read_text().splitlines()) == 1
    flat = read_predictions(tmp_path / "p.sql", 1, ["concert_singer"])[0]
    assert flat == one_line(sql) and "\n" not in flat and "\t" not in flat
    db = sqlite3.connect(SPIDER / "database" / "concert_singer" / "concert_singer.sqlite")
    before, after = db.execute(sql).fetchall(), db.execute(flat).fetchall()
    # Same rows; only the tab inside the string literal became a space (the text format cannot hold it).
    assert len(before) == len(after) > 0
    assert [(n, s.replace("\t", " ")) for n, s in before] == after


# ---------------------------------------------------------------------------------------------------------
# Detection from the content


def test_format_is_detected_from_the_content_when_the_extension_says_nothing(tmp_path: Path):
    bird = tmp_path / "preds.txt"
    bird.write_text(json.dumps({"0": "SELECT 1\t----- bird -----\tconcert_singer"}))
    jsonl = tmp_path / "preds"
    jsonl.write_text('{"index": 0, "sql": "SELECT 2"}\n')
    spider = tmp_path / "preds.out"
    spider.write_text("SELECT 3\tconcert_singer\n")
    assert [detect_format(p, p.read_text()) for p in (bird, jsonl, spider)] == ["bird", "jsonl", "spider"]
    assert [read_predictions(p, 1, ["concert_singer"]) for p in (bird, jsonl, spider)] == [
        ["SELECT 1"],
        ["SELECT 2"],
        ["SELECT 3"],
    ]


# ---------------------------------------------------------------------------------------------------------
# Errors name the file and the line or key


def _error(path: Path, n: int, db_ids=None) -> str:
    with pytest.raises(UserError) as e:
        read_predictions(path, n, db_ids)
    return str(e.value)


def test_spider_text_errors(tmp_path: Path):
    p = tmp_path / "p.sql"
    p.write_text("SELECT 1\tconcert_singer\nSELECT 2\tconcert_singer\n")
    assert (
        _error(p, 3)
        == f"{p}: 2 lines for 3 examples; a Spider predictions file has one SQL per line, in the order of the data"
    )
    p.write_text("SELECT 1\tconcert_singer\nSELECT 2\tpets_1\nSELECT 3\tpets_1\n")
    msg = _error(p, 3, ["concert_singer", "concert_singer", "pets_1"])
    assert msg.startswith(f"{p}:2: db_id 'pets_1', but example 1 of the data is on 'concert_singer'")
    p.write_text("SELECT 1\tconcert_singer\textra\n")
    assert _error(p, 1).startswith(f"{p}:1: 2 tabs")
    # A trailing blank line is not a prediction; db_ids are only checked where the file has them.
    p.write_text("SELECT 1\nSELECT 2\tpets_1\n\n")
    assert read_predictions(p, 2, ["concert_singer", "pets_1"]) == ["SELECT 1", "SELECT 2"]


def test_bird_json_errors(tmp_path: Path):
    p = tmp_path / "predict_dev.json"
    sep = "\t----- bird -----\t"
    p.write_text(json.dumps({"0": f"SELECT 1{sep}a", "2": f"SELECT 3{sep}a"}))
    assert _error(p, 3) == f'{p}: key "1" missing; a BIRD predictions file has one key per example, "0" to "2"'
    p.write_text(json.dumps({"0": f"SELECT 1{sep}a", "1": f"SELECT 2{sep}b"}))
    assert _error(p, 2, ["a", "a"]).startswith(f"{p}: key \"1\": db_id 'b', but example 1 of the data is on 'a'")
    p.write_text(json.dumps({"0": f"SELECT 1{sep}a", "5": f"SELECT 2{sep}a"}))
    assert _error(p, 2) == f'{p}: key \'5\' is not an example index (expected "0" to "1")'
    p.write_text(json.dumps({"0": "SELECT 1\ta"}))
    assert _error(p, 1).startswith(f'{p}: key "0": expected a string "SQL\\t----- bird -----\\tdb_id"')
    p.write_text(json.dumps({"0": None}))
    assert _error(p, 1).startswith(f'{p}: key "0": expected a string')
    p.write_text('{"0": "SELECT 1' + sep.replace("\t", "\\t") + 'a", "0": "SELECT 2' + sep.replace("\t", "\\t") + 'a"}')
    assert _error(p, 1) == f"{p}: key '0' appears twice"
    p.write_text('{"0": "SELECT 1",\n  oops}')
    assert _error(p, 1).startswith(f"{p}:2: not valid JSON")
    p.write_text(json.dumps(["SELECT 1"]))
    assert "expected a BIRD predictions object" in _error(p, 1)


def test_jsonl_errors(tmp_path: Path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"index": 0, "sql": "SELECT 1"}\nnot json\n')
    assert _error(p, 2) == f'{p}:2: expected {{"index": <int>, "sql": <string>}}'
    p.write_text('{"index": 0, "sql": "SELECT 1"}\n{"index": 0, "sql": "SELECT 2"}\n')
    assert _error(p, 2) == f"{p}:2: index 0 again (first on line 1)"
    p.write_text('{"index": 7, "sql": "SELECT 1"}\n')
    assert _error(p, 2) == f"{p}:1: index 7 is outside the data (0..1)"
    p.write_text('{"index": 1, "sql": "SELECT 1", "db_id": "car_1"}\n')
    assert _error(p, 2, ["car_1", "pets_1"]).startswith(
        f"{p}:1: db_id 'car_1', but example 1 of the data is on 'pets_1'"
    )
    # Missing indexes are empty predictions (scored as failures), as before.
    p.write_text('{"index": 1, "sql": "SELECT 1"}\n')
    assert read_predictions(p, 3) == ["", "SELECT 1", ""]


# ---------------------------------------------------------------------------------------------------------
# The eval command: the same predictions in each format give the same scores


def _rows(report: Path) -> list[dict]:
    return [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]


def test_eval_scores_bird_json_spider_text_and_jsonl_alike(tmp_path: Path):
    from nl2sql_align.data import load_examples

    examples = load_examples(f"spider:{SPIDER}")
    # Right and wrong predictions: every third gold, a wrong table, a broken query, a swapped ORDER BY.
    preds = []
    for i, ex in enumerate(examples):
        preds.append([ex.sql, "SELECT count(*) FROM singer", "SELECT nope", ex.sql.replace("DESC", "ASC")][i % 4])
    db_ids = [ex.db_id for ex in examples]
    summaries, verdicts = {}, {}
    for name in ("pred.jsonl", "predict_dev.json", "pred.sql"):
        write_predictions(tmp_path / name, preds, db_ids)
        report = tmp_path / f"report-{name}"
        cli(
            "eval",
            "--data",
            f"spider:{SPIDER}",
            "--predictions",
            str(tmp_path / name),
            "--metric",
            "bird",
            "--report",
            str(report),
        )
        summaries[name] = json.loads((report / "summary.json").read_text())
        verdicts[name] = [r["correct"] for r in _rows(report)]
    assert summaries["predict_dev.json"]["ex"] == summaries["pred.jsonl"]["ex"] == summaries["pred.sql"]["ex"]
    assert verdicts["predict_dev.json"] == verdicts["pred.jsonl"] == verdicts["pred.sql"]
    assert 0 < summaries["pred.jsonl"]["ex"] < 100


def test_eval_rejects_predictions_for_other_databases_naming_the_key(tmp_path: Path):
    p = tmp_path / "predict_dev.json"
    p.write_text(json.dumps({str(i): "SELECT 1\t----- bird -----\tpets_1" for i in range(259)}))
    out = cli(
        "eval", "--data", f"spider:{SPIDER}", "--predictions", str(p), "--report", str(tmp_path / "r"), check=False
    )
    assert out.returncode == 2
    assert f"{p}: key \"0\": db_id 'pets_1', but example 0 of the data is on 'concert_singer'" in out.stderr


def test_eval_write_predictions_converts_and_round_trips(tmp_path: Path):
    # Read Spider's own gold file as predictions, write it as BIRD JSON, score that: same verdicts.
    gold = SPIDER / "dev_gold.sql"
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    out = cli(
        "eval",
        "--data",
        f"spider:{SPIDER}",
        "--limit",
        "20",
        "--predictions",
        str(gold),
        "--report",
        str(r1),
        "--write-predictions",
        str(tmp_path / "predict_dev.json"),
        check=False,
    )
    # --limit 20 against a 259-line file: the count must match the data.
    assert out.returncode == 2 and "259 lines for 20 examples" in out.stderr
    cli(
        "eval",
        "--data",
        f"spider:{SPIDER}",
        "--predictions",
        str(gold),
        "--report",
        str(r1),
        "--write-predictions",
        str(tmp_path / "predict_dev.json"),
    )
    cli("eval", "--data", f"spider:{SPIDER}", "--predictions", str(tmp_path / "predict_dev.json"), "--report", str(r2))
    assert [r["pred"] for r in _rows(r1)] == [r["pred"] for r in _rows(r2)]
    assert json.loads((r2 / "summary.json").read_text())["ex"] == 100.0


def test_eval_write_predictions_refuses_an_unknown_extension_before_running(tmp_path: Path):
    out = cli(
        "eval",
        "--data",
        f"spider:{SPIDER}",
        "--predictions",
        str(SPIDER / "dev_gold.sql"),
        "--report",
        str(tmp_path / "r"),
        "--write-predictions",
        str(tmp_path / "p.csv"),
        check=False,
    )
    assert out.returncode == 2 and "use .sql or .txt" in out.stderr
    assert not (tmp_path / "r").exists()


def test_eval_model_writes_predictions_the_reader_accepts(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "pred.sql"
    cli(
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        "demo:dev",
        "--limit",
        "4",
        "--report",
        str(tmp_path / "r"),
        "--set",
        "eval.max_new_tokens=8",
        "--write-predictions",
        str(out),
    )
    rows = _rows(tmp_path / "r")
    from nl2sql_align.data import load_examples

    db_ids = [ex.db_id for ex in load_examples("demo:dev", limit=4)]
    assert read_predictions(out, 4, db_ids) == [one_line(r["pred"]) for r in rows]
