"""Recipes: TOML files that say what a stage trains, on what, and how.

Precedence is built-in defaults < recipe file < `--set a.b=value` overrides. Every key is checked: an unknown
key or a value of the wrong type is an error naming the file (or the `--set` item), the key and the nearest
valid key. The `[train]` table is handed to the stage's own TRL config dataclass (e.g. `trl.SFTConfig`), so
anything TRL accepts is accepted, and its keys are checked against that dataclass rather than a list of our own.

The tables are pydantic dataclasses (plain dataclasses to their callers: attribute access, `dataclasses.asdict`);
pydantic checks them, and its errors are rewritten here in the recipe's own terms.

This module imports no torch: `validate` must answer quickly. The stage's config class is passed in by the
caller (which may import TRL).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import tomllib
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.dataclasses import dataclass

from nl2sql_align.errors import RecipeError
from nl2sql_align.stdio import display_name, is_stdio, read_text

# The recipe a run trained with, written into its output folder; eval, compare and --resume read it back.
RESOLVED_NAME = "recipe.resolved.toml"
_CHECKPOINT_DIR = re.compile(r"checkpoint-\d+")  # what transformers' Trainer names the folders it saves mid-run


def resolved_recipe_of(model_dir: str | Path) -> Path | None:
    """The recipe a trained model folder was trained with: its own recipe.resolved.toml, or for a checkpoint the
    trainer saved mid-run (`<output_dir>/checkpoint-N`, which holds weights but no recipe) its run's. Without
    this, `eval --model out/x/checkpoint-30` built the default prompt, not the one the model learnt, and scored
    0% on the demo where the same checkpoint scores 55% with its run's prompt."""
    d = Path(model_dir)
    if (d / RESOLVED_NAME).is_file():
        return d / RESOLVED_NAME
    if d.name in ("", ".."):  # "." or "x/..": the folder's name is its resolved path's
        d = d.resolve()
    if _CHECKPOINT_DIR.fullmatch(d.name) and (d.parent / RESOLVED_NAME).is_file():
        return d.parent / RESOLVED_NAME
    return None


# Every table: unknown keys are errors, assignments are checked too, and a number is a fine string
# (`--set model.name_or_path=7`).
TABLE_CONFIG = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


@dataclass(config=TABLE_CONFIG)
class ModelSection:
    name_or_path: str = ""
    # "auto" keeps the checkpoint's dtype; bf16 on GPUs that have it, fp32 on CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # A Jinja chat template (inline text, or a path to a .jinja file) replacing the tokenizer's own.
    chat_template: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None


@dataclass(config=TABLE_CONFIG)
class SchemaSection:
    # "ddl": CREATE TABLE statements with keys and per-column comments (OmniSQL/DAIL-SQL; the default).
    # "compact": one line per table, keys and foreign keys but no types: ~3x fewer tokens, for small models
    # and CPU training.
    format: Literal["ddl", "compact"] = "ddl"
    # Distinct example values shown in each column's comment (OmniSQL/DAIL-SQL style); 0 hides them.
    example_values: int = 3
    # Long strings are cut so one wide text column cannot blow up the prompt.
    max_value_chars: int = 40
    # false: the data's own prompt already holds the schema (LLaMA-Factory instructions often do).
    include: bool = True
    # Training examples whose prompt + answer exceed train.max_length keep their answer whole and lose schema
    # detail instead: first the example values, then the tables their gold SQL does not use. Only what still
    # does not fit is refused (or left out with data.drop_too_long). Eval prompts always show the whole schema.
    truncate: bool = False


@dataclass(config=TABLE_CONFIG)
class DataSection:
    # Data specs: a .jsonl/.json path, spider:DIR, bird:DIR, demo:train, demo:dev (see README).
    train: str = ""
    eval: str | None = None
    # Where databases named by a db_id live (native JSONL and alpaca formats).
    db_dir: str | None = None
    # One database for every example (alpaca files often have no per-example database).
    db: str | None = None
    # The alpaca field that names each example's database.
    db_field: str = "db_id"
    # PostgreSQL instead of database files: a connection URI with {db_id} where each example's database name
    # goes ("postgresql://reader@/{db_id}?host=/run/postgresql"); every db_id (spider:DIR and bird:DIR too)
    # resolves to it. See README, "Train on your own PostgreSQL database".
    postgres: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    # Replaces the built-in system prompt.
    system_prompt: str | None = None
    schema: SchemaSection = field(default_factory=SchemaSection)
    # Preference stages (rm, dpo): held-out pairs for pairwise accuracy / log-probability margins, either a
    # file (from `pairs` on another split) or a fraction of data.train's prompts held out (0 = none).
    eval_pairs: str | None = None
    holdout: float = 0.0
    # Examples whose prompt + answer exceed train.max_length stop the run (validate reports them) unless this
    # is true, in which case they are left out and the model card says how many were trained on.
    drop_too_long: bool = False


