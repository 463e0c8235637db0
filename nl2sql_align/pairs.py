"""`nl2sql-align pairs`: preference pairs labelled by the database instead of by people.

For each question, sample K completions from a model (usually an SFT output), extract the SQL, and let the
reward engine (the one GRPO uses: sandboxed, gold results cached, each distinct query run once) execute and
judge them. Then, per question:

- samples are de-duplicated after normalising their SQL with sqlglot (so `select  a from t` and
  `SELECT a FROM t` count once);
- chosen = a distinct correct sample; when none is correct and `pairs.gold_fallback` is on, the gold SQL
  (gold versus the model's own mistake);
- rejected = distinct wrong-result samples first (the informative near misses), then failing ones;
- up to `pairs.max_pairs_per_prompt` (chosen, rejected) pairs, each rejected answer used once.

Outputs: pairs.jsonl (for rm/dpo), unpaired.jsonl (every distinct sample with its label, for kto),
samples.jsonl (every sample with its verdict, to look at), summary.json, and a table in the terminal.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nl2sql_align.data import Example
from nl2sql_align.recipe import PairsSection
from nl2sql_align.rewards.engine import RewardEngine, Verdict


def normalize_sql(sql: str, dialect: str | None = None) -> str:
    """A canonical spelling for de-duplication: sqlglot's normalized, pretty-free rendering; if the text does
    not parse (or cannot be rendered), its whitespace-collapsed lower-case form. Never raises for any text."""
    from sqlglot import exp

    from nl2sql_align.sql.guard import parse_untrusted

    fallback = " ".join(str(sql).lower().split())  # junk the model wrote: still de-duplicate identical junk
    parsed, _ = parse_untrusted(sql, dialect)
    if not parsed or parsed[0] is None:
        return fallback
    try:
        tree = exp.Block(expressions=parsed) if len(parsed) > 1 else parsed[0]  # as sqlglot.parse_one
        return tree.sql(dialect=dialect, normalize=True, comments=False)
    except Exception:  # noqa: BLE001  the generator recurses: a tree too deep to render is junk too
        return fallback


@dataclass
class PromptResult:
    example: Example
    verdicts: list[Verdict]
    pairs: list[dict] = field(default_factory=list)
    unpaired: list[dict] = field(default_factory=list)
    used_gold: bool = False


def _kind(v: Verdict) -> str:
    return "correct" if v.correct else "wrong" if v.executed else "error"


def mine_prompt(ex: Example, verdicts: list[Verdict], cfg: PairsSection) -> PromptResult:
    """Pairs and labelled completions for one question from the verdicts of its samples."""
    out = PromptResult(ex, verdicts)
    seen: set[str] = set()
    distinct: list[Verdict] = []
    for v in verdicts:
        if not v.sql:
            continue  # nothing to put in a pair (counted as a failed sample in the summary)
        key = normalize_sql(v.sql, ex.db.engine)
        if key not in seen:
            seen.add(key)
            distinct.append(v)
    base = {
        "id": ex.id,
        "db": ex.db.path,
        "db_id": ex.db_id,
        "question": ex.question,
        "evidence": ex.evidence,
        "sql": ex.sql,
    }
    correct = [v.sql for v in distinct if v.correct]
    rejected = [v for v in distinct if _kind(v) == "wrong"] + [v for v in distinct if _kind(v) == "error"]
    chosen_label = "correct"
    if not correct and cfg.gold_fallback and rejected:
        correct, chosen_label, out.used_gold = [ex.sql], "gold", True
    if correct:
        for j, r in enumerate(rejected[: cfg.max_pairs_per_prompt]):
            out.pairs.append(
                {
                    **base,
                    "chosen": correct[j % len(correct)],
                    "rejected": r.sql,
                    "chosen_label": chosen_label,
                    "rejected_label": _kind(r),
                    "rejected_verdict": r.label,
                }
            )
    for v in distinct:
        out.unpaired.append({**base, "completion": v.sql, "label": v.correct, "verdict": v.label})
    if out.used_gold:
        out.unpaired.append({**base, "completion": ex.sql, "label": True, "verdict": "gold"})
    return out


def label_samples(examples: list[Example], samples: list[list[str]], engine: RewardEngine) -> list[list[Verdict]]:
    """Judge every sample by execution (one engine call: each distinct query runs once)."""
    flat = [(ex, text) for ex, outs in zip(examples, samples, strict=True) for text in outs]
    verdicts = engine.judge(
        [t for _, t in flat],
        [ex.sql for ex, _ in flat],
        [ex.db.path for ex, _ in flat],
        [ex.db.engine for ex, _ in flat],
        [ex.dialect or "" for ex, _ in flat],
    )
    out, i = [], 0
    for outs in samples:
        out.append(list(verdicts[i : i + len(outs)]))
        i += len(outs)
    return out


def check_gold(examples: list[Example], engine: RewardEngine, spec: str) -> None:
    """Gold SQL that fails would make every sample look wrong (and be chosen by the fallback): stop, naming it."""
    from nl2sql_align.errors import failing_gold_error

    results = engine.gold_results([(ex.db, ex.sql, ex.dialect) for ex in examples])
    failing = [f"{ex.source or ex.id}: {r.error}" for ex, r in zip(examples, results, strict=True) if not r.ok]
    if failing:
        raise failing_gold_error(failing, "their samples cannot be labelled", f"Fix or remove them from {spec}.")


def summarize(results: list[PromptResult]) -> dict:
    verdicts = [v for r in results for v in r.verdicts]
    n = max(1, len(verdicts))
    return {
        "prompts": len(results),
        "samples": len(verdicts),
        "correct_rate": round(100 * sum(v.correct for v in verdicts) / n, 2),
        "executable_rate": round(100 * sum(v.executed for v in verdicts) / n, 2),
        "distinct_per_prompt": round(sum(len(r.unpaired) - r.used_gold for r in results) / max(1, len(results)), 2),
        "pairs": sum(len(r.pairs) for r in results),
        "prompts_with_pair": sum(bool(r.pairs) for r in results),
        "prompts_without_pair": sum(not r.pairs for r in results),
        "prompts_all_correct": sum(bool(r.verdicts) and all(v.correct for v in r.verdicts) for r in results),
        "prompts_gold_chosen": sum(r.used_gold for r in results),
        "unpaired": sum(len(r.unpaired) for r in results),
        "unpaired_desirable": sum(u["label"] for r in results for u in r.unpaired),
    }


def write_outputs(results: list[PromptResult], summary: dict, out: Path, config: dict) -> None:
    def dump(name: str, rows) -> None:
        with (out / name).open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    dump("pairs.jsonl", (p for r in results for p in r.pairs))
    dump("unpaired.jsonl", (u for r in results for u in r.unpaired))
    dump(
        "samples.jsonl",
        (
            {"id": r.example.id, "sample": i, "sql": v.sql, "label": _kind(v), "verdict": v.label, "output": v.text}
            for r in results
            for i, v in enumerate(r.verdicts)
        ),
    )
    (out / "summary.json").write_text(json.dumps({**summary, "config": config}, indent=2) + "\n", encoding="utf-8")


def print_summary(summary: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    t.add_column("")
    t.add_column("value", justify="right")
    rows = [
        ("prompts", summary["prompts"]),
        ("samples", summary["samples"]),
        ("correct samples", f"{summary['correct_rate']:.1f}%"),
        ("executable samples", f"{summary['executable_rate']:.1f}%"),
        ("distinct SQL per prompt", summary["distinct_per_prompt"]),
        ("pairs written", summary["pairs"]),
        ("prompts with a pair", summary["prompts_with_pair"]),
        ("  of which gold chosen", summary["prompts_gold_chosen"]),
        ("prompts with no pair", summary["prompts_without_pair"]),
        ("  of which all samples correct", summary["prompts_all_correct"]),
        ("labelled completions (kto)", f"{summary['unpaired']} ({summary['unpaired_desirable']} desirable)"),
    ]
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)


def pairs_plan(
    recipe, model: str | None = None, data: str | None = None, output: Path | None = None
) -> tuple[str, str, Path]:
    """(model, questions, output folder) for a pairs run: the arguments, else the recipe's model.name_or_path,
    pairs.data and pairs.output; a UserError names what is missing."""
    from nl2sql_align.errors import UserError

    model = model or recipe.model.name_or_path
    data = data or recipe.pairs.data
    output = output or (Path(recipe.pairs.output) if recipe.pairs.output else None)
    if not model:
        raise UserError("no model to sample from: pass --model DIR (an sft output) or set model.name_or_path")
    if not data:
        raise UserError("no questions to sample for: pass --data SPEC (e.g. demo:train) or set pairs.data")
    if output is None:
        raise UserError("pass --output DIR (where pairs.jsonl and unpaired.jsonl go) or set pairs.output")
    return model, data, output


def sample_questions(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded random `n` of the examples, in their original order (all of them when n is None or larger)."""
    import random

    if n is None or n >= len(examples):
        return examples
    if n < 1:
        from nl2sql_align.errors import RecipeError

        raise RecipeError(f"pairs.max_questions = {n}: give a positive number of questions (or leave it unset for all)")
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [ex for i, ex in enumerate(examples) if i in keep]


