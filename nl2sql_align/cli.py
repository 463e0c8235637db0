"""The `nl2sql-align` command line: thin Typer commands over the stage runner and tools.

Heavy imports (torch, transformers, trl) happen inside the commands, so `--help` answers instantly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from nl2sql_align.errors import UserError

app = typer.Typer(
    name="nl2sql-align",
    help="Post-train language models to write SQL: SFT, then preference and RL stages, scored by execution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RecipeOpt = Annotated[Path, typer.Option("--recipe", "-r", help="Recipe TOML file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set train.learning_rate=1e-6 (repeatable)."),
]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing output_dir once the new run completes.")]
ResumeOpt = Annotated[
    bool, typer.Option(help="Continue an interrupted run from its newest complete checkpoint (needs save_steps).")
]


ProcsOpt = Annotated[
    int, typer.Option("--num-processes", help="Train on N processes: relaunches itself through `accelerate launch`.")
]
AccelOpt = Annotated[
    Path | None,
    typer.Option(
        "--accelerate-config", help="Accelerate config (e.g. recipes/accelerate/zero3.yaml) for the relaunch."
    ),
]
_LAUNCH_OPTIONS = ("--num-processes", "--accelerate-config")


def _relaunch(num_processes: int, accelerate_config: Path | None) -> None:
    """Run this same command under `accelerate launch` with N processes, then exit with its status."""
    import subprocess

    if os.environ.get("NL2SQL_ALIGN_LAUNCHED") or (num_processes <= 1 and accelerate_config is None):
        return
    if accelerate_config is not None and not accelerate_config.is_file():
        raise UserError(f"--accelerate-config {accelerate_config}: no such file (see recipes/accelerate/)")
    argv, skip = [], False
    for arg in sys.argv[1:]:  # drop our launch options; everything else goes to each process unchanged
        if skip:
            skip = False
        elif arg in _LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(o + "=" for o in _LAUNCH_OPTIONS)):
            argv.append(arg)
    from nl2sql_align.launch import launch_command, launch_env

    raise typer.Exit(subprocess.call(launch_command(num_processes, accelerate_config, argv), env=launch_env()))


def _train(
    stage: str,
    recipe: Path,
    overrides: list[str] | None,
    overwrite: bool,
    resume: bool,
    num_processes: int = 1,
    accelerate_config: Path | None = None,
) -> None:
    from nl2sql_align.stages import load_stage_recipe, stage_module

    r, _, _ = load_stage_recipe(stage, recipe, overrides)  # bad recipes fail here, before any process starts
    _relaunch(num_processes, accelerate_config)
    out = stage_module(stage).run(r, overwrite=overwrite, resume=resume)
    typer.echo(f"{stage}: wrote {out}")


# One command per training stage; they differ only in their help text.
_STAGE_HELP = {
    "sft": ("Supervised fine-tuning (TRL SFTTrainer): full, LoRA or 4-bit QLoRA; loss on the SQL answer only."),
    "rm": (
        "Reward model (TRL RewardTrainer) on preference pairs from `pairs` or your own file; reports pairwise "
        "accuracy on held-out pairs before and after training. `ppo` loads the result as its reward model."
    ),
    "dpo": (
        "Preference optimisation on pairs; \\[preference] method = dpo (TRL DPOTrainer, any train.loss_type: "
        "sigmoid, ipo, hinge, ...), kto (TRL KTOTrainer on labelled completions), simpo or orpo (EXPERIMENTAL "
        "in TRL 1.16: trl.experimental CPOTrainer / ORPOTrainer, API may change). Reports held-out log-prob "
        "margins."
    ),
    "ppo": (
        "PPO (our own actor-critic: value head, GAE, clipped losses, KL to the starting policy) rewarded by "
        "execution components and/or a reward model from `rm` (\\[reward] model = DIR, model_weight); full, "
        "LoRA or QLoRA."
    ),
    "grpo": (
        "GRPO (TRL GRPOTrainer) with execution rewards: \\[reward] picks components and weights (presets "
        "default, sql-r1, arctic, skyrl, or your own function); usually starts from an sft output."
    ),
}


def _register_stage(stage: str, help_text: str) -> None:
    def command(
        recipe: RecipeOpt,
        set_: SetOpt = None,
        overwrite: OverwriteOpt = False,
        resume: ResumeOpt = False,
        num_processes: ProcsOpt = 1,
        accelerate_config: AccelOpt = None,
    ) -> None:
        _train(stage, recipe, set_, overwrite, resume, num_processes, accelerate_config)

    command.__name__ = stage
    app.command(stage, help=help_text)(command)


for _stage, _help in _STAGE_HELP.items():
    _register_stage(_stage, _help)


@app.command()
def pairs(
    model: Annotated[
        str | None, typer.Option(help="Model or adapter folder to sample from (default: the recipe's).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Questions with gold SQL (default: the recipe's pairs.data).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Folder for pairs.jsonl, unpaired.jsonl, samples.jsonl, summary.json (pairs.output)."),
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe: \\[pairs] sampling, \\[data] prompt, \\[reward] sandbox.")
    ] = None,
    set_: SetOpt = None,
    samples: Annotated[int | None, typer.Option(help="Completions sampled per question (pairs.samples).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Mine preference pairs by execution: sample K answers per question, run them, pair correct with wrong."""
    from nl2sql_align.pairs import run_pairs_for_recipe
    from nl2sql_align.recipe import load_recipe

    overrides = list(set_ or [])
    if samples is not None:
        overrides.append(f"pairs.samples={samples}")
    r = load_recipe(recipe, overrides)
    output = run_pairs_for_recipe(r, model, data, output, limit=limit, overwrite=overwrite)
    typer.echo(f"pairs: wrote {output}")


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    stage: Annotated[
        str | None, typer.Option(help="Stage whose [train] keys to check (default: from the name).")
    ] = None,
    set_: SetOpt = None,
    num_processes: Annotated[
        int, typer.Option(help="Training processes the recipe will run on (batch arithmetic).")
    ] = 1,
) -> None:
    """Check a recipe (keys, types, batch sizes, reward components, data and gold SQL) without loading a model."""
    from functools import partial

    from nl2sql_align.pipeline import is_pipeline_recipe
    from nl2sql_align.stages import load_stage_recipe, stage_module
    from nl2sql_align.stages.runner import make_train_args

    if stage is None and is_pipeline_recipe(recipe):
        _validate_pipeline(recipe, set_)
        return
    stage = stage or _guess_stage(recipe)
    module = stage_module(stage)
    r, config_cls, defaults = load_stage_recipe(stage, recipe, set_)

    check = getattr(module, "check_batch_sizes", None)
    if stage == "grpo" and num_processes > 1 and not {"generation_batch_size", "steps_per_generation"} & set(r.train):
        # GRPOConfig derives its generation batch from the processes of *this* run (one, here); state the
        # batch N processes will form so that TRL checks the real plan.
        merged = {**module.TRAIN_DEFAULTS, **r.train}
        r.train["generation_batch_size"] = (
            merged.get("per_device_train_batch_size", 8) * num_processes * merged.get("gradient_accumulation_steps", 1)
        )
    make_train_args(
        config_cls,
        r,
        Path(r.output_dir or "out"),
        defaults,
        validating=True,
        check=partial(check, num_processes=num_processes) if check else None,
    )
    checks = [f"recipe keys and types ({stage}: [train] accepted by {config_cls.__name__})"]
    if stage in ("grpo", "ppo"):
        checks += _check_rewards(r)
    if stage in ("rm", "dpo"):
        checks += _check_preference_data(r)
    elif r.data.train and not r.data.train.startswith(("demo:",)):
        _check_data_spec(r.data.train, r)
        checks.append(f"data.train = {r.data.train}")
    if r.data.eval and not r.data.eval.startswith(("demo:",)):
        _check_data_spec(r.data.eval, r)
        checks.append(f"data.eval = {r.data.eval}")
    if not r.output_dir:
        raise UserError(f"{recipe}: output_dir is not set")
    if not r.model.name_or_path:
        raise UserError(f"{recipe}: model.name_or_path is not set")
    for c in checks:
        typer.echo(f"ok  {c}")
    typer.echo(f"{recipe}: valid")