@dataclass(config=TABLE_CONFIG)
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" is PEFT's shorthand for every linear layer but the output head.
    target_modules: str | list[str] = "all-linear"


@dataclass(config=TABLE_CONFIG)
class QuantizationSection:
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


@dataclass(config=TABLE_CONFIG)
class EvalSection:
    # spider (test-suite execution match), bird (set equality), bird-f1 (bird's EX plus BIRD mini-dev's Soft-F1).
    metric: Literal["spider", "bird", "bird-f1"] = "spider"
    # Spider metric: keep DISTINCT (the official evaluation removes it from gold and prediction alike).
    keep_distinct: bool = False
    max_new_tokens: int = 256
    batch_size: int = 16
    # Score the trained model on data.eval at the end of the stage.
    after_training: bool = True
    # Self-consistency beside greedy EX: sample this many answers per question at `temperature` and report the
    # EX of their majority vote by execution result (eval --samples; also after training and in compare).
    samples: int | None = None
    temperature: float = 0.8
    # BIRD mini-dev's R-VES beside EX (eval --ves N): each correct prediction and its gold run N times each and
    # their time ratio is bucketed (evaluation_ves.py uses 100). None or 0: not timed.
    ves_iterations: Annotated[int, Field(ge=0)] | None = None
    # SQL execution sandbox.
    timeout: float = 5.0
    workers: int | None = None
    # Generation from a saved model (eval --model, compare, pairs): "hf" (transformers generate), "vllm" (the
    # `vllm` extra, a CUDA GPU) or "auto" (vLLM when it imports and a GPU is present). The eval at the end of
    # training always uses the trained model in memory (hf).
    backend: Literal["auto", "hf", "vllm"] = "auto"
    vllm_gpu_memory_utilization: float = 0.9
    # Evaluate with the [agent] loop (execute_sql tool calls before the answer; defaults when [agent] is absent).
    agent: bool = False


@dataclass(config=TABLE_CONFIG)
class RewardComponentSection:
    # A built-in (format, syntax, executable, execution, length, soft_f1, ves) or a dotted path mypkg.rewards.fn
    name: str = ""
    weight: float = 1.0
    # Built-ins: the value when the check passes / fails (soft_f1: hit x the Soft-F1 when it runs, else miss;
    # ves: hit x BIRD's R-VES reward on a correct answer, else miss).
    hit: float = 1.0
    miss: float = 0.0
    # Built-ins: score only when these checks passed, else "not scored" (None).
    requires: list[str] = field(default_factory=list)


@dataclass(config=TABLE_CONFIG)
class RewardSection:
    """Rewards for grpo, rloo and ppo: execution components, the sandbox that runs the SQL, and (ppo) a reward model."""

    # default | sql-r1 | arctic | skyrl (see nl2sql_align/rewards/functions.py); [[reward.components]] replaces it.
    # "none": no execution components (ppo with a reward model alone).
    preset: Literal["default", "sql-r1", "arctic", "skyrl", "none"] = "default"
    components: list[RewardComponentSection] = field(default_factory=list)
    # ppo: a reward model folder written by `nl2sql-align rm`; its score is added with weight model_weight.
    model: str | None = None
    model_weight: float = 1.0
    metric: Literal["spider", "bird"] = "spider"
    keep_distinct: bool = False
    timeout: float = 5.0  # seconds per query; a query past it earns the component's miss value
    workers: int | None = None  # SQL worker processes per training process; default: cores / processes
    row_cap: int = 10_000
    memory_mb: int = 2048  # address space each SQL worker may add for its queries
    function_timeout: float = 60.0  # user reward functions: a call past this is abandoned (None rewards)
    # Reward-hacking guards: leave out examples whose gold result is empty, or is matched by trivial queries
    # that ignore the question (SELECT 0, SELECT COUNT(*) FROM t, ...). Both are reported either way.
    drop_empty_gold: bool = False
    drop_trivial_gold: bool = False
    # Completions (with rewards and verdicts) sampled into completions.jsonl at every logging step.
    log_completions: int = 8


