"""Spider's hardness levels (easy, medium, hard, extra), computed on sqlglot's AST.

The official rules live in the Spider evaluator (`evaluation.py` in taoyds/spider and in
taoyds/test-suite-sql-eval: `Evaluator.eval_hardness`, `count_component1`, `count_component2`,
`count_others`), which work on the dict that the official `process_sql.get_sql` parser builds. Three counts
are taken on the top-level query only (nested queries are never looked into):

    component1  one each for WHERE, GROUP BY, ORDER BY, LIMIT present; one per table in FROM beyond the
                first (a derived table counts as a table); one per OR and one per LIKE predicate (NOT LIKE
                too) in the join conditions, WHERE and HAVING
    component2  one per nested query that is the value of a predicate in the join conditions, WHERE or HAVING
                (`x IN (SELECT ...)`, `x > (SELECT ...)`), plus one if an INTERSECT/UNION/EXCEPT follows
                (a chain of set operations counts once)
    others      one each for: more than one "aggregate" (see below), more than one SELECT column, more than
                one WHERE predicate, more than one GROUP BY column

    easy    component1 <= 1 and others == 0 and component2 == 0
    medium  component2 == 0 and (others <= 2 and component1 <= 1  or  component1 <= 2 and others < 2)
    hard    component2 == 0 and (others > 2 and component1 <= 2  or  2 < component1 <= 3 and others <= 2)
            or component1 <= 1 and others == 0 and component2 <= 1
    extra   everything else

The official aggregate count (`count_agg`) is reproduced as the code computes it, not as its comment says:
it counts the aggregates of the SELECT columns, the GROUP BY columns and the ORDER BY expressions, but on
the WHERE and HAVING condition lists the test `unit[0] != 0` reads the predicate's NOT flag, and on HAVING it
also sees the "and"/"or" connectors (non-empty strings). So a WHERE predicate counts as an aggregate when it
is negated (NOT IN, NOT LIKE, NOT BETWEEN), a HAVING predicate likewise, each AND/OR inside HAVING counts
one, and an aggregate inside HAVING (`HAVING count(*) > 1`) counts nothing. Reproducing this quirk keeps the
levels equal to the official evaluator's, which are the ones published Spider breakdowns use.

Quirks of the official parser that change counts, reproduced for the same reason:
  * A predicate's value that is not a number, a string or a query (a column: `T1.a = T2.b`) is read by
    skipping to the next AND, so the OR-connected predicates after it are not in the parse; if one of them
    holds a parenthesis or a nested query, the parser stops reading the query there (later clauses vanish).
  * Values in double quotes (Spider's style: `name = "Bob"`) are strings, not quoted identifiers.
  * `A UNION B UNION C` nests to the right: the top-level query is A, one set operation; an ORDER BY or LIMIT
    after the last operand belongs to that operand, not to A.
Checked against the official evaluator (its parser on the raw SQL, then eval_hardness): all 259 gold queries
of the Spider sample in the shared data and 19,000 random Spider-style queries over its schemas give the same
three counts and level (tests/test_hardness.py holds the sample comparison and hand-labelled cases).

Where this differs from the official parser, and why:
  * SQL the official parser rejects still gets a level here, by the same rules applied to what the AST
    holds: parenthesised and/or groups are flattened; comma joins count as joins; NOT EXISTS, IS NOT NULL and
    other negations count as negated predicates; a nested query anywhere else in the top-level query (a
    scalar subquery in SELECT, GROUP BY or ORDER BY, or an EXISTS) counts in component2, and so does each
    CTE of a WITH clause. The official parser cannot read these, so there is no official level to follow.
  * A derived table in FROM (`FROM (SELECT ...)`) counts only as a table, as in the official code, which
    never looks for nested queries in FROM.
  * Aggregates are the official five (COUNT, SUM, AVG, MIN, MAX); every call found in a SELECT column,
    GROUP BY or ORDER BY expression counts, where the official parser reads at most one per column (it
    cannot parse more, e.g. `max(a) - min(a)`).
  * SQL that sqlglot cannot parse, or that is not a single query, gets UNKNOWN; so does any text the
    analysis fails on (parsed with the guard's `parse_untrusted`: deep nesting, NUL characters and the like
    never raise), since predictions are untrusted model output.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from sqlglot import exp

from nl2sql_align.sql.guard import parse_untrusted

SPIDER_LEVELS = ("easy", "medium", "hard", "extra")
BIRD_LEVELS = ("simple", "moderate", "challenging")
UNKNOWN = "unknown"
# The Spider levels that reports group as "complex".
COMPLEX_LEVELS = ("hard", "extra")

_AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)


class HardnessCounts(NamedTuple):
    component1: int
    component2: int
    others: int


def level_from_counts(c: HardnessCounts) -> str:
    """The official thresholds (`Evaluator.eval_hardness`)."""
    c1, c2, others = c
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (
        (others > 2 and c1 <= 2 and c2 == 0)
        or (2 < c1 <= 3 and others <= 2 and c2 == 0)
        or (c1 <= 1 and others == 0 and c2 <= 1)
    ):
        return "hard"
    return "extra"


def spider_hardness(sql: str, dialect: str | None = None) -> str:
    """The Spider level of `sql`: "easy", "medium", "hard" or "extra" by the official rules (module docstring);
    UNKNOWN ("unknown") when sqlglot cannot parse it in `dialect` or it is not exactly one query."""
    counts = hardness_counts(sql, dialect)
    return UNKNOWN if counts is None else level_from_counts(counts)


def level_of(label: str | None, sql: str, dialect: str | None = None) -> str:
    """The level reports and `data --stats` group an example under: the data's own label when it has one
    (BIRD's difficulty, a `hardness` field), else the Spider level of its gold SQL."""
    return str(label or spider_hardness(sql, dialect))


@lru_cache(maxsize=65536)  # reports classify the same gold SQL more than once
def hardness_counts(sql: str, dialect: str | None = None) -> HardnessCounts | None:
    """The three official counts of the top-level query, or None if it cannot be parsed as one query.
    Never raises for any `sql`: a failure anywhere in the analysis is None too."""
    parsed, _ = parse_untrusted(sql, dialect)
    if parsed is None:
        return None
    try:
        return _counts(parsed)
    except Exception:  # noqa: BLE001  untrusted text: no level rather than a crash
        return None


def _counts(parsed: list[exp.Expression | None]) -> HardnessCounts | None:
    statements = [s for s in parsed if s is not None]
    if len(statements) != 1:
        return None
    root = statements[0]
    while isinstance(root, exp.Subquery):
        root = root.this
    if not isinstance(root, exp.Query):
        return None
    with_ = root.args.get("with_") or root.args.get("with")
    ctes = len(with_.expressions) if with_ else 0
    # Set operations nest to the left in sqlglot (A UNION B UNION C is Union(Union(A, B), C)), to the right in
    # the official parser (A with B.union = C): the official top-level query is the leftmost SELECT, and the
    # ORDER BY / LIMIT after the last operand belong to that operand there, so they are not the top's.
    set_ops = 0
    top = root
    while isinstance(top, (exp.SetOperation, exp.Subquery)):
        if isinstance(top, exp.SetOperation):
            set_ops = 1
        top = top.this
    if not isinstance(top, exp.Select):
        return None
    return _count(top, set_ops, ctes)


def _arg(node: exp.Expression, name: str):
    # sqlglot 30 stores FROM and WITH under "from_" / "with_"; older versions under "from" / "with".
    return node.args.get(f"{name}_") or node.args.get(name)


def _outside_queries(node: exp.Expression) -> Iterator[exp.Expression]:
    """`node` and its descendants, not descending into nested queries (which are yielded themselves)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if n is not node and isinstance(n, (exp.Query, exp.Subquery)):
            continue
        stack.extend(n.iter_expressions())


def _nested_queries(node: exp.Expression | None) -> int:
    if node is None:
        return 0
    if isinstance(node, (exp.Query, exp.Subquery)):
        return 1
    return sum(1 for n in _outside_queries(node) if n is not node and isinstance(n, (exp.Query, exp.Subquery)))


def _aggregates(node: exp.Expression | None) -> int:
    if node is None:
        return 0
    return sum(1 for n in _outside_queries(node) if isinstance(n, _AGGREGATES))


def _flatten(cond: exp.Expression | None) -> tuple[list[exp.Expression], list[str], bool]:
    """A condition as the official parser reads it: a flat list of predicates, the and/or between them, and
    whether the parser stopped reading the query inside it (see `_as_official_parser_reads`)."""
    preds: list[exp.Expression] = []
    connectors: list[str] = []
    # In order, left operand, connector, right operand; with a stack rather than recursion: sqlglot builds a
    # chain of 2,000 ANDs as a tree 2,000 deep.
    stack: list[exp.Expression | str] = [cond] if cond is not None else []
    while stack:
        e = stack.pop()
        if isinstance(e, str):
            connectors.append(e)
            continue
        while isinstance(e, exp.Paren):
            e = e.this
        if isinstance(e, exp.Connector):  # And, Or (Xor too)
            stack += [e.expression, "or" if isinstance(e, exp.Or) else "and", e.this]
        else:
            preds.append(e)
    return _as_official_parser_reads(preds, connectors)


def _column_valued(pred: exp.Expression) -> bool:
    """Whether the predicate's (last) value is a column or an aggregate rather than a literal or a query."""
    inner = pred.this if isinstance(pred, exp.Not) else pred
    if isinstance(inner, exp.Between):
        value = inner.args.get("high")
    elif isinstance(inner, exp.Binary) and not isinstance(inner, exp.Connector):
        value = inner.expression
    else:
        return False
    if value is None or isinstance(value, (exp.Query, exp.Subquery)):
        return False
    return any(
        isinstance(n, _AGGREGATES) or (isinstance(n, exp.Column) and not _double_quoted_string(n)) for n in value.walk()
    )


def _double_quoted_string(col: exp.Column) -> bool:
    # Spider gold writes strings in double quotes ("Aberdeen"), which SQLite reads as a string when no column
    # has that name; sqlglot reads them as quoted identifiers, the official tokenizer as strings.
    return not col.table and isinstance(col.this, exp.Identifier) and bool(col.this.args.get("quoted"))


# Predicates made only of these have no "(", ")", "," or keyword token that would stop the official skip.
_PLAIN = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Star,
    exp.Neg,
    exp.Not,
    exp.Is,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Like,
    exp.ILike,
    exp.Between,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
)


