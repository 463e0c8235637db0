"""The bad-input matrix: each broken input exits 2 with a message naming the problem and the fix, without a
traceback, and leaves no output behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SPIDER

SPIDER_DB = SPIDER / "database" / "concert_singer" / "concert_singer.sqlite"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _jsonl(path: Path, *records) -> Path:
    return _write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _recipe(tmp: Path, model: Path, train: str, out: Path, extra: str = "") -> Path:
    return _write(
        tmp / "r.toml",
        (
            f'output_dir = "{out}"\n[model]\nname_or_path = "{model}"\n[data]\ntrain = "{train}"\n'
            f'[train]\nmax_steps = 1\nreport_to = "none"\n{extra}'
        ),
    )


GOOD = {"question": "How many singers are there?", "sql": "SELECT count(*) FROM singer", "db": str(SPIDER_DB)}


def _case(name: str, tmp: Path, model: Path, out: Path) -> tuple[list[str], list[str]]:
    """(command line, phrases the error must contain)."""
    if name == "missing recipe file":
        return ["sft", "--recipe", str(tmp / "nope.toml")], ["recipe not found", "nope.toml"]
    if name == "TOML syntax error":
        return ["sft", "--recipe", str(_write(tmp / "r.toml", "output_dir = \n"))], [
            "r.toml",
            "not valid TOML",
            "line 1",
        ]
    if name == "unknown key":
        bad = _recipe(tmp, model, "demo:train", out, "[lora]\nalhpa = 8\n")
        return ["sft", "--recipe", str(bad)], ["r.toml", "unknown key 'lora.alhpa'", "did you mean 'alpha'"]
    if name == "wrong type":
        bad = _recipe(tmp, model, "demo:train", out, '[lora]\nr = "eight"\n')
        return ["sft", "--recipe", str(bad)], ["r.toml", "lora.r = 'eight'", "expected int"]
    if name == "missing database file":
        data = _jsonl(tmp / "d.jsonl", {**GOOD, "db": "gone.sqlite"})
        return ["sft", "--recipe", str(_recipe(tmp, model, data, out))], [
            "d.jsonl:1",
            "database 'gone.sqlite' not found",
            "db_dir",
        ]
    if name == "malformed JSONL line":
        data = _jsonl(tmp / "d.jsonl", GOOD, '{"question": "x", "sql": ')
        return ["sft", "--recipe", str(_recipe(tmp, model, data, out))], ["d.jsonl:2", "not valid JSON"]
    if name == "gold SQL that fails":
        data = _jsonl(tmp / "d.jsonl", GOOD, {**GOOD, "sql": "SELECT nope FROM singer"})
        return ["grpo", "--recipe", str(_recipe(tmp, model, data, out))], [
            "d.jsonl:2",
            "gold queries fail",
            "Fix or remove",
        ]
    if name == "empty dataset":
        data = _write(tmp / "d.jsonl", "\n")
        return ["sft", "--recipe", str(_recipe(tmp, model, data, out))], ["d.jsonl", "no examples found"]
    if name == "output dir not writable":
        blocker = _write(tmp / "a-file", "")  # a file where the output's parent folder should be
        bad = _recipe(tmp, model, "demo:train", blocker / "out")
        return ["sft", "--recipe", str(bad)], ["cannot create the output folder", "writable output_dir"]
    if name == "adapter dir without a base":
        adapter = tmp / "adapter"
        adapter.mkdir()
        _write(adapter / "adapter_config.json", json.dumps({"base_model_name_or_path": str(tmp / "deleted-base")}))
        return ["merge", "--adapter", str(adapter), "--output", str(out)], ["deleted-base", "base_model_name_or_path"]
    raise AssertionError(name)


CASES = [
    "missing recipe file",
    "TOML syntax error",
    "unknown key",
    "wrong type",
    "missing database file",
    "malformed JSONL line",
    "gold SQL that fails",
    "empty dataset",
    "output dir not writable",
    "adapter dir without a base",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_exits_2_with_a_clear_message_and_no_output(name, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    argv, phrases = _case(name, tmp_path, tiny_model_dir, out)
    p = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=300,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    for phrase in phrases:
        assert phrase in p.stderr, (phrase, p.stderr[-2000:])
    assert not out.exists() and not (tmp_path / ".out.partial").exists()
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".out")]
