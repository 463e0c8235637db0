"""Regenerate the official verdicts that tests/test_parity.py checks ours against.

This file contains no code of the official evaluators. It imports them from your own checkouts, runs their
comparison on every parity case, and writes the verdicts as data:

    python -m tests.regenerate_parity_fixtures \\
        --exec-eval PATH/TO/test-suite-sql-eval/exec_eval.py \\
        --bird-eval PATH/TO/mini_dev/evaluation/evaluation_ex.py

  --exec-eval  exec_eval.py of taoyds/test-suite-sql-eval (the verdicts in the repository were made at commit
               14784c3546b8aac64dc6ce018ce923bc5efbc75d). Its folder must hold parse.py; it needs sqlparse and
               tqdm. Called: `eval_exec_match(db, pred, gold, plug_value=False, keep_distinct=..., ...)` and,
               for the DISTINCT strings, `remove_distinct(postprocess(sql))`.
  --bird-eval  BIRD's per-pair comparison: bird-bench/mini_dev `evaluation/evaluation_ex.py` (commit
               47f116d828a45d139c0261cf804e610e031b572a; needs func_timeout and its evaluation_utils.py
               imports), or a revision of AlibabaResearch/DAMO-ConvAI `bird/llm/src/evaluation.py` with
               `execute_model(predicted_sql, ground_truth, db_place, idx, meta_time_out)` that compares
               `set(predicted_res) == set(ground_truth_res)` (not commit 1743ec4, whose `sort_tuple` sorts the
               cells of each row; refused below). Called: `execute_model(...)["res"]`.

It writes tests/fixtures/parity_mutations.jsonl (the mechanical mutations of every gold query of the Spider
sample, generated here, with their verdicts under three settings), parity_bird_sample.jsonl (predictions over
the BIRD sample's gold queries, on databases built by tests/test_parity.py) and parity_remove_distinct.jsonl
(each gold query as test-suite executes it), and then checks the verdicts written beside the hand-written
cases in tests/test_parity.py (HAND_WRITTEN, TRICKY_DISTINCT, the row-cap case), printing every one that
differs; those are edited by hand. Exit status 1 if any differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from nl2sql_align.data import load_examples
from tests import test_parity as tp
from tests.conftest import BIRD, SPIDER

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_module(path: Path, name: str):
    """Import a file of a user's checkout by path (its folder on sys.path, for its own sibling imports)."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------
# The mechanical mutations (our own generator; the cases it made are stored, so tests do not run it)


def _swap_first_two_columns(sql: str) -> str | None:
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except Exception:
        return None
    select = tree if isinstance(tree, exp.Select) else None
    if select is None or len(select.expressions) < 2:
        return None
    cols = list(select.expressions)
    cols[0], cols[1] = cols[1], cols[0]
    select.set("expressions", cols)
    return tree.sql(dialect="sqlite")


def mutations(gold: str) -> list[tuple[str, str]]:
    """(kind, predicted SQL) pairs: the same kinds of mistakes for every gold query; kinds are unique per gold."""
    out = [("gold", gold)]  # the gold itself, verbatim
    if re.search(r"\bdistinct\b", gold, re.I):
        out.append(("distinct_removed", re.sub(r"\bdistinct\b", "", gold, count=1, flags=re.I)))
    else:
        out.append(("distinct_added", re.sub(r"\bselect\b", "SELECT DISTINCT", gold, count=1, flags=re.I)))
    if re.search(r"\bdesc\b", gold, re.I):
        out.append(("order_desc_to_asc", re.sub(r"\bdesc\b", "ASC", gold, flags=re.I)))
    elif re.search(r"\border\s+by\b", gold, re.I):
        out.append(
            ("order_to_desc", re.sub(r"(\border\s+by\s+[\w.()*]+)(\s+asc\b)?", r"\1 DESC", gold, count=1, flags=re.I))
        )
    else:
        out.append(("order_added", gold.rstrip("; ") + " ORDER BY 1 DESC"))  # an order the gold does not ask for
    m = re.search(r"\blimit\s+(\d+)", gold, re.I)
    if m:
        out.append(("limit_changed", gold[: m.start(1)] + str(int(m.group(1)) + 1) + gold[m.end(1) :]))
    else:
        out.append(("limit_added", gold.rstrip("; ") + " LIMIT 2"))
    for a, b in (("max(", "min("), ("min(", "max("), ("avg(", "sum("), ("count(*)", "count(*) + 1")):
        if a in gold.lower():
            i = gold.lower().index(a)
            out.append(("aggregate_changed", gold[:i] + b + gold[i + len(a) :]))
            break
    m = re.search(r"([=<>]\s*)(\d+)\b", gold)
    if m:
        out.append(("literal_changed", gold[: m.start(2)] + str(int(m.group(2)) + 1) + gold[m.end(2) :]))
    swapped = _swap_first_two_columns(gold)
    if swapped:
        out.append(("columns_swapped", swapped))
    out.append(("extra_column", re.sub(r"\bselect\b", "SELECT 1 AS extra,", gold, count=1, flags=re.I)))
    return out


def bird_sample_predictions(records: list[dict]) -> list[str]:
    """Right and wrong predictions for the BIRD sample: gold, a flipped comparison, a wrong query, an error."""
    preds = []
    for i, r in enumerate(records):
        kind = i % 4
        if kind == 0:
            preds.append(r["SQL"])
        elif kind == 1:
            preds.append(r["SQL"].replace("=", "!=", 1) if "=" in r["SQL"] else r["SQL"] + " LIMIT 0")
        elif kind == 2:
            preds.append(f"SELECT count(*) FROM superhero WHERE id > {i % 3}")
        else:
            preds.append("SELECT no_such_column FROM superhero")
    return preds