def _as_official_parser_reads(
    preds: list[exp.Expression], connectors: list[str]
) -> tuple[list[exp.Expression], list[str], bool]:
    """The official `parse_value` reads a value that is not a number, string or query (a column) by skipping
    to the next "and", ",", ")", clause keyword ("select", "group", ...) or "join"/"on"/"as". So the
    OR-connected predicates after a column-valued one vanish from its parse (`ON a.x = b.y OR a.x = b.z` has
    one predicate and no OR there), and if a skipped predicate holds a parenthesis, a nested query or a
    keyword, the skip stops inside it and the parser reads nothing more of this query: the rest of the
    condition and every later clause (GROUP BY ... LIMIT, set operations) are gone. Same here; the third
    value says the query was cut."""
    if not preds:
        return preds, connectors, False
    kept, kept_connectors = [preds[0]], []
    swallowing = _column_valued(preds[0])
    for connector, pred in zip(connectors, preds[1:], strict=True):
        if swallowing and connector == "or":
            if not all(isinstance(n, _PLAIN) for n in pred.walk()):
                return kept, kept_connectors, True
            continue
        kept.append(pred)
        kept_connectors.append(connector)
        swallowing = _column_valued(pred)
    return kept, kept_connectors, False


def _negated(pred: exp.Expression) -> bool:
    return isinstance(pred, exp.Not) or bool(pred.args.get("negate"))


