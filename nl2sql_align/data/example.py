"""The one record every stage consumes, whatever format the data came in."""

from __future__ import annotations

from dataclasses import dataclass

from nl2sql_align.sql import Database


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    sql: str  # gold SQL
    db: Database
    db_id: str
    evidence: str = ""  # BIRD "external knowledge"
    hardness: str | None = None  # Spider hardness or BIRD difficulty, when the data has it
    # Dialect the gold SQL is written in; None means the database's own. Spider/BIRD gold is SQLite.
    dialect: str | None = None
    # The record's own system prompt (LLaMA-Factory's alpaca/sharegpt "system"); it replaces data.system_prompt
    # and the built-in one for this example. None: no system of its own.
    system: str | None = None
    # The question already holds its database's CREATE TABLE statements (a prompt that brings its own schema,
    # detected when the data is loaded): build_messages adds no schema text of ours.
    prompt_has_schema: bool = False
    # Set only when [data.schema] truncate shortened this training example's schema to fit train.max_length:
    # the tables shown (None: all) and the example values per column (None: the recipe's).
    schema_tables: tuple[str, ...] | None = None
    schema_values: int | None = None
    source: str = ""  # file:line it came from, for error messages

    def to_json(self, index: int | None = None) -> dict:
        out = {"index": index} if index is not None else {}
        out.update(id=self.id, db=self.db_id, question=self.question, evidence=self.evidence, sql=self.sql)
        if self.hardness:
            out["hardness"] = self.hardness
        if self.system:
            out["system"] = self.system
        return out