# ---------------------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {path} ({len(rows)} rows, {path.stat().st_size:,} bytes)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exec-eval", type=Path, required=True, help="test-suite-sql-eval's exec_eval.py")
    ap.add_argument("--bird-eval", type=Path, required=True, help="BIRD's evaluation_ex.py or evaluation.py")
    ap.add_argument("--out", type=Path, default=FIXTURES, help="where the fixtures go (default: tests/fixtures)")
    args = ap.parse_args(argv)

    exec_eval = load_module(args.exec_eval.resolve(), "official_exec_eval")
    bird = load_module(args.bird_eval.resolve(), "official_bird_eval")
    if hasattr(bird, "sort_tuple"):
        sys.exit(
            f"{args.bird_eval}: this revision sorts the cells of every row (sort_tuple); our --metric bird "
            "follows the strict comparison (mini_dev's evaluation_ex.py). Use that file."
        )
    bird_extra = ("SQLite",) if "sql_dialect" in inspect.signature(bird.execute_model).parameters else ()

    def spider_verdict(db: Path, gold: str, pred: str, keep_distinct: bool) -> bool:
        return (
            exec_eval.eval_exec_match(
                str(db),
                pred,
                gold,
                plug_value=False,
                keep_distinct=keep_distinct,
                progress_bar_for_each_datapoint=False,
            )
            == 1
        )

    def bird_verdict(db: Path, gold: str, pred: str) -> bool:
        return bird.execute_model(pred, gold, str(db), 0, 30.0, *bird_extra)["res"] == 1

    differences: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        # A private copy: the official code opens databases read-write (and test-suite compares on every
        # .sqlite file in the database's folder; each folder of the sample holds one).
        root = Path(tmp) / "spider"
        root.mkdir()
        shutil.copy(SPIDER / "dev.json", root / "dev.json")
        shutil.copytree(SPIDER / "database", root / "database")
        examples = load_examples(f"spider:{root}")

        def db(ex) -> Path:
            return root / "database" / ex.db_id / f"{ex.db_id}.sqlite"

        # Mechanical mutations of every gold query.
        rows = []
        for i, ex in enumerate(examples):
            for kind, pred in mutations(ex.sql):
                rows.append(
                    {
                        "id": f"{i}:{kind}",
                        "example": i,
                        "db_id": ex.db_id,
                        "gold": ex.sql,
                        "pred": pred,
                        "spider": spider_verdict(db(ex), ex.sql, pred, False),
                        "spider_keep_distinct": spider_verdict(db(ex), ex.sql, pred, True),
                        "bird": bird_verdict(db(ex), ex.sql, pred),
                    }
                )
        write_jsonl(args.out / "parity_mutations.jsonl", rows)

        # Each gold query as test-suite executes it (postprocess, then remove_distinct).
        write_jsonl(
            args.out / "parity_remove_distinct.jsonl",
            [
                {"example": i, "sql": ex.sql, "scored": exec_eval.remove_distinct(exec_eval.postprocess(ex.sql))}
                for i, ex in enumerate(examples)
            ],
        )

        # Hand-written cases, whose verdicts are written in tests/test_parity.py.
        for case in tp.HAND_WRITTEN:
            ex = examples[case.example]
            official = (
                spider_verdict(db(ex), ex.sql, case.pred, False),
                spider_verdict(db(ex), ex.sql, case.pred, True),
                bird_verdict(db(ex), ex.sql, case.pred),
            )
            if official != (case.spider, case.keep, case.bird):
                differences.append(
                    f"HAND_WRITTEN ({case.example}, {case.pred!r}): official (spider, keep, bird) = "
                    f"{official}, written {(case.spider, case.keep, case.bird)}"
                )
        for sql, expected in tp.TRICKY_DISTINCT:
            official = exec_eval.remove_distinct(exec_eval.postprocess(sql))
            if official != expected:
                differences.append(f"TRICKY_DISTINCT {sql!r}: official {official!r}, written {expected!r}")
        pets = root / "database" / "pets_1" / "pets_1.sqlite"
        official = spider_verdict(pets, tp.ROW_CAP_GOLD, tp.ROW_CAP_PRED, False)
        if official != tp.ROW_CAP_OFFICIAL:
            differences.append(f"ROW_CAP_OFFICIAL: official {official}, written {tp.ROW_CAP_OFFICIAL}")

        # The BIRD sample's gold queries on databases built from its dev_tables.json.
        broot = Path(tmp) / "bird"
        tp.build_bird_sample_databases(BIRD, broot)
        records = json.loads((BIRD / "dev.json").read_text())
        rows = []
        for r, pred in zip(records, bird_sample_predictions(records), strict=True):
            bdb = broot / r["db_id"] / f"{r['db_id']}.sqlite"
            rows.append(
                {
                    "question_id": r["question_id"],
                    "db_id": r["db_id"],
                    "gold": r["SQL"],
                    "pred": pred,
                    "bird": bird_verdict(bdb, r["SQL"], pred),
                }
            )
        write_jsonl(args.out / "parity_bird_sample.jsonl", rows)

    for d in differences:
        print(d)
    print(f"{len(differences)} written verdicts differ from the official ones")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
