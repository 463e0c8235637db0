"""The `nl2sql-align` command line: parse, call, print. Each command is a few lines over a module that does the
work (stages, evaluate, compare, pipeline, validate, pairs, merge), so that no logic lives here twice.

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
from nl2sql_align.stdio import is_stdio, print_result, results_only_on_stdout

EXIT_CODES = (
    "Exit codes: 0 success; 1 the command ran but failed (eval --min-ex not reached, or a crash: the traceback "
    "says where); 2 usage or input error (bad recipe, missing file, bad data line: the message says what to fix); "
    "130 interrupted (a training stage continues with --resume)."
)

app = typer.Typer(
    name="nl2sql-align",
    help="Post-train language models to write SQL: SFT, then preference and RL stages, scored by execution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 120},
    epilog=EXIT_CODES,
)

RecipeOpt = Annotated[Path, typer.Option("--recipe", "-r", help="Recipe TOML file (- reads it from stdin).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set train.learning_rate=1e-6 (repeatable)."),
]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing output folder (once the new one is complete).")]
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
DbDirOpt = Annotated[str | None, typer.Option(help="Folder of databases named by db_id (JSONL/alpaca data).")]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N examples.")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else (tables go to stderr).")
]


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    from nl2sql_align.logs import setup_logging

    setup_logging(verbose)


# One command per training stage; they differ only in their help text.
_STAGE_HELP = {
    "sft": "Supervised fine-tuning (TRL SFTTrainer): full, LoRA or 4-bit QLoRA; loss on the SQL answer only.",
    "rm": "Reward model (TRL RewardTrainer) on preference pairs from `pairs` or your own file; reports pairwise "
    "accuracy on held-out pairs before and after training. `ppo` loads the result as its reward model.",
    "dpo": "Preference optimisation on pairs; \\[preference] method = dpo (TRL DPOTrainer, any train.loss_type: "
    "sigmoid, ipo, hinge, ...), kto (TRL KTOTrainer on labelled completions), simpo or orpo (EXPERIMENTAL in "
    "TRL 1.16: trl.experimental CPOTrainer / ORPOTrainer, API may change). Reports held-out log-prob margins.",
    "ppo": "PPO (our own actor-critic: value head, GAE, clipped losses, KL to the starting policy) rewarded by "
    "execution components and/or a reward model from `rm` (\\[reward] model = DIR, model_weight); full, LoRA or "
    "QLoRA.",
    "grpo": "GRPO (TRL GRPOTrainer) with execution rewards: \\[reward] picks components and weights (presets "
    "default, sql-r1, arctic, skyrl, or your own function); usually starts from an sft output.",
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
        from nl2sql_align.launch import is_main_process, relaunch
        from nl2sql_align.stages import load_stage_recipe, stage_module

        if is_stdio(recipe) and (num_processes > 1 or accelerate_config is not None):
            raise UserError("--recipe - (stdin) runs in one process: save the recipe to a file to launch several")
        with results_only_on_stdout():  # stdout carries one line, the output folder: out=$(nl2sql-align sft ...)
            r, _, _ = load_stage_recipe(stage, recipe, set_)  # bad recipes fail here, before any process starts
            relaunch(num_processes, accelerate_config, [stage, "--recipe", str(recipe)], set_, overwrite, resume)
            folder = stage_module(stage).run(r, overwrite=overwrite, resume=resume)
        if is_main_process():
            print_result(str(folder))

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

    r = load_recipe(recipe, [*(set_ or []), *([f"pairs.samples={samples}"] if samples is not None else [])])
    with results_only_on_stdout():  # like a training stage: stdout carries the output folder only
        folder = run_pairs_for_recipe(r, model, data, output, limit=limit, overwrite=overwrite)
    print_result(str(folder))


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file (- reads it from stdin).")],
    stage: Annotated[str | None, typer.Option(help="Stage to check it for (default: from the file name).")] = None,
    set_: SetOpt = None,
    num_processes: Annotated[
        int, typer.Option(help="Training processes the recipe will run on (batch arithmetic).")
    ] = 1,
    json_: JsonOpt = False,
) -> None:
    """Everything the run checks before a model loads (keys, types, TRL config, model folder, report_to, data,
    gold SQL, prompt lengths, rewards), without training: a recipe valid here is one the run accepts."""
    from nl2sql_align.validate import validate_json, validate_recipe

    if json_:
        with results_only_on_stdout():
            doc, error = validate_json(recipe, stage, set_, num_processes)
        print_result(json.dumps(doc, ensure_ascii=False, indent=2))
        if error is not None:
            raise error  # the message on stderr, exit 2: the same outcome as without --json
        return
    lines, verdict = validate_recipe(recipe, stage, set_, num_processes)
    for line in lines:
        typer.echo(f"ok  {line}")
    typer.echo(verdict)


@app.command("eval")
def eval_(
    data: Annotated[str, typer.Option(help="Data spec: demo:dev, spider:DIR, bird:DIR, FILE.jsonl, FILE.json.")],
    report: Annotated[
        Path | None, typer.Option(help="Folder for per_example.jsonl, summary.json and ex.png (default: none written).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model or adapter folder to generate with; its recipe.resolved.toml gives the prompt."),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Score these instead (- reads stdin): Spider text (one SQL per line, optionally SQL<TAB>db_id), "
            'BIRD JSON {"0": "SQL\\t----- bird -----\\tdb_id"}, or JSONL {index, sql}; detected from the '
            "extension/content."
        ),
    ] = None,
    write_predictions: Annotated[
        Path | None,
        typer.Option(
            help="Also write the predictions scored here, for the official scripts: .sql/.txt Spider text "
            "(SQL<TAB>db_id per line), .json BIRD, .jsonl this tool's format; - writes Spider text to stdout."
        ),
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="Recipe for the prompt and \\[eval] settings (default: the model's own).")
    ] = None,
    set_: SetOpt = None,
    metric: Annotated[str | None, typer.Option(help="eval.metric: spider (test-suite) or bird (set equality).")] = None,
    keep_distinct: Annotated[bool | None, typer.Option(help="eval.keep_distinct (Spider metric).")] = None,
    timeout: Annotated[float | None, typer.Option(help="eval.timeout: seconds per query.")] = None,
    samples: Annotated[
        int | None, typer.Option(help="eval.samples: also sample N per question and report self-consistency EX.")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="eval.temperature for --samples.")] = None,
    backend: Annotated[str | None, typer.Option(help="eval.backend: auto, hf or vllm (the [vllm] extra).")] = None,
    limit: LimitOpt = None,
    db_dir: DbDirOpt = None,
    skip_bad_gold: Annotated[bool, typer.Option(help="Leave out examples whose gold SQL fails.")] = False,
    dialect: Annotated[
        str | None, typer.Option(help="Dialect the predictions are written in (sqlglot name); default: the database's.")
    ] = None,
    overwrite: OverwriteOpt = False,
    min_ex: Annotated[float | None, typer.Option(help="Exit 1 when EX (%) is below this: a gate for CI jobs.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Execution accuracy of a model (greedy, optionally + self-consistency) or of a predictions file. The flags
    are overrides of the recipe's \\[eval] keys: a flag not given leaves the recipe's value."""
    from nl2sql_align.evaluate import check_min_ex, eval_command, eval_overrides

    for flag, value in (("--samples", samples), ("--backend", backend), ("--temperature", temperature)):
        if value is not None and model is None:
            raise UserError(f"{flag} needs --model: it sets how the model generates")
    flags = dict(metric=metric, keep_distinct=keep_distinct, timeout=timeout, samples=samples)
    overrides = [*(set_ or []), *eval_overrides(**flags, temperature=temperature, backend=backend)]
    if json_ and is_stdio(write_predictions):
        raise UserError("--json and --write-predictions - both write to stdout: write the predictions to a file")
    with results_only_on_stdout(json_ or is_stdio(write_predictions)):
        summary = eval_command(
            data, report, model=model, predictions=predictions, recipe=recipe, overrides=overrides,
            write_predictions=write_predictions, limit=limit, db_dir=db_dir, skip_bad_gold=skip_bad_gold,
            dialect=dialect, overwrite=overwrite,
        )  # fmt: skip
    if json_:
        print_result(json.dumps(summary, ensure_ascii=False, indent=2))
    elif report is not None and not is_stdio(write_predictions):
        typer.echo(report)
    if not check_min_ex(summary, min_ex):
        raise typer.Exit(1)