def _validate_pipeline(recipe: Path, set_: list[str] | None) -> None:
    """A pipeline: every step's recipe checked as its stage checks it, and the plumbing between steps."""
    from nl2sql_align.pipeline import describe, load_pipeline, plan

    steps = plan(load_pipeline(recipe, set_))
    for line in describe(steps):
        typer.echo(f"ok  {line}")
    typer.echo(f"{recipe}: valid pipeline of {len(steps)} steps")


# Recipe file names that say which stage they are for (kto/simpo/orpo recipes run under `dpo`).
_NAME_TO_STAGE = {
    "sft": "sft",
    "rm": "rm",
    "dpo": "dpo",
    "kto": "dpo",
    "simpo": "dpo",
    "orpo": "dpo",
    "ppo": "ppo",
    "grpo": "grpo",
}


def _guess_stage(recipe: Path) -> str:
    parts = recipe.stem.lower().replace("_", "-").split("-")
    for part in reversed(parts):
        if part in _NAME_TO_STAGE:
            return _NAME_TO_STAGE[part]
    return "sft"


def _check_preference_data(r) -> list[str]:
    """Pairs files load (and their databases resolve) the way the stage will read them."""
    from nl2sql_align.stages.preference import load_preference_data

    if not r.data.train:
        raise UserError(f"{r.source}: data.train is not set (a pairs file from `nl2sql-align pairs`)")
    train, evals, held = load_preference_data(r, generates=True)
    kind = "pairs" if train[0].paired else "labelled completions"
    return [f"data.train = {r.data.train} ({len(train)} {kind}, {len(held)} held out)"]


