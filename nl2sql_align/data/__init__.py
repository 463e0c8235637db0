"""One data loader for every stage: formats -> Example records -> prompts."""

from nl2sql_align.data.example import Example
from nl2sql_align.data.formats import examples_for, load_examples, resolve_database
from nl2sql_align.data.prompts import build_messages, extract_sql, format_answer, has_sql_block
from nl2sql_align.data.schema import schema_text

__all__ = [
    "Example",
    "build_messages",
    "examples_for",
    "extract_sql",
    "format_answer",
    "has_sql_block",
    "load_examples",
    "resolve_database",
    "schema_text",
]