@dataclass(config=TABLE_CONFIG)
class AgentSection:
    """Multi-turn text-to-SQL (nl2sql_align/agent.py): before answering, the model may call execute_sql(query) on
    the question's database, in the reward sandbox. grpo trains it; eval with eval.agent = true runs it."""

    max_turns: int = 3  # rounds of tool calls per completion, at least 1 (TRL max_tool_calling_iterations)
    max_result_rows: int = 10  # rows of a result the model sees
    max_result_chars: int = 1000  # the rendered result (or error) is cut to this many characters
    tool_timeout: float | None = None  # seconds per tool query; default: the reward's (eval: eval.timeout)
    turn_penalty: float = 0.0  # subtracted from the reward per tool call that ran (0: calls are free)

    def problem(self) -> str | None:
        """What is wrong with these values, or None."""
        for key, value, low in (("max_turns", self.max_turns, 1), ("max_result_rows", self.max_result_rows, 1),
                                ("max_result_chars", self.max_result_chars, 40)):  # fmt: skip
            if value < low:
                return f"agent.{key} = {value}: give {low} or more"
        if self.tool_timeout is not None and self.tool_timeout <= 0:
            return f"agent.tool_timeout = {self.tool_timeout}: give seconds above 0 (or leave it unset)"
        if self.turn_penalty < 0:
            return f"agent.turn_penalty = {self.turn_penalty}: a penalty is 0 or more (it is subtracted)"
        return None


@dataclass(config=TABLE_CONFIG)
class PairsSection:
    """`nl2sql-align pairs`: how completions are sampled and turned into preference pairs."""

    # Questions with gold SQL to sample for (a data spec), and where the pairs go: the same recipe then trains
    # on them with data.train = "<output>/pairs.jsonl". --data / --output override these.
    data: str = ""
    output: str = ""
    # Sample for this many questions of `data`, drawn at random with the recipe's seed (data files are often
    # sorted by database, so the first N would be one database); None = all of them.
    max_questions: int | None = None
    samples: int = 8  # completions sampled per question
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None  # default: eval.max_new_tokens
    batch_size: int = 64  # sequences per generate() call (prompts x samples)
    # When no sample is correct, the gold SQL becomes the chosen answer (gold vs. the model's own mistake).
    gold_fallback: bool = True
    # Distinct (chosen, rejected) pairs kept per question; wrong results are rejected before errors.
    max_pairs_per_prompt: int = 2


@dataclass(config=TABLE_CONFIG)
class BudgetSection:
    # Stop training at the end of the first optimizer step past this many seconds of the training loop, or
    # this many input tokens seen (padding excluded), whichever comes first (stages/budget.py). A pipeline step
    # with `match` sets one of them from another step's train_end row: SFT for as long as GRPO took.
    seconds: Annotated[float, Field(gt=0)] | None = None
    tokens: Annotated[int, Field(gt=0)] | None = None


@dataclass(config=TABLE_CONFIG)
class PreferenceSection:
    """The `dpo` command's method: dpo (TRL DPOTrainer; [train] loss_type picks sigmoid, ipo, hinge, ...),
    kto (TRL KTOTrainer, on unpaired labels), simpo and orpo (TRL's experimental CPOTrainer / ORPOTrainer)."""

    method: Literal["dpo", "kto", "simpo", "orpo"] = "dpo"