def _check_rewards(r) -> list[str]:
    """Reward components resolve; every gold query of data.train runs; hackable examples are reported."""
    from nl2sql_align.data import load_examples
    from nl2sql_align.rewards import build_reward_functions, engine_for, specs_for
    from nl2sql_align.stages.grpo import audit_and_filter

    specs = specs_for(r.reward)
    build_reward_functions(specs, engine=None)
    terms = [f"{s.weight:g} x {s.name}" for s in specs]
    model = r.reward.model if r.reward else None
    if model:
        if not (Path(model) / "config.json").is_file() and not (Path(model) / "adapter_config.json").is_file():
            raise UserError(
                f"{r.source}: reward.model = {model!r} is not a reward model folder (train one with `nl2sql-align rm`)"
            )
        terms.append(f"{r.reward.model_weight:g} x reward model {model}")
    if not terms:
        raise UserError(
            f'{r.source}: [reward] gives no reward: preset = "none" needs reward.model or [[reward.components]]'
        )
    out = ["reward: " + " + ".join(terms)]
    if r.data.train and specs:
        d = r.data
        examples = load_examples(d.train, db_dir=d.db_dir, db=d.db, db_field=d.db_field, limit=d.train_limit)
        with engine_for(r.reward) as engine:
            kept, audit = audit_and_filter(examples, r, engine)
        out.append(
            f"gold SQL of {len(examples)} training examples runs ({len(audit.empty)} empty results, "
            f"{len(audit.trivial)} matched by trivial queries; {len(kept)} kept)"
        )
    return out


def _check_data_spec(spec: str, r) -> None:
    from nl2sql_align.data import load_examples

    d = r.data
    load_examples(spec, db_dir=d.db_dir, db=d.db, db_field=d.db_field, limit=None)


