"""Preference learning: pairs mined by execution, the preference loader, rm, dpo and its variants.

The end-to-end chain runs on the micro model (random weights): its samples are junk, so with the gold
fallback every pair is gold SQL versus the model's own junk, a preference every method must learn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nl2sql_align.data import build_messages, extract_sql, load_examples
from nl2sql_align.data.preferences import load_preferences, split_holdout
from nl2sql_align.errors import DataError, RecipeError
from nl2sql_align.pairs import label_samples, mine_prompt, normalize_sql, run_pairs
from nl2sql_align.recipe import DataSection, PairsSection, load_recipe
from nl2sql_align.rewards import RewardEngine
from nl2sql_align.rewards.engine import Verdict
from nl2sql_align.sql import SQLExecutor, as_scored, verdict
from nl2sql_align.stages import dpo, rm
from tests.conftest import REPO, stage_recipe

# ---------------------------------------------------------------------------------------------------------
# Mining rules


def _v(sql: str, kind: str) -> Verdict:
    return Verdict(
        text=f"```sql\n{sql}\n```",
        sql=sql,
        has_block=True,
        parsed=kind != "syntax",
        refused=False,
        executed=kind in ("correct", "wrong"),
        correct=kind == "correct",
        gold_ok=True,
        error=None if kind in ("correct", "wrong") else "boom",
    )


@pytest.fixture(scope="module")
def example():
    return load_examples("demo:train", limit=1)[0]


def test_mining_dedupes_normalised_sql_and_orders_rejected(example):
    verdicts = [
        _v("SELECT name FROM customers", "correct"),
        _v("select   name from customers", "correct"),  # the same query, spelled differently
        _v("SELECT nonsense FROM", "error"),
        _v("SELECT city FROM customers", "wrong"),
        _v("SELECT city  FROM customers", "wrong"),
        _v("SELECT id FROM customers", "wrong"),
    ]
    r = mine_prompt(example, verdicts, PairsSection(max_pairs_per_prompt=5))
    assert normalize_sql("select   name from customers") == normalize_sql("SELECT name FROM customers")
    # 4 distinct queries: 1 correct, 2 wrong, 1 failing. Wrong results are rejected before errors.
    assert [p["rejected"] for p in r.pairs] == [
        "SELECT city FROM customers",
        "SELECT id FROM customers",
        "SELECT nonsense FROM",
    ]
    assert all(p["chosen"] == "SELECT name FROM customers" and p["chosen_label"] == "correct" for p in r.pairs)
    assert [p["rejected_label"] for p in r.pairs] == ["wrong", "wrong", "error"]
    assert len(r.unpaired) == 4 and sum(u["label"] for u in r.unpaired) == 1
    assert len(mine_prompt(example, verdicts, PairsSection(max_pairs_per_prompt=2)).pairs) == 2


def test_all_correct_gives_no_pair_and_all_wrong_uses_gold_only_when_configured(example):
    all_correct = [_v("SELECT name FROM customers", "correct")] * 3
    assert mine_prompt(example, all_correct, PairsSection()).pairs == []
    all_wrong = [_v("SELECT city FROM customers", "wrong"), _v("SELECT x FROM", "error")]
    with_gold = mine_prompt(example, all_wrong, PairsSection(gold_fallback=True))
    assert [p["chosen"] for p in with_gold.pairs] == [example.sql, example.sql]
    assert {p["chosen_label"] for p in with_gold.pairs} == {"gold"} and with_gold.used_gold
    assert {"completion": example.sql, "label": True, "verdict": "gold"}.items() <= with_gold.unpaired[-1].items()
    without = mine_prompt(example, all_wrong, PairsSection(gold_fallback=False))
    assert without.pairs == [] and not any(u["label"] for u in without.unpaired)


def test_labels_agree_with_direct_execution():
    examples = load_examples("demo:train", limit=12)
    samples = []
    for ex in examples:
        samples.append(
            [
                f"```sql\n{ex.sql}\n```",  # correct
                f"```sql\n{ex.sql} LIMIT 0\n```",  # runs, wrong result (unless the gold is empty)
                "```sql\nSELECT * FROM no_such_table\n```",  # fails
                "```sql\nDROP TABLE customers\n```",  # refused
                "SELECT 1",  # runs
            ]
        )
    with RewardEngine(timeout=5, workers=1) as engine:
        labelled = label_samples(examples, samples, engine)
    with SQLExecutor(workers=1, timeout=5) as ex_:
        for ex, outs, verdicts in zip(examples, samples, labelled, strict=True):
            # Executed as the Spider metric runs queries (DISTINCT removed), outside the engine.
            gold = ex_.execute(ex.db, as_scored(ex.sql))
            for text, v in zip(outs, verdicts, strict=True):
                direct = ex_.execute(ex.db, as_scored(extract_sql(text)))
                assert v.executed == direct.ok, text
                assert v.correct == verdict(gold, direct, ex.sql, "spider"), text
            assert verdicts[0].correct and not verdicts[2].executed and verdicts[3].refused


# ---------------------------------------------------------------------------------------------------------
# `pairs` end to end on the micro model, and the loader


@pytest.fixture(scope="module")
def micro_pairs(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    r = load_recipe(
        REPO / "recipes" / "tiny-dpo.toml",
        ["pairs.samples=4", "pairs.max_new_tokens=16", "pairs.max_pairs_per_prompt=2", "seed=1"],
    )
    examples = load_examples("demo:train", limit=40)
    summary = run_pairs(str(tiny_model_dir), examples, r, out)
    assert summary["prompts"] == 40 and summary["samples"] == 160
    return out


def test_pairs_writes_consistent_files_the_loader_reads_back(micro_pairs: Path):
    summary = json.loads((micro_pairs / "summary.json").read_text())
    pairs = [json.loads(line) for line in (micro_pairs / "pairs.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (micro_pairs / "samples.jsonl").read_text().splitlines()]
    assert len(pairs) == summary["pairs"] > 0 and len(samples) == summary["samples"]
    assert summary["prompts_with_pair"] + summary["prompts_without_pair"] == summary["prompts"]
    for p in pairs:
        assert p["chosen"] != p["rejected"] and p["chosen_label"] in ("correct", "gold")
    # Prompts are rebuilt the way every other stage builds them.
    r = load_recipe(REPO / "recipes" / "tiny-dpo.toml")
    records = load_preferences(str(micro_pairs / "pairs.jsonl"), r.data)
    examples = {ex.id: ex for ex in load_examples("demo:train", limit=40)}
    rec = records[0]
    assert rec.prompt == build_messages(examples[rec.id], r.data.schema, r.data.system_prompt)
    assert rec.chosen == [{"role": "assistant", "content": f"```sql\n{pairs[0]['chosen']}\n```"}]
    unpaired = load_preferences(str(micro_pairs / "unpaired.jsonl"), r.data)
    assert not unpaired[0].paired and {u.label for u in unpaired} == {True, False}


def test_pairs_stops_on_failing_gold(tiny_model_dir, tmp_path: Path):
    ex = load_examples("demo:train", limit=2)
    from dataclasses import replace

    broken = [ex[0], replace(ex[1], sql="SELECT nope FROM customers")]
    with pytest.raises(DataError, match="1 gold queries fail"):
        run_pairs(str(tiny_model_dir), broken, load_recipe(REPO / "recipes" / "tiny-dpo.toml"), tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_loader_reads_trl_layout_and_names_bad_lines(tmp_path: Path):
    data = DataSection()
    good = tmp_path / "trl.jsonl"
    good.write_text(
        json.dumps(
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            }
        )
        + "\n"
        + json.dumps({"prompt": "q2", "chosen": "a2", "rejected": "b2"})
        + "\n"
    )
    recs = load_preferences(str(good), data)
    assert recs[0].trl_row()["chosen"] == [{"role": "assistant", "content": "a"}]
    assert recs[1].trl_row() == {"prompt": "q2", "chosen": "a2", "rejected": "b2"}
    cases = {
        '{"prompt": "q", "chosen": "a"}\n': r"bad.jsonl:1: a pair needs both",
        '{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops\n': r"bad.jsonl:2: not valid JSON",
        '{"prompt": "q", "completion": "a", "label": "yes"}\n': r"bad.jsonl:1: \"label\" must be true or false",
        '{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "completion": "a", "label": true}\n': "mixes pairs",
        '{"question": "q", "chosen": "a", "rejected": "b"}\n': r"bad.jsonl:1: no database",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            load_preferences(str(bad), data)


def test_holdout_keeps_every_question_on_one_side(micro_pairs: Path):
    records = load_preferences(str(micro_pairs / "pairs.jsonl"), DataSection())
    train, held = split_holdout(records, 0.25, seed=0)
    assert held and train and len(train) + len(held) == len(records)
    assert not {r.id for r in train} & {r.id for r in held}
    assert split_holdout(records, 0.25, seed=0) == (train, held)  # deterministic


# ---------------------------------------------------------------------------------------------------------
# rm, dpo and the variants learn the preference


def _stage(stage: str, model_dir: Path, out: Path, pairs: Path, *extra: str):
    return stage_recipe(
        stage,
        model_dir,
        out,
        f"data.train={pairs}",
        "data.holdout=0.25",
        'data.eval=""',
        "train.num_train_epochs=4",
        "train.logging_steps=2",
        "train.per_device_train_batch_size=8",
        *extra,
    )


def _swapped(pairs: Path, out: Path) -> Path:
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    out.write_text("".join(json.dumps({**r, "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n" for r in rows))
    return out


def test_reward_model_accuracy_rises_from_the_untrained_model(tiny_model_dir, micro_pairs, tmp_path):
    # Gold-versus-junk pairs differ systematically, so the random score head already ranks them one way round
    # or the other. Training on the pairs and on the same pairs swapped starts from the same head: in one of
    # the two runs it starts at or below chance, and both must end well above it.
    held = {}
    for name, pairs in (
        ("as-mined", micro_pairs / "pairs.jsonl"),
        ("swapped", _swapped(micro_pairs / "pairs.jsonl", tmp_path / "swapped.jsonl")),
    ):
        out = rm.run(_stage("rm", tiny_model_dir, tmp_path / name, pairs, "train.learning_rate=1e-3"))
        held[name] = json.loads((out / "heldout.json").read_text())
    assert min(h["before"]["accuracy"] for h in held.values()) <= 0.5, held
    for h in held.values():
        assert h["after"]["accuracy"] >= 0.9 and h["after"]["margin"] > h["before"]["margin"] + 1.0, held
    assert (tmp_path / "as-mined" / "plots" / "preference.png").is_file()
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "as-mined").config.num_labels == 1


def test_lora_reward_model_trains_and_saves_its_score_head(tiny_model_dir, micro_pairs, tmp_path):
    out = rm.run(
        _stage(
            "rm",
            tiny_model_dir,
            tmp_path / "rm-lora",
            micro_pairs / "pairs.jsonl",
            "lora.r=8",
            "lora.alpha=16",
            "train.learning_rate=3e-3",
        )
    )
    held = json.loads((out / "heldout.json").read_text())
    assert held["after"]["accuracy"] >= 0.9 and held["after"]["margin"] > held["before"]["margin"] + 1.0, held
    # The new score head trains and is saved with the adapters (a LoRA-only head would stay random).
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any("score" in k for k in adapter), list(adapter)[:5]


def test_dpo_raises_the_held_out_margin_and_changes_weights(tiny_model_dir, micro_pairs, tmp_path):
    out = dpo.run(
        _stage("dpo", tiny_model_dir, tmp_path / "dpo", micro_pairs / "pairs.jsonl", "train.learning_rate=1e-3")
    )
    held = json.loads((out / "heldout.json").read_text())
    assert held["after"]["logprob_margin"] > held["before"]["logprob_margin"] + 1.0, held
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in r for r in rows)


def test_lora_dpo_keeps_one_model_in_memory(tiny_model_dir, micro_pairs, tmp_path, monkeypatch):
    from peft import PeftModel

    seen = {}
    build = dpo._build

    def spy(ctx):
        seen["trainer"] = build(ctx)
        return seen["trainer"]

    monkeypatch.setattr(dpo, "_build", spy)
    out = dpo.run(
        _stage(
            "dpo",
            tiny_model_dir,
            tmp_path / "dpo-lora",
            micro_pairs / "pairs.jsonl",
            "lora.r=8",
            "lora.alpha=16",
            "train.learning_rate=3e-3",
        )
    )
    trainer = seen["trainer"]
    # The reference is the base with adapters disabled: no second model object.
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)
    held = json.loads((out / "heldout.json").read_text())
    assert held["after"]["logprob_margin"] > held["before"]["logprob_margin"], held
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("method", ["kto", "simpo", "orpo"])
def test_variants_learn_the_preference(tiny_model_dir, micro_pairs, tmp_path, method):
    # kto reads the pairs file as labelled halves (chosen = desirable, rejected = undesirable).
    out = dpo.run(
        _stage(
            "dpo",
            tiny_model_dir,
            tmp_path / method,
            micro_pairs / "pairs.jsonl",
            f"preference.method={method}",
            "train.learning_rate=1e-3",
        )
    )
    held = json.loads((out / "heldout.json").read_text())
    assert held["after"]["logprob_margin"] > held["before"]["logprob_margin"] + 0.5, held


def test_preference_settings_are_checked(tiny_model_dir, micro_pairs, tmp_path):
    with pytest.raises(RecipeError, match=r"train.loss_type = 'sigmoid' is not one of 'kto', 'apo_zero_unpaired'"):
        dpo.run(
            _stage(
                "dpo",
                tiny_model_dir,
                tmp_path / "x",
                micro_pairs / "pairs.jsonl",
                "preference.method=kto",
                "train.loss_type=sigmoid",
            )
        )
    with pytest.raises(DataError, match="needs pairs"):
        dpo.run(_stage("dpo", tiny_model_dir, tmp_path / "y", micro_pairs / "unpaired.jsonl", "data.holdout=0"))
    with pytest.raises(DataError, match="trains on pairs"):
        rm.run(_stage("rm", tiny_model_dir, tmp_path / "z", micro_pairs / "unpaired.jsonl", "data.holdout=0"))
    assert not any((tmp_path / n).exists() for n in "xyz")


@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_qlora_preference_stages_train_adapters_on_a_4bit_base(
    stage, tiny_model_dir, micro_pairs, tmp_path, monkeypatch
):
    import bitsandbytes as bnb

    module = {"rm": rm, "dpo": dpo}[stage]
    seen = {}
    build = module._build
    monkeypatch.setattr(module, "_build", lambda ctx: seen.setdefault("trainer", build(ctx)))
    out = module.run(
        _stage(
            stage,
            tiny_model_dir,
            tmp_path / stage,
            micro_pairs / "pairs.jsonl",
            "lora.r=8",
            "lora.alpha=16",
            "quantization.bits=4",
            "quantization.compute_dtype=float32",
            "train.learning_rate=3e-3",
            "train.max_steps=3",
        )
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in seen["trainer"].model.modules()), "the base was not 4-bit"
    adapters = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)


def test_pairs_max_questions_draws_a_seeded_subset_in_order():
    from nl2sql_align.pairs import sample_questions

    exs = load_examples("demo:train")
    pos = {ex.id: i for i, ex in enumerate(exs)}
    a, b, c = (sample_questions(exs, 60, seed) for seed in (0, 0, 1))
    assert [e.id for e in a] == [e.id for e in b] and len(a) == 60
    assert [e.id for e in a] != [e.id for e in c]  # the seed picks the subset
    assert [pos[e.id] for e in a] == sorted(pos[e.id] for e in a)  # original order kept
    # The demo file is sorted by database: the first 60 are one database, a random 60 are not.
    assert len({e.db_id for e in exs[:60]}) == 1 and len({e.db_id for e in a}) == 3
    assert sample_questions(exs, None, 0) == exs and sample_questions(exs, 10**6, 0) == exs
    with pytest.raises(RecipeError, match="pairs.max_questions = 0"):
        sample_questions(exs, 0, 0)
