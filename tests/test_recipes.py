"""Recipes: every shipped file is valid; unknown keys and wrong types are errors that say where and what."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nl2sql_align.errors import RecipeError
from nl2sql_align.recipe import apply_override, dump_toml, load_recipe, validate_train, write_resolved

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.toml"))
# Pipeline recipes (compare --recipe) list [[steps]]; tests/test_pipeline.py checks them.
PIPELINES = [p for p in RECIPES if "steps" in tomllib.loads(p.read_text())]
RECIPES = [p for p in RECIPES if p not in PIPELINES]


@pytest.fixture(scope="module")
def sft_config():
    from trl import SFTConfig

    return SFTConfig


def test_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_is_valid(path: Path):
    from nl2sql_align.stages import get_stage, guess_stage, load_stage_recipe

    text = path.read_text()
    # Convention: a recipe opens with a comment holding its launch command, which names the stage.
    assert text.startswith("# nl2sql-align "), f"{path} must start with its launch command"
    stage = guess_stage(path)
    assert text.split()[2] in (stage, "demo"), f"{path}: the launch command and the file name disagree on the stage"
    r, config_cls, defaults = load_stage_recipe(stage, path)
    assert r.output_dir and r.model.name_or_path
    # The [train] table builds the real TRL config (no model is loaded), with the stage's own checks.
    from nl2sql_align.stages.preflight import train_args

    args = train_args(get_stage(stage), r, Path("/tmp/unused"), validating=True)
    if r.reward is not None:
        from nl2sql_align.rewards import build_reward_functions, specs_for

        build_reward_functions(specs_for(r.reward), engine=None)
    for key, value in r.train.items():
        # CPU machines drop GPU precision flags when validating; HF normalises report_to ("none" -> []).
        if key not in ("bf16", "fp16", "tf32", "report_to"):
            got = getattr(args, key)
            assert got == value or got == [value] or str(getattr(got, "value", got)) == str(value), key


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_pipeline_recipe_plans(path: Path):
    from nl2sql_align.pipeline import load_pipeline, plan

    assert path.read_text().startswith(f"# nl2sql-align compare --recipe recipes/{path.name}")
    steps = plan(load_pipeline(path))  # every step's recipe validated by its stage, and the plumbing traced
    assert any(s.compared for s in steps)


def test_unknown_key_names_file_key_and_nearest(tmp_path: Path, sft_config):
    p = tmp_path / "r.toml"
    p.write_text('output_dir = "o"\n[model]\nname_or_path = "m"\n[train]\nlearing_rate = 1e-5\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(p, train_config_cls=sft_config)
    msg = str(e.value)
    assert str(p) in msg and "train.learing_rate" in msg and "learning_rate" in msg

    p.write_text('output_dir = "o"\n[model]\nname_or_pth = "m"\n')
    with pytest.raises(RecipeError, match=r"unknown key 'model.name_or_pth'; did you mean 'name_or_path'"):
        load_recipe(p)

    p.write_text('outptu_dir = "o"\n')
    with pytest.raises(RecipeError, match="did you mean 'output_dir'"):
        load_recipe(p)


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("lora.r=1.5", r"lora.r = 1.5 has the wrong type: expected int"),
        ("train.num_train_epochs=many", r"train.num_train_epochs = 'many' has the wrong type"),
        ("quantization.bits=3", r"quantization.bits = 3 is not one of 4, 8"),
        ("model.dtype=float64", r"model.dtype = 'float64' is not one of"),
        ("data.schema.example_values=[1]", r"data.schema.example_values = \[1\] has the wrong type"),
        ("seed", r"expected KEY=VALUE"),
        ("train.output_dir=x", r"train.output_dir is set by output_dir \(top level\)"),
        # choices transformers declares only in field metadata: unchecked, a typo trains with the random sampler
        (
            "train.train_sampling_strategy=group_by_lenght",
            r"train.train_sampling_strategy = 'group_by_lenght' is not one of .*did you mean 'group_by_length'",
        ),
        ("train.log_level=loud", r"train.log_level = 'loud' is not one of 'detail', 'debug'"),
    ],
)
def test_wrong_types_are_errors(override, pattern, sft_config):
    with pytest.raises(RecipeError, match=pattern):
        load_recipe(REPO / "recipes" / "tiny-sft.toml", [override], train_config_cls=sft_config)


def test_overrides_coerce_and_take_precedence(sft_config):
    r = load_recipe(
        REPO / "recipes" / "tiny-sft.toml",
        [
            "train.learning_rate=1e-6",  # TOML float
            "train.per_device_train_batch_size=3",
            "train.bf16=true",
            "train.report_to=none",  # stays the string HF understands, not None
            "lora.r=8",  # creates the [lora] table: LoRA on
            "data.schema.example_values=0",
            "model.name_or_path=7",  # a number is a fine string
            "eval.timeout=2",  # int -> float
            "train.train_sampling_strategy=group_by_length",  # one of the choices in transformers' field metadata
        ],
        train_config_cls=sft_config,
    )
    assert r.train["learning_rate"] == 1e-6 and isinstance(r.train["learning_rate"], float)
    assert r.train["per_device_train_batch_size"] == 3
    assert r.train["bf16"] is True
    assert r.train["report_to"] == "none"
    assert r.lora is not None and r.lora.r == 8 and r.lora.alpha == 32  # defaults fill the rest
    assert r.data.schema.example_values == 0
    assert r.model.name_or_path == "7"
    assert r.eval.timeout == 2.0 and isinstance(r.eval.timeout, float)
    assert r.train["train_sampling_strategy"] == "group_by_length"


def test_resolved_recipe_round_trips(tmp_path: Path, sft_config):
    r = load_recipe(REPO / "recipes" / "qwen7b-qlora.toml", ["train.learning_rate=3e-5"], train_config_cls=sft_config)
    text = dump_toml(r.to_dict(), "header")
    p = tmp_path / "resolved.toml"
    p.write_text(text)
    again = load_recipe(p, train_config_cls=sft_config)
    assert again.to_dict() == r.to_dict()
    assert tomllib.loads(text)["train"]["learning_rate"] == 3e-5


def test_written_resolved_recipe_loads_back_equal_with_ints_as_ints(tmp_path: Path):
    from trl import GRPOConfig

    overrides = [
        "train.logging_steps=2",  # a float field to transformers; 2 is a step count and must stay 2
        "train.learning_rate=1e-6",
        "lora.r=8",
        'reward.components=[{name="execution", weight=2, requires=["format"]}, {name="format"}]',
        "data.drop_too_long=true",
        "data.schema.include=false",
        "data.schema.example_values=0",
    ]
    r = load_recipe(REPO / "recipes" / "tiny-grpo.toml", overrides, train_config_cls=GRPOConfig)
    out = tmp_path / "recipe.resolved.toml"
    write_resolved(r, out, "nl2sql-align grpo --recipe recipes/tiny-grpo.toml")
    text = out.read_text()
    assert text.startswith("# Resolved recipe (defaults < ") and "# Reproduce: nl2sql-align grpo" in text
    lines = text.splitlines()
    assert "logging_steps = 2" in lines and "logging_steps = 2.0" not in lines
    assert "max_completion_length = 64" in lines and "learning_rate = 1e-06" in lines
    assert "[[reward.components]]" in lines and "weight = 2.0" in lines  # [reward] weights are floats
    assert "max_questions" not in text and "samples =" in text  # None values are left out, the rest is there
    again = load_recipe(out, train_config_cls=GRPOConfig)
    assert again.to_dict() == r.to_dict()
    assert again.train["logging_steps"] == 2 and type(again.train["logging_steps"]) is int
    assert again.data.drop_too_long and not again.data.schema.include and again.data.schema.example_values == 0
    assert [c.requires for c in again.reward.components] == [["format"], []]


def test_unknown_keys_in_nested_tables_suggest_the_nearest(tmp_path: Path):
    p = tmp_path / "r.toml"
    p.write_text('output_dir = "o"\n[data.schema]\nincluded = true\n')
    with pytest.raises(RecipeError, match=r"unknown key 'data.schema.included'; did you mean 'include'\?") as e:
        load_recipe(p)
    assert str(e.value).startswith(f"{p}: ") and "Valid keys here: example_values, format, include" in str(e.value)

    p.write_text('output_dir = "o"\n[[reward.components]]\nname = "format"\nwieght = 2\n')
    with pytest.raises(RecipeError, match=r"unknown key 'reward.components\[0\].wieght'; did you mean 'weight'"):
        load_recipe(p)

    with pytest.raises(RecipeError, match=r"^--set data.drop_to_long=true: unknown key 'data.drop_to_long'; did you"):
        load_recipe(None, ["data.drop_to_long=true"])


@pytest.mark.parametrize(
    "override, says",
    [
        ("train.learning_rate=abc", "train.learning_rate = 'abc' has the wrong type: expected float"),
        ("eval.metric=foo", "eval.metric = 'foo' is not one of 'spider', 'bird'"),
        ("lora.r=1.5", "lora.r = 1.5 has the wrong type: expected int"),
        ("reward.components=[{name=1, hit='x'}]", "reward.components[0].hit = 'x' has the wrong type"),
        ("train.learing_rate=1e-5", "unknown key 'train.learing_rate'; did you mean 'learning_rate'"),
    ],
)
def test_a_bad_set_value_is_an_error_in_the_set_option_not_in_the_file(tmp_path: Path, override, says, sft_config):
    p = tmp_path / "r.toml"
    p.write_text('output_dir = "o"\n[model]\nname_or_path = "m"\n[train]\nlearning_rate = 1e-5\n')
    for check in ("at load", "later"):  # [train] is also checked after loading (load_stage_recipe, dpo methods)
        with pytest.raises(RecipeError) as e:
            if check == "at load":
                load_recipe(p, ["seed=1", override], train_config_cls=sft_config)
            else:
                validate_train(load_recipe(p, ["seed=1", override]), sft_config)
        msg = str(e.value)
        assert msg.startswith(f"--set {override}: ") and says in msg, msg
        assert str(p) not in msg, msg


def test_a_bad_file_value_is_still_the_files_error_beside_a_set(tmp_path: Path, sft_config):
    p = tmp_path / "r.toml"
    p.write_text('output_dir = "o"\n[eval]\nmetric = "foo"\n[train]\nlearning_rate = "abc"\n')
    with pytest.raises(RecipeError, match=r"eval.metric = 'foo' is not one of") as e:
        load_recipe(p, ["eval.batch_size=4"])
    assert str(e.value).startswith(f"{p}: ")
    p.write_text('output_dir = "o"\n[train]\nlearning_rate = "abc"\n')
    with pytest.raises(RecipeError, match=r"train.learning_rate = 'abc' has the wrong type") as e:
        load_recipe(p, ["train.num_train_epochs=2"], train_config_cls=sft_config)
    assert str(e.value).startswith(f"{p}: ")


def test_apply_override_sets_nested_keys_as_toml_values():
    data: dict = {"train": {"x": 1}}
    apply_override(data, "train.learning_rate=1e-5")
    apply_override(data, "data.schema.format=compact")
    apply_override(data, "reward.components=[{name = 'format'}]")
    assert data == {
        "train": {"x": 1, "learning_rate": 1e-5},
        "data": {"schema": {"format": "compact"}},
        "reward": {"components": [{"name": "format"}]},
    }
    with pytest.raises(RecipeError, match="'x' is a value, not a table"):
        apply_override(data, "train.x.y=2")


def test_a_mid_run_checkpoint_is_evaluated_with_its_runs_recipe(tmp_path: Path, monkeypatch):
    """The trainer saves `<output_dir>/checkpoint-N` with weights but no recipe; eval of such a folder must build
    the prompt the run trained with, not the defaults (which scored a demo checkpoint 0% against 52%)."""
    from nl2sql_align.evaluate import eval_recipe

    text = (REPO / "recipes" / "tiny-sft.toml").read_text()
    assert "system_prompt = " in text
    run = tmp_path / "run"
    (run / "checkpoint-30").mkdir(parents=True)
    (run / "checkpoint-best").mkdir()  # not a name the trainer gives: no inheritance
    (run / "recipe.resolved.toml").write_text(text.replace("Write one {engine} SQL", "RUN: write one {engine} SQL"))
    r, source = eval_recipe(str(run / "checkpoint-30"), None)
    assert source == str(run / "recipe.resolved.toml")
    assert r.data.system_prompt.startswith("RUN: ") and r.data.schema.format == "compact"
    r, source = eval_recipe(str(run / "checkpoint-best"), None)
    assert source.startswith("defaults") and not (r.data.system_prompt or "").startswith("RUN: ")
    monkeypatch.chdir(run / "checkpoint-30")  # `eval --model .` from inside the checkpoint
    r, source = eval_recipe(".", None)
    assert r.data.system_prompt.startswith("RUN: ")
    (run / "checkpoint-30" / "sub").mkdir()
    monkeypatch.chdir(run / "checkpoint-30" / "sub")  # `eval --model ..`
    r, _ = eval_recipe("..", None)
    assert r.data.system_prompt.startswith("RUN: ")
    # A checkpoint that carries its own recipe (copied elsewhere, or merged) keeps it.
    own = text.replace("Write one {engine} SQL", "OWN: write one {engine} SQL")
    (run / "checkpoint-30" / "recipe.resolved.toml").write_text(own)
    r, source = eval_recipe(str(run / "checkpoint-30"), None)
    assert source == str(run / "checkpoint-30" / "recipe.resolved.toml") and r.data.system_prompt.startswith("OWN: ")