@app.command("eval")
def eval_(
    data: Annotated[str, typer.Option(help="Data spec: demo:dev, spider:DIR, bird:DIR, FILE.jsonl, FILE.json.")],
    report: Annotated[Path, typer.Option(help="Folder for per_example.jsonl, summary.json and ex.png.")],
    model: Annotated[str | None, typer.Option(help="Model or adapter folder to generate with (greedy).")] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Score these instead: Spider text (one SQL per line, optionally SQL<TAB>db_id), BIRD JSON "
            '{"0": "SQL\\t----- bird -----\\tdb_id"}, or JSONL {index, sql}; detected from the extension/content.'
        ),
    ] = None,
    write_predictions: Annotated[
        Path | None,
        typer.Option(
            help="Also write the predictions scored (generated or read) here, for the official scripts: "
            ".sql/.txt Spider text (SQL<TAB>db_id per line), .json BIRD, .jsonl this tool's format."
        ),
    ] = None,
    metric: Annotated[str, typer.Option(help="spider (test-suite exec match) or bird (set equality).")] = "spider",
    keep_distinct: Annotated[
        bool, typer.Option(help="Spider metric: keep DISTINCT (the official default drops it).")
    ] = False,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe for prompt/eval settings (schema, system prompt).")
    ] = None,
    set_: SetOpt = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples.")] = None,
    db_dir: Annotated[str | None, typer.Option(help="Folder of databases named by db_id (JSONL/alpaca data).")] = None,
    timeout: Annotated[float, typer.Option(help="Per-query timeout in seconds.")] = 30.0,
    skip_bad_gold: Annotated[
        bool, typer.Option(help="Leave out examples whose gold SQL fails, instead of stopping.")
    ] = False,
    dialect: Annotated[
        str | None, typer.Option(help="Dialect the predictions are written in (sqlglot name); default: the database's.")
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            help="With --model: also sample N candidates per question and report self-consistency EX (majority "
            "vote over execution results) beside greedy EX."
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature for --samples.")] = 0.8,
    backend: Annotated[
        str | None,
        typer.Option(
            help="With --model: generate with auto (vLLM when installed and a GPU is present, else hf), hf "
            "(transformers) or vllm (the [vllm] extra). Default: the recipe's eval.backend (auto)."
        ),
    ] = None,
) -> None:
    """Execution accuracy of a model (greedy generation, optionally + self-consistency) or of a predictions file."""
    from nl2sql_align.data import load_examples
    from nl2sql_align.evaluate import (
        check_samples,
        print_summary,
        read_predictions,
        score_predictions,
        summarize,
        write_report,
    )
    from nl2sql_align.recipe import load_recipe
    from nl2sql_align.sql import SQLExecutor

    if metric not in ("spider", "bird"):
        raise UserError(f"--metric {metric!r}: choose spider or bird")
    if (model is None) == (predictions is None):
        raise UserError("give exactly one of --model (generate) or --predictions (score a file)")
    if samples is not None and model is None:
        raise UserError("--samples needs --model: self-consistency samples from the model")
    if backend is not None and model is None:
        raise UserError("--backend needs --model: it chooses how the model generates")
    if write_predictions is not None:
        from nl2sql_align.predictions import format_for_path

        format_for_path(write_predictions)  # a bad extension fails now, not after a long generation
    # The flags are recipe settings ([eval] samples, temperature, backend): one path for both, checked once.
    overrides = list(set_ or [])
    if samples is not None:
        overrides += [f"eval.samples={samples}", f"eval.temperature={temperature}"]
    if backend is not None:
        overrides.append(f"eval.backend={json.dumps(backend)}")
    r = load_recipe(recipe, overrides)
    check_samples(r.eval)
    examples = load_examples(data, db_dir=db_dir or r.data.db_dir, db=r.data.db, db_field=r.data.db_field, limit=limit)
    outputs = None
    candidates = None
    if model is not None:
        from nl2sql_align.evaluate import model_predictions
        from nl2sql_align.generation import load_generator

        generator = load_generator(model, r)
        try:
            outputs, preds, candidates = model_predictions(generator, examples, r)
        finally:
            generator.close()
    else:
        preds = read_predictions(predictions, len(examples), [e.db_id for e in examples])
    if write_predictions is not None:
        from nl2sql_align.predictions import write_predictions as write

        fmt = write(write_predictions, preds, [e.db_id for e in examples])
        typer.echo(f"predictions ({fmt} format): {write_predictions}")
    with SQLExecutor(workers=r.eval.workers, timeout=timeout) as ex:
        rows = score_predictions(
            examples,
            preds,
            metric=metric,
            keep_distinct=keep_distinct,
            executor=ex,
            skip_bad_gold=skip_bad_gold,
            raw_outputs=outputs,
            pred_dialect=dialect,
            candidates=candidates,
        )
    summary = summarize(rows, metric)
    if model is not None:
        summary["backend"] = generator.backend
    if r.eval.samples is not None:
        summary.update(samples=r.eval.samples, temperature=r.eval.temperature)
    write_report(rows, summary, report)
    print_summary(summary, f"EX on {data}")
    typer.echo(f"report: {report}")


