"""Preference data for rm, dpo (and its kto/simpo/orpo variants): paired and unpaired records, in two layouts.

Ours (what `nl2sql-align pairs` writes), one JSON object per line: the question fields of a native record
(question, db or db_id, optional evidence, id, sql = gold) plus

    paired:    "chosen": SQL, "rejected": SQL
    unpaired:  "completion": SQL, "label": true/false

The prompt is rebuilt from the question and the live database with the recipe's schema and template, so a
preference stage sees exactly the prompt that sft, grpo and eval see; bare SQL answers are put in the same
```sql block SFT trains on.

TRL's own layouts are read too ("prompt" + "chosen"/"rejected", or "prompt" + "completion"/"label"; text or
lists of chat messages) and passed through unchanged, for users who bring their own pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nl2sql_align.data.example import Example
from nl2sql_align.data.formats import _DbCache, _iter_jsonl, _native_example
from nl2sql_align.data.prompts import build_messages, format_answer
from nl2sql_align.errors import DataError

Message = dict[str, str]


@dataclass
class PreferenceRecord:
    id: str
    prompt: str | list[Message]
    chosen: str | list[Message] | None = None  # paired
    rejected: str | list[Message] | None = None
    completion: str | list[Message] | None = None  # unpaired
    label: bool | None = None
    example: Example | None = None  # our layout: the question, database and gold SQL
    source: str = ""

    @property
    def paired(self) -> bool:
        return self.chosen is not None

    def trl_row(self) -> dict[str, Any]:
        if self.paired:
            return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label}

    def unpaired(self) -> list[PreferenceRecord]:
        """A pair as two labelled completions (KTO learns from those)."""
        if not self.paired:
            return [self]
        return [
            PreferenceRecord(self.id, self.prompt, completion=c, label=lab, example=self.example, source=self.source)
            for c, lab in ((self.chosen, True), (self.rejected, False))
        ]


def _answer(value: Any, conversational: bool, where: str, key: str) -> str | list[Message]:
    if isinstance(value, list):
        if not all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
            raise DataError(f'{where}: "{key}" must be text or a list of {{"role", "content"}} messages')
        return value
    if not isinstance(value, str) or not value.strip():
        raise DataError(f'{where}: "{key}" must be non-empty text (SQL) or a list of chat messages')
    if not conversational:
        return value
    text = value if "```" in value else format_answer(value)
    return [{"role": "assistant", "content": text}]


def load_preferences(spec: str, data, *, limit: int | None = None) -> list[PreferenceRecord]:
    """Read a preference JSONL file (paired or unpaired, ours or TRL's). `data` is the recipe's [data] table."""
    path = Path(spec)
    if not path.is_file():
        raise DataError(
            f"preference data not found: {spec!r}. Give a JSONL file of pairs (write one with `nl2sql-align pairs`)"
        )
    if path.suffix != ".jsonl":
        raise DataError(f"{path}: preference data is JSONL (one object per line), got {path.suffix or 'no suffix'}")
    dbs = _DbCache(Path(data.db_dir) if data.db_dir else None, path.parent)
    records: list[PreferenceRecord] = []
    kinds: set[str] = set()
    for i, (lineno, rec) in enumerate(_iter_jsonl(path)):
        where = f"{path}:{lineno}"
        paired = "chosen" in rec or "rejected" in rec
        if paired and not ("chosen" in rec and "rejected" in rec):
            raise DataError(f'{where}: a pair needs both "chosen" and "rejected"')
        if not paired and not ("completion" in rec and "label" in rec):
            raise DataError(
                f'{where}: expected a pair ("chosen" and "rejected") or a labelled completion ("completion" and '
                '"label"), with "question" and "db" (or a TRL "prompt")'
            )
        if not paired and not isinstance(rec["label"], bool):
            raise DataError(f'{where}: "label" must be true or false, got {rec["label"]!r}')
        kinds.add("paired" if paired else "unpaired")
        rid = str(rec.get("id", f"{path.stem}-{i}"))
        if "prompt" in rec:  # TRL layout: used as given
            prompt = rec["prompt"]
            if not (isinstance(prompt, str) and prompt.strip()) and not isinstance(prompt, list):
                raise DataError(f'{where}: "prompt" must be text or a list of chat messages')
            conv = isinstance(prompt, list)
            example = None
        elif "question" in rec:
            gold = rec.get("sql") or rec.get("chosen") or rec.get("completion")
            example = _native_example(
                {**rec, "sql": gold if isinstance(gold, str) else "-"}, where, i, dbs, data.db, path.stem
            )
            prompt = build_messages(example, data.schema, data.system_prompt)
            conv = True
        else:
            raise DataError(f'{where}: no prompt: give "question" and "db" (our layout) or "prompt" (TRL layout)')
        if paired:
            records.append(
                PreferenceRecord(
                    rid,
                    prompt,
                    _answer(rec["chosen"], conv, where, "chosen"),
                    _answer(rec["rejected"], conv, where, "rejected"),
                    example=example,
                    source=where,
                )
            )
        else:
            records.append(
                PreferenceRecord(
                    rid,
                    prompt,
                    completion=_answer(rec["completion"], conv, where, "completion"),
                    label=rec["label"],
                    example=example,
                    source=where,
                )
            )
    if not records:
        raise DataError(f"{path}: no preference records found")
    if len(kinds) > 1:
        raise DataError(f"{path}: mixes pairs and labelled completions; keep one kind per file")
    return records[:limit] if limit else records


def split_holdout(records: list[PreferenceRecord], fraction: float, seed: int) -> tuple[list, list]:
    """Hold out a fraction of the *questions* (all pairs of a question go to one side, so none leaks)."""
    if not fraction:
        return records, []
    if not 0 < fraction < 1:
        raise DataError(f"data.holdout = {fraction}: give a fraction between 0 and 1")
    ids = list(dict.fromkeys(r.id for r in records))
    rng = random.Random(seed)
    rng.shuffle(ids)
    n = max(1, round(len(ids) * fraction))
    if n >= len(ids):
        raise DataError(f"data.holdout = {fraction} leaves no training questions out of {len(ids)}")
    held = set(ids[:n])
    return [r for r in records if r.id not in held], [r for r in records if r.id in held]
