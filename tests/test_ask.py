"""`ask` on a trained micro model (conftest's subset_sft) and the demo shop database: it answers with the SQL
`eval` generates for the same question, its rows are the sandbox's, hostile SQL is refused in the output, and
questions piped on stdin get one JSON answer per line with --json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nl2sql_align import ask
from nl2sql_align.evaluate import eval_command, eval_recipe
from nl2sql_align.sql import SQLExecutor
from tests.conftest import REPO


@pytest.fixture(scope="module")
def evaluated(subset_sft, tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(the shop database, the trained model, eval's per-example rows on the SUBSET questions)."""
    from nl2sql_align.data import load_examples

    subset, model = subset_sft
    shop = Path(json.loads(subset.read_text().splitlines()[0])["db"])
    # The questions it trained on, and shop questions of demo:dev it never saw (their answers depend on the
    # prompt as a whole, so a prompt that differs from eval's shows).
    unseen = [ex for ex in load_examples("demo:dev") if ex.db.path == str(shop)][:8]
    data = tmp_path_factory.mktemp("ask") / "questions.jsonl"
    lines = [json.loads(line) for line in subset.read_text().splitlines()]
    lines += [{"question": ex.question, "sql": ex.sql, "db": str(shop)} for ex in unseen]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = data.parent / "eval"
    eval_command(str(data), report, model=str(model))
    rows = [json.loads(line) for line in (report / "per_example.jsonl").read_text().splitlines()]
    assert len(rows) > 8
    return shop, model, rows


def test_ask_answers_with_evals_sql_and_the_sandboxes_rows(evaluated, capsys):
    shop, model, rows = evaluated
    questions = [r["question"] for r in rows]
    answers = ask.ask_command(str(model), str(shop), questions, rows=100_000, json_=True)
    out = capsys.readouterr().out.splitlines()
    printed = [json.loads(line) for line in out]
    assert len(printed) == len(questions)
    assert [a["sql"] for a in printed] == [r["pred"] for r in rows]  # eval's prediction, question by question
    r, _ = eval_recipe(str(model), None)
    with SQLExecutor(timeout=r.eval.timeout) as executor:
        for a, p in zip(answers, printed, strict=True):
            direct = executor.execute(shop, a["sql"])
            assert p["error"] == direct.error
            if direct.ok:
                assert p["columns"] == direct.columns
                assert p["rows"] == json.loads(json.dumps([list(t) for t in direct.rows], default=str))
                assert p["row_count"] == len(direct.rows)
    assert any(a["error"] is None and a["rows"] for a in printed), "no question ran: the rows check saw nothing"
    # For people (no --json): the SQL and the rows' cells on stdout.
    ok = next(a for a in answers if a["error"] is None and a["rows"])
    ask.ask_command(str(model), str(shop), [ok["question"]], rows=3)
    text = capsys.readouterr().out
    assert ok["sql"] in text
    assert all(str(v) in text for v in ok["rows"][0] if v is not None)


class DropTable:
    """A generator stand-in that answers every question with a DROP TABLE (the one case not worth training a
    model into)."""

    backend = "hf"

    def complete(self, examples, *, num_samples=1, **kw):
        return [["```sql\nDROP TABLE customers\n```"] * num_samples for _ in examples]

    def close(self):
        pass


def test_ask_refuses_hostile_sql_in_its_output(evaluated, tmp_path, monkeypatch, capsys):
    shop, model, _ = evaluated
    copy = tmp_path / shop.name
    shutil.copy(shop, copy)
    monkeypatch.setattr(ask, "load_generator", lambda *a, **k: DropTable())
    (a,) = ask.ask_command(str(model), str(copy), ["Remove every customer."])
    text = capsys.readouterr().out
    assert a["sql"] == "DROP TABLE customers" and a["rows"] is None
    assert a["error"].startswith("refused")
    assert "DROP TABLE customers" in text and "refused" in text
    with SQLExecutor(timeout=5.0) as executor:
        assert executor.execute(copy, "SELECT COUNT(*) FROM customers").ok  # the table is still there


def test_ask_reads_stdin_and_prints_one_json_answer_per_line(evaluated):
    shop, model, rows = evaluated
    questions = [r["question"] for r in rows]  # all of them: eval's batch, so greedy decoding sees the same padding
    p = subprocess.run(
        [sys.executable, "-m", "nl2sql_align", "ask", "--model", str(model), "--db", str(shop), "--json"],
        input="\n".join(questions) + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == len(questions)  # one JSON object per question, nothing else on stdout
    answers = [json.loads(line) for line in lines]
    assert [a["question"] for a in answers] == questions
    assert [a["sql"] for a in answers] == [r["pred"] for r in rows]