@app.command("data")
def data_(
    spec: Annotated[str, typer.Argument(help="Data spec: demo:train, spider:DIR, bird:DIR, FILE.jsonl, FILE.json.")],
    prompts: Annotated[bool, typer.Option(help="Print the rendered chat prompts instead of the records.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples.")] = None,
    db_dir: Annotated[str | None, typer.Option(help="Folder of databases named by db_id.")] = None,
    db: Annotated[str | None, typer.Option(help="One database for every example (alpaca files).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose \\[data] schema/prompt settings to use.")] = None,
) -> None:
    """Print the loaded examples as JSONL, or the exact prompts training will see."""
    from nl2sql_align.data import build_messages, load_examples
    from nl2sql_align.recipe import load_recipe

    r = load_recipe(recipe)
    d = r.data
    examples = load_examples(spec, db_dir=db_dir or d.db_dir, db=db or d.db, db_field=d.db_field, limit=limit)
    for i, ex in enumerate(examples):
        if prompts:
            msgs = build_messages(ex, d.schema, d.system_prompt)
            typer.echo(json.dumps({"index": i, "id": ex.id, "messages": msgs}, ensure_ascii=False))
        else:
            typer.echo(json.dumps(ex.to_json(i), ensure_ascii=False))


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option(help="A LoRA/QLoRA output folder (adapter_config.json names the base).")],
    output: Annotated[Path, typer.Option(help="Folder for the merged model and tokenizer.")],
    dtype: Annotated[
        str | None, typer.Option(help="dtype to load the base in (default: the training recipe's).")
    ] = None,
) -> None:
    """Merge LoRA adapters into an unquantized copy of the base; the result loads with plain transformers."""
    from nl2sql_align.merge import merge_adapter

    out = merge_adapter(adapter, output, dtype)
    typer.echo(f"merge: wrote {out}")


