"""Whatever a run refuses, `validate` refuses first, with the same message, before any model loads; and a refused
run leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_align.errors import UserError
from nl2sql_align.stages import stage_module
from nl2sql_align.validate import validate_recipe
from tests.conftest import REPO

SHOP = "SELECT name FROM customers"


def _pairs(folder: Path, kind: str = "pairs") -> Path:
    path = folder / f"{kind}.jsonl"
    if kind == "pairs":
        rows = [{"prompt": f"q{i}", "chosen": SHOP, "rejected": "SELECT 1"} for i in range(6)]
    else:
        rows = [{"prompt": f"q{i}", "completion": SHOP, "label": i % 2 == 0} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _bad_gold(folder: Path) -> Path:
    from nl2sql_align.data import load_examples

    db = load_examples("demo:train", limit=1)[0].db.path
    path = folder / "bad-gold.jsonl"
    rows = [{"question": "q", "sql": SHOP, "db": db}, {"question": "q2", "sql": "SELECT nope FROM customers", "db": db}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# (stage, recipe overrides built from (tmp, model), a message both must give)
CASES = {
    "kto with a DPO loss": (
        "dpo",
        lambda tmp, m: [f"data.train={_pairs(tmp, 'unpaired')}", "preference.method=kto", 'train.loss_type="sigmoid"'],
        "train.loss_type = 'sigmoid' is not one of 'kto', 'apo_zero_unpaired' (trl.KTOConfig)",
    ),
    "missing model folder": ("sft", lambda tmp, m: [f"model.name_or_path={tmp}/runs/sft"], "no such folder"),
    "report_to not installed": (
        "sft",
        lambda tmp, m: ['train.report_to="tensorboard"'],
        "tensorboard is not installed",
    ),
    "prompts over max_length": ("sft", lambda tmp, m: ["train.max_length=64"], "exceed train.max_length = 64"),
    "failing sft gold": ("sft", lambda tmp, m: [f"data.train={_bad_gold(tmp)}"], "gold SQL fails"),
    "failing eval gold": ("sft", lambda tmp, m: [f'data.eval="{_bad_gold(tmp)}"'], "gold SQL fails"),
    "reward model on labelled completions": (
        "rm",
        lambda tmp, m: [f"data.train={_pairs(tmp, 'unpaired')}"],
        "a reward model trains on pairs",
    ),
    "dpo on labelled completions": (
        "dpo",
        lambda tmp, m: [f"data.train={_pairs(tmp, 'unpaired')}"],
        "needs pairs",
    ),
}


def _recipe_args(stage: str, tmp: Path, model: Path, extra: list[str]) -> tuple[Path, list[str]]:
    sets = [f"model.name_or_path={model}", f"output_dir={tmp}/out", "data.train_limit=32", "data.eval_limit=8"]
    if stage in ("dpo", "rm"):
        sets.append(f"data.train={_pairs(tmp)}")
    return REPO / "recipes" / f"tiny-{stage}.toml", [*sets, *extra]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_validate_refuses_what_the_run_refuses(case: str, tiny_model_dir: Path, tmp_path: Path):
    from nl2sql_align.stages import load_stage_recipe

    stage, extra, message = CASES[case]
    path, sets = _recipe_args(stage, tmp_path, tiny_model_dir, extra(tmp_path, tiny_model_dir))
    with pytest.raises(UserError) as validated:
        validate_recipe(path, stage, sets)
    with pytest.raises(UserError) as ran:  # as the stage command does: load the recipe, then run it
        recipe, _, _ = load_stage_recipe(stage, path, sets)
        stage_module(stage).run(recipe)
    assert message in str(validated.value)
    assert str(ran.value) == str(validated.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*")), "a refused run left files"


def test_drop_too_long_trains_on_what_fits_and_says_so(tiny_model_dir: Path, tmp_path: Path):
    path, sets = _recipe_args("sft", tmp_path, tiny_model_dir, ["train.max_length=210", "data.drop_too_long=true"])
    lines, verdict = validate_recipe(path, "sft", sets)
    line = next(x for x in lines if "exceed train.max_length = 210" in x)
    kept = int(line.rsplit(", ", 1)[1].split()[0])
    assert "left out (data.drop_too_long)" in line and 0 < kept < 32
    # Nothing left is an error, not an empty run.
    _, sets = _recipe_args("sft", tmp_path, tiny_model_dir, ["train.max_length=64", "data.drop_too_long=true"])
    with pytest.raises(UserError, match="no training examples left"):
        validate_recipe(path, "sft", sets)


def test_schema_truncate_shortens_the_prompt_never_the_answer(tiny_model_dir: Path, tmp_path: Path):
    from nl2sql_align.stages import get_stage, load_stage_recipe
    from nl2sql_align.stages.preflight import check_stage
    from nl2sql_align.stages.setup import load_training_tokenizer
    from nl2sql_align.stages.sft import sft_rows, token_lengths

    path, sets = _recipe_args(
        "sft",
        tmp_path,
        tiny_model_dir,
        ["train.max_length=230", "data.schema.example_values=2", "data.schema.truncate=true"],
    )
    recipe, _, _ = load_stage_recipe("sft", path, sets)
    checked = check_stage(get_stage("sft"), recipe)
    train = checked.data[0]
    short = [ex for ex in train if ex.schema_values is not None]
    assert checked.shortened == len(short) > 0 and checked.dropped == 0
    assert any("fit with a shortened schema" in line for line in checked.lines)
    tok = load_training_tokenizer(recipe)
    assert max(token_lengths(recipe, train, tok)) <= 230  # every example now fits
    for ex, row in zip(short, sft_rows(short, recipe), strict=True):
        assert row["completion"][0]["content"] == f"```sql\n{ex.sql.strip()}\n```"  # the answer is whole
        prompt = row["prompt"][1]["content"]
        assert "e.g." not in prompt.lower() and "examples:" not in prompt.lower()
        if ex.schema_tables is not None:
            for table in ex.schema_tables:
                assert table in prompt.lower()
    # Without truncate the same recipe is refused, and the message points to the key.
    with pytest.raises(UserError, match="truncate = true"):
        validate_recipe(path, "sft", sets[:-1])
