"""`nl2sql-align data SPEC`: the loaded examples as JSONL, the exact chat prompts training sees, or (--stats)
what they hold. The lines are returned for the caller to print: stdout carries them and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from nl2sql_align.data import build_messages, examples_for
from nl2sql_align.data.stats import data_stats, print_stats
from nl2sql_align.recipe import load_recipe


def data_command(
    spec: str,
    recipe: Path | None,
    *,
    prompts: bool = False,
    stats: bool = False,
    json_: bool = False,
    limit: int | None = None,
    db_dir: str | None = None,
    db: str | None = None,
) -> Iterator[str]:
    d = load_recipe(recipe).data  # the recipe's [data] prompt and schema settings (defaults without one)
    examples = examples_for(d, spec, limit=limit, db_dir=db_dir, db=db)
    if stats or json_:
        summary = data_stats(examples, spec)
        if json_:
            yield json.dumps(summary, ensure_ascii=False, indent=2)
        else:
            print_stats(summary)
        return
    for i, ex in enumerate(examples):
        row = {"index": i, "id": ex.id, "messages": build_messages(ex, d.schema, d.system_prompt)}
        yield json.dumps(row if prompts else ex.to_json(i), ensure_ascii=False)