def _is_like(pred: exp.Expression) -> bool:
    inner = pred.this if isinstance(pred, exp.Not) else pred
    return isinstance(inner, (exp.Like, exp.ILike))


def _count(select: exp.Select, set_ops: int, ctes: int) -> HardnessCounts:
    # Clauses in the order the official parser reads them, so that a cut (see _as_official_parser_reads)
    # drops exactly the later ones.
    tables = 1 if _arg(select, "from") is not None else 0
    join_preds: list[exp.Expression] = []
    join_connectors: list[str] = []
    cut = False
    for j in select.args.get("joins") or []:
        tables += 1
        preds, conns, cut = _flatten(j.args.get("on"))
        if preds and join_preds:
            join_connectors.append("and")  # the official parser joins ON groups with "and"
        join_preds += preds
        join_connectors += conns
        if cut:
            break

    def condition(clause: str) -> tuple[list[exp.Expression], list[str]]:
        nonlocal cut
        node = None if cut else select.args.get(clause)
        preds, conns, cut_here = _flatten(node.this if node is not None else None)
        cut = cut or cut_here
        return preds, conns

    where_preds, where_conns = condition("where")
    group = None if cut else select.args.get("group")
    group_cols = list(group.expressions) if group else []
    having_preds, having_conns = condition("having")
    order = None if cut else select.args.get("order")
    order_exprs = [o.this if isinstance(o, exp.Ordered) else o for o in order.expressions] if order else []
    limit = None if cut else select.args.get("limit")
    set_ops = 0 if cut else set_ops
    columns = list(select.expressions)

    cond_preds = join_preds + where_preds + having_preds
    component1 = (
        bool(where_preds)
        + bool(group_cols)
        + bool(order_exprs)
        + (limit is not None)
        + max(tables - 1, 0)
        + (join_connectors + where_conns + having_conns).count("or")
        + sum(_is_like(p) for p in cond_preds)
    )

    # Official: nested queries that are predicate values, and a following set operation. Here also any other
    # nested query outside FROM's tables (scalar subqueries in SELECT/GROUP BY/ORDER BY) and each CTE, which
    # the official parser cannot read.
    component2 = set_ops + ctes + sum(_nested_queries(p) for p in cond_preds)
    component2 += sum(_nested_queries(e) for e in [*columns, *group_cols, *order_exprs])

    aggregates = (
        sum(_aggregates(c) for c in columns)
        + sum(_aggregates(g) for g in group_cols)
        + sum(_aggregates(o) for o in order_exprs)
        # The official count_agg on condition lists: negated predicates, and HAVING's connectors.
        + sum(_negated(p) for p in where_preds)
        + sum(_negated(p) for p in having_preds)
        + len(having_conns)
    )
    others = (aggregates > 1) + (len(columns) > 1) + (len(where_preds) > 1) + (len(group_cols) > 1)
    return HardnessCounts(int(component1), int(component2), int(others))