@app.command(context_settings={"allow_extra_args": True})
def compare(
    ctx: typer.Context,
    runs: Annotated[
        list[Path] | None,
        typer.Option(
            "--runs", help="Trained output folders (sft, dpo, ppo, grpo): --runs A B C (or --runs A --runs B)."
        ),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            "-r",
            help="Pipeline recipe (e.g. recipes/compare-demo.toml): run its [[steps]] in order, then compare the "
            "policies they trained. Steps whose output is up to date are reused.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Eval set every run is scored on: demo:dev, spider:DIR, bird:DIR, FILE (pipeline: [compare] data)."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Folder for report.md, summary.json, ex/cost/curves.png, runs/<name>/ (default out/compare; pipeline: [compare] report)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples.")] = None,
    metric: Annotated[
        str | None, typer.Option(help="spider (test-suite exec match, the default) or bird (set equality).")
    ] = None,
    db_dir: Annotated[str | None, typer.Option(help="Folder of databases named by db_id (JSONL/alpaca data).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Pipeline: change one step's recipe, --set STEP.train.learning_rate=1e-5, or --set compare.limit=50.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Pipeline: retrain steps whose output exists but was made with other settings or inputs."),
    ] = False,
    reuse: Annotated[
        bool,
        typer.Option(help="Pipeline: reuse steps whose output this pipeline made with the same settings and inputs."),
    ] = True,
    resume: Annotated[bool, typer.Option(help="Pipeline: continue a step interrupted after a checkpoint.")] = False,
) -> None:
    """Score trained runs on one eval set (greedy, each with its own recipe's prompt) beside their training cost;
    with --recipe, first train them: a pipeline of sft, pairs, rm, dpo, ppo and grpo steps."""
    from nl2sql_align.compare import compare_runs, print_table
    from nl2sql_align.stages.runner import resolved_command

    extra = list(ctx.args)  # `--runs A B C`: click takes A for --runs and leaves B, C as extra arguments
    if any(a.startswith("-") for a in extra):
        raise UserError(f"compare: unknown option(s) {' '.join(a for a in extra if a.startswith('-'))}")
    if (recipe is None) == (runs is None):
        raise UserError(
            "compare: give either --runs DIR... (trained outputs) or --recipe PIPELINE.toml (train, then compare)"
        )
    if recipe is not None:
        if extra:
            raise UserError(f"compare --recipe: unexpected argument(s) {' '.join(extra)}")
        summary = run_pipeline_command(recipe, set_, data, report, limit, metric, db_dir, overwrite, reuse, resume)
        report = Path(summary["pipeline"]["report"])
    else:
        if set_ or overwrite or resume or not reuse:
            raise UserError("compare --runs: --set, --overwrite, --no-reuse and --resume apply to --recipe pipelines")
        if data is None:
            raise UserError("compare --runs: --data is required (the eval set every run is scored on, e.g. demo:dev)")
        report = report or Path("out/compare")
        summary = compare_runs(
            [*runs, *map(Path, extra)],
            data,
            report,
            limit=limit,
            metric=metric or "spider",
            db_dir=db_dir,
            command=resolved_command(),
        )
    print_table(summary)
    typer.echo(f"report: {report}")


def run_pipeline_command(
    recipe: Path,
    set_: list[str] | None,
    data: str | None,
    report: Path | None,
    limit: int | None,
    metric: str | None,
    db_dir: str | None,
    overwrite: bool,
    reuse: bool,
    resume: bool,
) -> dict:
    """`compare --recipe`: options given on the command line override the pipeline's [compare]."""
    from nl2sql_align.pipeline import run_pipeline
    from nl2sql_align.stages.runner import resolved_command

    overrides = list(set_ or [])
    for key, value in (("data", data), ("limit", limit), ("metric", metric), ("db_dir", db_dir)):
        if value is not None:
            overrides.append(f"compare.{key}={json.dumps(value)}")
    return run_pipeline(
        recipe, overrides, report=report, overwrite=overwrite, reuse=reuse, resume=resume, command=resolved_command()
    )


@app.command()
def demo(
    recipe: Annotated[Path, typer.Option(help="Pipeline recipe of the demo.")] = Path("recipes/compare-demo.toml"),
    model_dir: Annotated[Path, typer.Option(help="Where the tiny model is built (reused if present).")] = Path(
        "out/tiny-model"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Change one step's recipe: --set sft.train.num_train_epochs=4, --set compare.limit=50."
        ),
    ] = None,
    reuse: Annotated[
        bool, typer.Option(help="Reuse steps already trained by this pipeline with the same settings.")
    ] = True,
) -> None:
    """The whole job on the embedded demo: build the tiny model, then SFT, pairs -> RM -> DPO and PPO, and GRPO,
    then score every policy on demo:dev beside its training cost (what `make demo` runs)."""
    from nl2sql_align.compare import print_table
    from nl2sql_align.pipeline import run_pipeline
    from nl2sql_align.stages.runner import resolved_command
    from nl2sql_align.tiny_model import ensure_tiny_model

    typer.echo(f"demo: tiny model -> {model_dir}")
    ensure_tiny_model(model_dir)
    summary = run_pipeline(
        recipe,
        [f"sft.model.name_or_path={json.dumps(str(model_dir))}", *(set_ or [])],
        overwrite=True,
        reuse=reuse,
        command=resolved_command(),
    )
    print_table(summary)
    typer.echo(f"report: {summary['pipeline']['report']}/report.md")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="nl2sql-align")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
