"""Recipes: TOML files that say what a stage trains, on what, and how.

Precedence is built-in defaults < recipe file < `--set a.b=value` overrides. Every key is checked: an unknown
key or a value of the wrong type is an error naming the file, the key and the nearest valid key. The `[train]`
table is handed to the stage's own TRL config dataclass (e.g. `trl.SFTConfig`), so anything TRL accepts is
accepted, and its keys are checked against that dataclass rather than a list of our own.

This module imports no torch: `validate` must answer quickly. The stage's config class is passed in by the
caller (which may import TRL).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nl2sql_align.errors import RecipeError


@dataclass
class ModelSection:
    name_or_path: str = ""
    # "auto" keeps the checkpoint's dtype; bf16 on GPUs that have it, fp32 on CPU.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # A Jinja chat template (inline text, or a path to a .jinja file) replacing the tokenizer's own.
    chat_template: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None


@dataclass
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
    # true: a prompt over train.max_length loses schema lines (least relevant tables last) instead of the
    # example being refused; the answer is never cut.
    truncate: bool = False


@dataclass
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


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" is PEFT's shorthand for every linear layer but the output head.
    target_modules: str | list[str] = "all-linear"


@dataclass
class QuantizationSection:
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


@dataclass
class EvalSection:
    metric: Literal["spider", "bird"] = "spider"
    max_new_tokens: int = 256
    batch_size: int = 16
    # Score the trained model on data.eval at the end of the stage.
    after_training: bool = True
    # Self-consistency beside greedy EX: sample this many answers per question at `temperature` and report the
    # EX of their majority vote by execution result (eval --samples; also after training and in compare).
    samples: int | None = None
    temperature: float = 0.8
    # SQL execution sandbox.
    timeout: float = 5.0
    workers: int | None = None
    # Generation from a saved model (eval --model, compare, pairs): "hf" (transformers generate), "vllm" (the
    # `vllm` extra, a CUDA GPU) or "auto" (vLLM when it imports and a GPU is present). The eval at the end of
    # training always uses the trained model in memory (hf).
    backend: Literal["auto", "hf", "vllm"] = "auto"
    vllm_gpu_memory_utilization: float = 0.9


@dataclass
class RewardComponentSection:
    # A built-in check (format, syntax, executable, execution, length) or a dotted path mypkg.rewards.fn
    name: str = ""
    weight: float = 1.0
    # Built-ins: the value when the check passes / fails.
    hit: float = 1.0
    miss: float = 0.0
    # Built-ins: score only when these checks passed, else "not scored" (None).
    requires: list[str] = field(default_factory=list)


@dataclass
class RewardSection:
    """Rewards for grpo and ppo: execution components, the sandbox that runs the SQL, and (ppo) a reward model."""

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


@dataclass
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


@dataclass
class PreferenceSection:
    """The `dpo` command's method: dpo (TRL DPOTrainer; [train] loss_type picks sigmoid, ipo, hinge, ...),
    kto (TRL KTOTrainer, on unpaired labels), simpo and orpo (TRL's experimental CPOTrainer / ORPOTrainer)."""

    method: Literal["dpo", "kto", "simpo", "orpo"] = "dpo"


@dataclass
class Recipe:
    output_dir: str = ""
    seed: int = 42
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection | None = None  # absent table = full fine-tune
    quantization: QuantizationSection | None = None  # absent table = no quantization
    eval: EvalSection = field(default_factory=EvalSection)
    reward: RewardSection | None = None  # absent table = the default preset (stages that use rewards)
    pairs: PairsSection = field(default_factory=PairsSection)
    preference: PreferenceSection = field(default_factory=PreferenceSection)
    # Passed to the stage's TRL config dataclass; validated against its fields.
    train: dict[str, Any] = field(default_factory=dict)
    # Where the recipe came from (not a TOML key).
    source: str = field(default="<defaults>", metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
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
        source = str(path)
        raw = read_toml(Path(path))
    for item in overrides or []:
        _apply_override(raw, item, train_config_cls)
    recipe = _build(Recipe, raw, source, prefix="")
    recipe.source = source
    if train_config_cls is not None:
        recipe.train = _check_train(recipe.train, train_config_cls, source)
    return recipe


def read_toml(path: Path, what: str = "recipe") -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None


def _apply_override(raw: dict[str, Any], item: str, train_config_cls: type | None) -> None:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=1e-5")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"--set {item!r}: empty key part in {key!r}")
    node = raw
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


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: [{prefix.rstrip('.')}] must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise RecipeError(_unknown_key(source, prefix + key, key, list(fields)))
        kwargs[key] = _coerce(value, hints[key], source, prefix + key)
    return cls(**kwargs)


def _unknown_key(source: str, full_key: str, key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"{source}: unknown key {full_key!r}{hint} Valid keys here: {', '.join(sorted(valid))}"


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check (and gently convert) a value against a type annotation; raise a RecipeError naming the key."""
    ok, out = _try_coerce(value, tp, source, key)
    if ok:
        return out
    raise RecipeError(f"{source}: {key} = {value!r} has the wrong type: expected {_type_name(tp)}")


def _try_coerce(value: Any, tp: Any, source: str, key: str) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True, value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        # TOML has no null; `--set key=none` means None, unless the key also takes strings ("none" is a
        # meaningful string to some of them, e.g. report_to).
        if value is None or (isinstance(value, str) and value.lower() == "none" and str not in args):
            return (type(None) in args), None
        # Exact type matches first, so 1 stays an int in `int | float` and "8" stays a str in `str | int`.
        for arg in args:
            if isinstance(arg, type) and not dataclasses.is_dataclass(arg) and type(value) is arg:
                return True, value
        for arg in args:
            if arg is type(None):
                continue
            try:
                ok, out = _try_coerce(value, arg, source, key)
            except RecipeError:
                if dataclasses.is_dataclass(arg):
                    raise
                continue
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return True, value
        raise RecipeError(f"{source}: {key} = {value!r} is not one of {', '.join(map(repr, choices))}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return True, _build(tp, value, source, key + ".")
        return False, None
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and typing.get_args(tp):
            value = [value]  # loss_type = "ipo" means ["ipo"] (a list field given one value)
        if not isinstance(value, list):
            return False, None
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return True, items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return True, value.lower() == "true"
        return False, None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        if isinstance(value, str):
            return True, value
        # `--set model.name_or_path=7` style overrides arrive parsed as TOML; a number is a fine string.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        valid = [m.value for m in tp]
        if value in valid or isinstance(value, tp):
            return True, value
        raise RecipeError(f"{source}: {key} = {value!r} is not one of {', '.join(map(repr, valid))}")
    if isinstance(tp, type):
        return isinstance(value, tp), value
    # Annotations we cannot check (forward references, callables): trust the library to validate.
    return True, value


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def train_config_fields(config_cls: type) -> dict[str, Any]:
    """Field name -> type annotation of a TRL/transformers config dataclass."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # some annotations reference optional packages; fall back to the raw strings
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls) if f.init}


def validate_train(recipe: Recipe, config_cls: type) -> Recipe:
    """Check [train] against a config class chosen after loading (e.g. from [preference] method)."""
    recipe.train = _check_train(recipe.train, config_cls, recipe.source)
    return recipe


def _check_train(train: dict[str, Any], config_cls: type, source: str) -> dict[str, Any]:
    valid = train_config_fields(config_cls)
    out = {}
    for key, value in train.items():
        if key in _TRAIN_KEYS_OWNED_ELSEWHERE:
            raise RecipeError(f"{source}: train.{key} is set by {_TRAIN_KEYS_OWNED_ELSEWHERE[key]}, not in [train]")
        if key not in valid:
            near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise RecipeError(
                f"{source}: unknown key 'train.{key}'{hint} [train] accepts the fields of "
                f"{config_cls.__module__.split('.')[0]}.{config_cls.__name__}"
            )
        out[key] = _coerce(value, valid[key], source, f"train.{key}")
    return out


# ---------------------------------------------------------------------------------------------------------
# Writing the resolved recipe (stdlib has a TOML reader but no writer).


def dump_toml(data: dict[str, Any], header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items() if v is not None]
    for name, table in tables.items():
        lines += _toml_table(name, table)
    return "\n".join(lines) + "\n"


def _toml_table(name: str, table: dict[str, Any]) -> list[str]:
    lines = ["", f"[{name}]"]
    subtables = {}
    for k, v in table.items():
        if isinstance(v, dict):
            subtables[k] = v
        elif v is not None:  # TOML has no null: an absent key means the default (None)
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in subtables.items():
        lines += _toml_table(f"{name}.{_toml_key(k)}", v)
    return lines


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, enum.Enum):
        return _toml_value(v.value)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    return _toml_value(str(v))


def write_resolved(recipe: Recipe, path: Path, command: str) -> None:
    header = f"Resolved recipe (defaults < {recipe.source} < --set overrides).\nReproduce: {command}"
    path.write_text(dump_toml(recipe.to_dict(), header), encoding="utf-8")