@dataclass(config=TABLE_CONFIG)
class Recipe:
    output_dir: str = ""
    seed: int = 42
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection | None = None  # absent table = full fine-tune
    quantization: QuantizationSection | None = None  # absent table = no quantization
    eval: EvalSection = field(default_factory=EvalSection)
    reward: RewardSection | None = None  # absent table = the default preset (stages that use rewards)
    agent: AgentSection | None = None  # absent table = single-turn (grpo); eval.agent uses its defaults
    pairs: PairsSection = field(default_factory=PairsSection)
    preference: PreferenceSection = field(default_factory=PreferenceSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    # Passed to the stage's TRL config dataclass; validated against its fields.
    train: dict[str, Any] = field(default_factory=dict)
    # Where the recipe came from and the `--set` items applied to it (not TOML keys): errors name the one at fault.
    source: str = field(default="<defaults>", metadata={"internal": True})
    overrides: list[str] = field(default_factory=list, repr=False, compare=False, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in _internal_fields(Recipe):
            out.pop(name)
        return {k: v for k, v in out.items() if v is not None}


# Keys of [train] that the recipe sets elsewhere, so that there is one place for each setting.
_TRAIN_KEYS_OWNED_ELSEWHERE = {"output_dir": "output_dir (top level)", "seed": "seed (top level)"}


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | None = None,
    train_config_cls: type | None = None,
) -> Recipe:
    """Read a recipe file, apply `--set` overrides, validate everything. `path=None` starts from defaults."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = display_name(path)
        raw = read_toml(Path(path))
    items = list(overrides or [])
    for item in items:
        apply_override(raw, item)
    recipe = build(Recipe, raw, source, overrides=items)
    recipe.source = source
    recipe.overrides = items
    if train_config_cls is not None:
        validate_train(recipe, train_config_cls)
    return recipe


def read_toml(path: Path, what: str = "recipe") -> dict[str, Any]:
    """The TOML in `path` (`-`: stdin)."""
    if not is_stdio(path) and not path.is_file():
        raise RecipeError(f"{what} not found: {path}")
    try:
        return tomllib.loads(read_text(path, what))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{display_name(path)}: not valid TOML: {e}") from None


def apply_override(data: dict[str, Any], item: str, train_config_cls: type | None = None) -> None:
    """Apply one `--set a.b=value` to a TOML table in place (missing tables are created). The value is checked
    later, with the rest of the recipe; `train_config_cls` is accepted for older callers and not used."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=1e-5")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"--set {item!r}: empty key part in {key!r}")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"--set {item!r}: {part!r} is a value, not a table")
        node = child
    node[parts[-1]] = _parse_value(text.strip())


def _parse_value(text: str) -> Any:
    """`--set` values are TOML values (1e-6, true, [1, 2], "x"); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# ---------------------------------------------------------------------------------------------------------
# Checking tables: pydantic validates, the messages below say what went wrong in the recipe's terms.


def build(cls: type, raw: Any, source: str, prefix: str = "", overrides: list[str] | None = None) -> Any:
    """Validate a TOML table into `cls`: one of the tables above, or a plain dataclass (whose nested dataclasses
    are then checked with TABLE_CONFIG's rules too). Errors name `source`, or the `--set` item that set the
    key; `prefix` is prepended to the keys they name."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: [{prefix.rstrip('.')}] must be a table, got {type(raw).__name__}")
    for key in raw.keys() & set(_internal_fields(cls)):
        where = _where([*_key_parts(prefix), key], source, overrides)
        raise RecipeError(_unknown_key(where, prefix + key, key, list(_table_fields(cls))))
    try:
        return _table_adapter(cls).model_validate({"table": _prepare_table(cls, raw)}).table
    except ValidationError as e:
        raise RecipeError(_explain(e.errors()[0], cls, raw, source, prefix, overrides)) from None


@functools.cache
def _table_adapter(cls: type) -> Any:
    # A wrapper model, so that plain dataclasses (pipeline.py's) get TABLE_CONFIG; pydantic ones keep their own.
    return create_model(f"{cls.__name__}Table", __config__=TABLE_CONFIG, table=(cls, ...))


def _internal_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("internal")]