@app.command("data")
def data_(
    spec: Annotated[
        str, typer.Argument(help="Data spec: demo:train, spider:DIR, bird:DIR, FILE.jsonl, FILE.json, - (stdin).")
    ],
    prompts: Annotated[bool, typer.Option(help="Print the rendered chat prompts instead of the records.")] = False,
    stats: Annotated[bool, typer.Option(help="Print counts per level and database instead of the records.")] = False,
    json_: JsonOpt = False,
    limit: LimitOpt = None,
    db_dir: DbDirOpt = None,
    db: Annotated[str | None, typer.Option(help="One database for every example (alpaca files).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe whose \\[data] schema/prompt settings to use.")] = None,
) -> None:
    """Print the loaded examples as JSONL, or the exact prompts training will see, or (--stats) what they hold."""
    from nl2sql_align.data import build_messages, examples_for
    from nl2sql_align.data.stats import data_stats, print_stats
    from nl2sql_align.recipe import load_recipe

    d = load_recipe(recipe).data
    examples = examples_for(d, spec, limit=limit, db_dir=db_dir, db=db)
    if stats or json_:
        summary = data_stats(examples, spec)
        if json_:
            print_result(json.dumps(summary, ensure_ascii=False, indent=2))
        else:
            print_stats(summary)
        return
    for i, ex in enumerate(examples):
        row = {"index": i, "id": ex.id, "messages": build_messages(ex, d.schema, d.system_prompt)}
        typer.echo(json.dumps(row if prompts else ex.to_json(i), ensure_ascii=False))


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option(help="A LoRA/QLoRA output folder (adapter_config.json names the base).")],
    output: Annotated[Path, typer.Option(help="Folder for the merged model and tokenizer.")],
    dtype: Annotated[
        str | None, typer.Option(help="dtype to load the base in (default: the training recipe's).")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Merge LoRA adapters into an unquantized copy of the base; the result loads with plain transformers."""
    from nl2sql_align.merge import merge_adapter

    with results_only_on_stdout():
        folder = merge_adapter(adapter, output, dtype, overwrite=overwrite)
    print_result(str(folder))


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
        str | None, typer.Option(help="Eval set every run is scored on: demo:dev, spider:DIR, bird:DIR, FILE.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Folder for report.md, summary.json, plots, runs/<name>/ (default out/compare).")
    ] = None,
    limit: LimitOpt = None,
    metric: Annotated[str | None, typer.Option(help="spider or bird (default: the runs' eval.metric).")] = None,
    db_dir: DbDirOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Pipeline: --set STEP.train.learning_rate=1e-5, or --set compare.limit=50."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="--runs: replace an existing report. Pipeline: retrain steps made with other settings.")
    ] = False,
    reuse: Annotated[bool, typer.Option(help="Pipeline: reuse steps made with the same settings and inputs.")] = True,
    resume: Annotated[bool, typer.Option(help="Pipeline: continue a step interrupted after a checkpoint.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Score trained runs on one eval set (greedy, each with its own recipe's prompt) beside their training cost;
    with --recipe, first train them: a pipeline of sft, pairs, rm, dpo, ppo and grpo steps."""
    from nl2sql_align.compare import compare_command, print_table

    extra = list(ctx.args)  # `--runs A B C`: click takes A for --runs and leaves B, C as extra arguments
    if any(a.startswith("-") for a in extra):
        raise UserError(f"compare: unknown option(s) {' '.join(a for a in extra if a.startswith('-'))}")
    with results_only_on_stdout(json_):
        summary = compare_command(
            runs, extra, recipe, data=data, report=report, limit=limit, metric=metric, db_dir=db_dir,
            overrides=set_, overwrite=overwrite, reuse=reuse, resume=resume,
        )  # fmt: skip
        print_table(summary)
    print_result(json.dumps(summary, ensure_ascii=False, indent=2, default=str) if json_ else str(summary["report"]))


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
    from nl2sql_align.pipeline import run_demo

    summary = run_demo(recipe, model_dir, set_, reuse)
    print_table(summary)
    typer.echo(f"{summary['pipeline']['report']}/report.md")


def main() -> None:
    """Exit codes: 0 done, 1 failed (a bug or a crash: the traceback says where), 2 bad input (the message says
    what to fix), 130 interrupted."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="nl2sql-align")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        stage = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        hint = f": run the same `{stage}` command with --resume to continue" if stage in _STAGE_HELP else ""
        print(f"interrupted{hint}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
