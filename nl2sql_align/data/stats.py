"""`nl2sql-align data SPEC --stats`: what a data set holds before anything trains on it."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from nl2sql_align.data.example import Example
from nl2sql_align.sql.hardness import level_of


def data_stats(examples: list[Example], spec: str) -> dict[str, Any]:
    """Counts per level (the data's own label, else the Spider level of the gold SQL, as reports group them),
    per database and per engine, and the question and gold SQL lengths in characters."""

    def lengths(xs: list[int]) -> dict[str, float]:
        return {"median": statistics.median(xs), "max": max(xs)} if xs else {"median": 0, "max": 0}

    levels = Counter(level_of(ex.hardness, ex.sql, ex.dialect) for ex in examples)
    return {
        "data": spec,
        "n": len(examples),
        "by_level": dict(levels.most_common()),
        "by_db": dict(sorted(Counter(ex.db_id for ex in examples).items())),
        "by_engine": dict(Counter(ex.db.engine for ex in examples).most_common()),
        "with_evidence": sum(bool(ex.evidence) for ex in examples),
        "question_chars": lengths([len(ex.question) for ex in examples]),
        "sql_chars": lengths([len(ex.sql) for ex in examples]),
    }


def print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{stats['data']}: {stats['n']} examples, {len(stats['by_db'])} databases")
    table.add_column("group")
    table.add_column("value", overflow="fold")
    table.add_column("n", justify="right")
    for name, key in (("level", "by_level"), ("engine", "by_engine"), ("database", "by_db")):
        for value, n in stats[key].items():
            table.add_row(name, str(value), str(n))
    table.add_row("with evidence", "", str(stats["with_evidence"]))
    for key in ("question_chars", "sql_chars"):
        table.add_row(key.replace("_", " "), "median / max", f"{stats[key]['median']:g} / {stats[key]['max']}")
    Console().print(table)
