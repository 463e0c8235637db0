"""Chat prompts for text-to-SQL, and SQL extraction from model answers."""

from __future__ import annotations

import re

from nl2sql_align.data.example import Example
from nl2sql_align.data.schema import schema_text
from nl2sql_align.recipe import SchemaSection

_ENGINE_NAMES = {"sqlite": "SQLite", "duckdb": "DuckDB"}

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful data analyst. Given a {engine} database schema and a question, write one {engine} "
    "SQL query that answers the question. Reply with the query in a ```sql code block."
)


def build_messages(
    ex: Example, schema: SchemaSection | None = None, system_prompt: str | None = None
) -> list[dict[str, str]]:
    """System + user messages. BIRD evidence goes before the question, as the benchmark's own prompts do.

    The system message is the example's own `system` (an alpaca/sharegpt record's) when it has one, else
    `system_prompt` (the recipe's data.system_prompt), else the built-in one: LLaMA-Factory's rule, where a
    record's system replaces the default system prompt. The user message holds our schema text unless
    `[data.schema] include = false` or the question already holds the database's CREATE TABLE statements
    (`ex.prompt_has_schema`); then it is the data's own prompt as written (after the evidence, if any)."""
    s = schema or SchemaSection()
    engine = _ENGINE_NAMES.get(ex.db.engine, ex.db.engine)
    system = ex.system or (system_prompt or DEFAULT_SYSTEM_PROMPT).replace("{engine}", engine)
    evidence = [f"External knowledge: {ex.evidence}", ""] if ex.evidence else []
    if not s.include or ex.prompt_has_schema:
        parts = [*evidence, ex.question]
    else:
        values = s.example_values if ex.schema_values is None else ex.schema_values
        text = schema_text(ex.db, values, s.max_value_chars, s.format, ex.schema_tables)
        schema_part = ["Database schema:", text, ""]
        parts = [*schema_part, *evidence, f"Question: {ex.question}"]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]


def format_answer(sql: str) -> str:
    """The assistant turn we train on; `extract_sql` inverts it."""
    return f"```sql\n{sql.strip()}\n```"


# Model output is untrusted text of any size. These patterns stay linear in it: one lazy scan from each fence
# to the next fence (or the end), no nested quantifiers, so no catastrophic backtracking (2 MB of fences,
# backticks or spaces takes milliseconds; tests/test_fuzz_untrusted_sql.py).
_FENCE = re.compile(r"```(?:sql|SQL|sqlite|duckdb)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_SQL_FENCE = re.compile(r"```(?:sql|SQL)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_CLOSED_SQL_BLOCK = re.compile(r"```(?:sql|SQL)[ \t]*\n.*?```", re.DOTALL)


def _as_text(text) -> str:
    return text if isinstance(text, str) else "" if text is None else str(text)


def extract_sql(text: str) -> str:
    """The last ```sql block; else the last ``` block; else the bare text. An unclosed block counts
    (generation often stops at the token limit before the closing fence). Never raises (None gives "")."""
    text = _as_text(text)
    blocks = [b for b in _SQL_FENCE.findall(text) if b.strip()]
    if not blocks:
        blocks = [b for b in _FENCE.findall(text) if b.strip()]
    sql = blocks[-1] if blocks else text
    return sql.strip().rstrip(";").strip()


def has_sql_block(text: str) -> bool:
    return bool(_CLOSED_SQL_BLOCK.search(_as_text(text)))