def run_pairs_for_recipe(
    recipe,
    model: str | None = None,
    data: str | None = None,
    output: Path | None = None,
    limit: int | None = None,
    overwrite: bool = False,
) -> Path:
    """`nl2sql-align pairs` (and a pipeline's pairs step): load the questions, then run_pairs."""
    from nl2sql_align.data import examples_for

    model, data, output = pairs_plan(recipe, model, data, output)
    d = recipe.data
    examples = examples_for(d, data, limit=limit)
    examples = sample_questions(examples, recipe.pairs.max_questions, recipe.seed)
    run_pairs(model, examples, recipe, output, overwrite=overwrite)
    return output


def run_pairs(model_dir: str, examples: list[Example], recipe, output: Path, overwrite: bool = False) -> dict:
    """Sample, judge, mine, write. Returns the summary."""
    from nl2sql_align.generation import load_generator
    from nl2sql_align.rewards import engine_for
    from nl2sql_align.stages.runner import prepare_output_dir, publish

    cfg: PairsSection = recipe.pairs
    final, work = prepare_output_dir(str(output), overwrite)
    try:
        with engine_for(recipe.reward) as engine:
            check_gold(examples, engine, recipe.pairs.data or "the data")  # before minutes of sampling, not after
            generator = load_generator(model_dir, recipe)
            try:
                samples = generator.complete(
                    examples,
                    num_samples=cfg.samples,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    schema=recipe.data.schema,
                    system_prompt=recipe.data.system_prompt,
                    max_new_tokens=cfg.max_new_tokens or recipe.eval.max_new_tokens,
                    batch_size=cfg.batch_size,
                    seed=recipe.seed,
                )
            finally:
                generator.close()
            labelled = label_samples(examples, samples, engine)
        results = [mine_prompt(ex, vs, cfg) for ex, vs in zip(examples, labelled, strict=True)]
        summary = summarize(results)
        write_outputs(results, summary, work, {**asdict(cfg), "model": model_dir, "questions": len(examples)})
        publish(work, final)
    finally:
        if work.exists():
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print_summary(summary, f"pairs from {model_dir} ({len(examples)} questions)")
    return summary
