"""Reward-hacking guards: find training examples an execution reward cannot tell apart from a guess.

Known hacks (docs/DESIGN.md, "Published reward designs"): a query that returns nothing matches every gold query
whose result is empty; on small databases, queries that ignore the question (SELECT 0, SELECT COUNT(*) FROM
some_table, SELECT some_column FROM some_table) match many gold results. Here each example's gold result is
compared with a fixed set of such question-independent probes on its database; an example whose gold result
is empty, equals a constant (SELECT 0, 1 or NULL: a guess needs no database at all), or equals the result of
two or more table/column probes, is reported, and can be dropped ([reward] drop_empty_gold /
drop_trivial_gold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nl2sql_align.data import Example
from nl2sql_align.data.schema import read_schema
from nl2sql_align.rewards.engine import RewardEngine
from nl2sql_align.sql import Database, ExecResult, verdict

CONSTANT_PROBES = ("SELECT 0", "SELECT 1", "SELECT NULL")
TRIVIAL_MATCHES = 2  # table/column probes that match a gold result before it counts as guessable
MAX_COLUMN_PROBES = 200  # per database: wide BIRD schemas must not turn the audit into a benchmark


@dataclass
class GoldAudit:
    failing: list[tuple[Example, str]] = field(default_factory=list)  # gold SQL that does not run, and why
    empty: list[Example] = field(default_factory=list)
    trivial: list[tuple[Example, list[str]]] = field(default_factory=list)  # with the probes that match it

    def report(self, n: int) -> list[str]:
        lines = []
        if self.empty:
            ids = ", ".join(ex.id for ex in self.empty[:5]) + (" ..." if len(self.empty) > 5 else "")
            lines.append(
                f"{len(self.empty)}/{n} examples have an empty gold result (any query that returns nothing "
                f"matches them): {ids}"
            )
        if self.trivial:
            ex, probes = self.trivial[0]
            lines.append(
                f"{len(self.trivial)}/{n} examples are matched by a constant or {TRIVIAL_MATCHES}+ question-independent queries, "
                f"e.g. {ex.id} by {'; '.join(probes[:3])}"
            )
        return lines


def probe_queries(db: Database) -> list[str]:
    """Question-independent queries: constants, a row count per table, each column of each table."""
    probes = list(CONSTANT_PROBES)
    columns = []
    for t in read_schema(db, example_values=0):
        table = _q(t.name)
        probes.append(f"SELECT COUNT(*) FROM {table}")
        columns += [f"SELECT {_q(c.name)} FROM {table}" for c in t.columns]
    return probes + columns[:MAX_COLUMN_PROBES]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def audit_gold(examples: list[Example], engine: RewardEngine) -> GoldAudit:
    """Execute every gold query once (through the engine's cache) and classify the examples."""
    audit = GoldAudit()
    golds = engine.gold_results([(ex.db, ex.sql, ex.dialect) for ex in examples])
    probe_results: dict[Database, list[tuple[str, ExecResult]]] = {}
    for db in dict.fromkeys(ex.db for ex in examples):
        queries = probe_queries(db)
        results = engine.executor.execute_many([(db, q) for q in queries])
        probe_results[db] = [(q, r) for q, r in zip(queries, results, strict=True) if r.ok]
    for ex, g in zip(examples, golds, strict=True):
        if not g.ok:
            audit.failing.append((ex, g.error or "failed"))
            continue
        if not g.rows:
            audit.empty.append(ex)
            continue
        shape = (len(g.rows), len(g.rows[0]))
        matches = [
            q
            for q, r in probe_results[ex.db]
            if r.rows and (len(r.rows), len(r.rows[0])) == shape and verdict(g, r, ex.sql, engine.metric)
        ]
        if len(matches) >= TRIVIAL_MATCHES or any(q in CONSTANT_PROBES for q in matches):
            audit.trivial.append((ex, matches))
    return audit