@functools.cache
def _table_fields(cls: type) -> dict[str, Any]:
    """Key -> type annotation of a table (internal fields are no keys)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _union_args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _unwrap_optional(tp: Any) -> Any:
    """X for `X | None`; unions of several types and everything else as they are."""
    args = [a for a in _union_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def _prepare(value: Any, tp: Any) -> Any:
    """The two liberties TOML needs before pydantic sees a value. TOML has no null: `--set key=none` means None
    for a key that takes None, unless it also takes strings ("none" is a meaningful string to some of them, e.g.
    report_to). And one value for a list is a list of it (loss_type = "ipo" means ["ipo"])."""
    args = _union_args(tp)
    if isinstance(value, str) and value.lower() == "none" and type(None) in args and str not in args:
        return None
    inner = _unwrap_optional(tp)
    if dataclasses.is_dataclass(inner) and isinstance(value, dict):
        return _prepare_table(inner, value)
    if typing.get_origin(inner) in (list, tuple) and typing.get_args(inner):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        item = typing.get_args(inner)[0]
        if isinstance(value, list) and dataclasses.is_dataclass(item):
            return [_prepare_table(item, v) if isinstance(v, dict) else v for v in value]
    return value


def _prepare_table(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    fields = _table_fields(cls)
    return {k: _prepare(v, fields[k]) if k in fields else v for k, v in raw.items()}


def _explain(error: Any, cls: type, raw: dict[str, Any], source: str, prefix: str, overrides: list[str] | None) -> str:
    """One pydantic error as the recipe's message: the file or --set item, the dotted key, what was expected."""
    loc = error["loc"][1:]  # past the wrapper's "table"
    # Follow the location through the tables while it names their keys and list items; it stops at an unknown
    # key, or inside a value pydantic checked as a whole (a union's member names, a dict's keys).
    tp: Any = cls
    path: list[str | int] = []
    for part in loc:
        inner = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner) and isinstance(part, str) and part in _table_fields(inner):
            tp = _table_fields(inner)[part]
        elif typing.get_origin(inner) is list and isinstance(part, int):
            tp = typing.get_args(inner)[0]
        else:
            break
        path.append(part)
    rest = loc[len(path) :]
    key = _dotted(prefix, path)
    inner = _unwrap_optional(tp)
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument") and len(rest) == 1:
        if dataclasses.is_dataclass(inner):
            unknown = str(rest[0])
            where = _where([*_key_parts(prefix), *path, unknown], source, overrides)
            return _unknown_key(where, f"{key}.{unknown}" if key else unknown, unknown, list(_table_fields(inner)))
    where = _where([*_key_parts(prefix), *path], source, overrides)
    value = _dig(raw, path, error["input"])
    if error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{where}: {key} = {value!r}: {error['msg'].lower()}"  # a right type out of range
    return _wrong_value(where, key, value, tp)


def _wrong_value(where: str, key: str, value: Any, tp: Any) -> str:
    inner = _unwrap_optional(tp)
    if typing.get_origin(inner) is Literal:
        return f"{where}: {key} = {value!r} is not one of {', '.join(map(repr, typing.get_args(inner)))}"
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return f"{where}: {key} = {value!r} is not one of {', '.join(repr(m.value) for m in inner)}"
    return f"{where}: {key} = {value!r} has the wrong type: expected {_type_name(tp)}"


def _key_parts(prefix: str) -> list[str]:
    return [p for p in prefix.split(".") if p]


def _dotted(prefix: str, path: list[str | int]) -> str:
    key = prefix.rstrip(".")
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else part
    return key


def _dig(raw: Any, path: list[str | int], default: Any) -> Any:
    """The value at `path` as the recipe wrote it (before `_prepare`), else pydantic's input."""
    for part in path:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return default
    return raw


def _where(key: list[str | int], source: str, overrides: list[str] | None) -> str:
    """The `--set` item that set this key (or the table above it, or a key below it), else the file."""
    parts = [p for p in key if isinstance(p, str)]
    for item in reversed(overrides or []):
        set_parts = item.split("=", 1)[0].strip().split(".")
        n = min(len(parts), len(set_parts))
        if n and parts[:n] == set_parts[:n]:
            return f"--set {item}"
    return source


def _unknown_key(where: str, full_key: str, key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else "."
    return f"{where}: unknown key {full_key!r}{hint} Valid keys here: {', '.join(sorted(valid))}"


def _type_name(tp: Any) -> str:
    args = _union_args(tp)
    if len(args) > 1:
        inner = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner):
            return _type_name(inner)
        return " | ".join(_type_name(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return "a table"
    origin = typing.get_origin(tp)
    if origin is list and typing.get_args(tp):
        (item,) = typing.get_args(tp)
        return "an array of tables" if dataclasses.is_dataclass(item) else f"list[{_type_name(item)}]"
    if origin is Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


# ---------------------------------------------------------------------------------------------------------
# [train]: checked against the stage's TRL config dataclass.


def train_config_fields(config_cls: type) -> dict[str, Any]:
    """Field name -> type annotation of a TRL/transformers config dataclass."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # some annotations reference optional packages; fall back to the raw strings
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls) if f.init}


def train_config_choices(config_cls: type) -> dict[str, list[Any]]:
    """Field name -> allowed values, for the fields whose choices transformers and TRL declare only in
    the field's metadata (for their argument parser). The dataclass itself does not check them:
    `train_sampling_strategy = "group_by_lenght"` would silently train with the random sampler."""
    return {
        f.name: [c.value if isinstance(c, enum.Enum) else c for c in f.metadata["choices"]]
        for f in dataclasses.fields(config_cls)
        if f.init and f.metadata.get("choices")
    }


def validate_train(recipe: Recipe, config_cls: type) -> Recipe:
    """Check [train] against a config class chosen after loading (e.g. from [preference] method)."""
    recipe.train = _check_train(recipe.train, config_cls, recipe.source, recipe.overrides)
    return recipe


def _check_train(
    train: dict[str, Any], config_cls: type, source: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    valid = train_config_fields(config_cls)
    choices = train_config_choices(config_cls)
    out = {}
    for key, value in train.items():
        where = _where(["train", key], source, overrides)
        if key in _TRAIN_KEYS_OWNED_ELSEWHERE:
            raise RecipeError(f"{where}: train.{key} is set by {_TRAIN_KEYS_OWNED_ELSEWHERE[key]}, not in [train]")
        if key not in valid:
            near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise RecipeError(
                f"{where}: unknown key 'train.{key}'{hint} [train] accepts the fields of {_config_name(config_cls)}"
            )
        out[key] = _check_train_value(value, valid[key], where, f"train.{key}")
        if key in choices:
            _check_choice(out[key], choices[key], where, f"train.{key}", config_cls)
    return out


def _config_name(config_cls: type) -> str:
    """`trl.SFTConfig`: the package and class a [train] table is checked against, as errors name it."""
    return f"{config_cls.__module__.split('.')[0]}.{config_cls.__name__}"


def _check_choice(value: Any, choices: list[Any], where: str, key: str, config_cls: type) -> None:
    """`value` (or each item of a list value, e.g. DPO's loss_type) among the choices a config field declares."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if item is None or item in choices:
            continue
        near = difflib.get_close_matches(str(item), [str(c) for c in choices], n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise RecipeError(
            f"{where}: {key} = {item!r} is not one of {', '.join(map(repr, choices))} "
            f"({_config_name(config_cls)}){hint}"
        )


def _check_train_value(value: Any, tp: Any, where: str, key: str) -> Any:
    """A [train] value against its TRL annotation, kept as the recipe wrote it where pydantic would only change
    its type: an int stays an int where a float is expected (transformers' logging_steps = 2 is a step count,
    0.1 a fraction of the run, and the resolved recipe should say 2, not 2.0), an enum stays its string."""
    prepared = _prepare(value, tp)
    adapter = _value_adapter(tp)
    if adapter is None:
        return prepared
    try:
        out = adapter.validate_python(prepared)
    except ValidationError:
        raise RecipeError(_wrong_value(where, key, value, tp)) from None
    if isinstance(out, enum.Enum):
        return out.value
    if isinstance(prepared, int) and not isinstance(prepared, bool) and isinstance(out, float):
        return prepared
    return out


def _value_adapter(tp: Any) -> TypeAdapter | None:
    """A validator for a TRL annotation; None for one pydantic cannot check (left to TRL, as before)."""
    try:
        return _cached_value_adapter(tp)
    except TypeError:  # an unhashable annotation
        return _cached_value_adapter.__wrapped__(tp)


@functools.cache
def _cached_value_adapter(tp: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(tp, config=ConfigDict(arbitrary_types_allowed=True, coerce_numbers_to_str=True))
    except Exception:  # an annotation pydantic has no schema for, or a type with its own config
        return None


# ---------------------------------------------------------------------------------------------------------
# Writing the resolved recipe.


def dump_toml(data: dict[str, Any], header: str = "") -> str:
    """TOML text for a recipe dict, with `header` as leading comments. TOML has no null: None values are left
    out (an absent key means its default, None)."""
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + tomli_w.dumps(_toml_ready(data))


def _toml_ready(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _toml_ready(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_toml_ready(x) for x in v if x is not None]
    if isinstance(v, enum.Enum):
        return _toml_ready(v.value)
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def write_resolved(recipe: Recipe, path: Path, command: str, env: dict[str, Any] | None = None) -> None:
    """The recipe as the run used it; `env` (environment.run_environment) goes into the header comment, where it
    documents the run without being part of the recipe that loads back."""
    header = f"Resolved recipe (defaults < {recipe.source} < --set overrides).\nReproduce: {command}"
    if env:
        header += "\nEnvironment: " + ", ".join(f"{k}={v}" for k, v in env.items())
    path.write_text(dump_toml(recipe.to_dict(), header), encoding="utf-8")
