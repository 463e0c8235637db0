"""The `nl2sql-align` command line: parse, call, print. Each command is a few lines over the module that does the
work, so that no logic lives here twice; options are declared in cli_options.py. Heavy imports (torch,
transformers, trl) happen inside the commands, so `--help` answers instantly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from nl2sql_align import cli_options as o
from nl2sql_align import cli_tools
from nl2sql_align.errors import UserError
from nl2sql_align.stdio import is_stdio, print_result, results_only_on_stdout

app = typer.Typer(**o.APP)


@app.callback()
def _setup(verbose: o.Verbose = False) -> None:
    from nl2sql_align.logs import setup_logging

    setup_logging(verbose)


def _register_stage(stage: str, help_text: str) -> None:
    def command(recipe: o.Recipe, set_: o.Set = None, overwrite: o.Overwrite = False, resume: o.Resume = False,
                num_processes: o.Procs = 1, accelerate_config: o.AccelConfig = None) -> None:  # fmt: skip
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
    app.command(stage, help=help_text, short_help=o.SHORT_HELP[stage])(command)


for _stage, _help in o.STAGE_HELP.items():
    _register_stage(_stage, _help)


@app.command(short_help=o.SHORT_HELP["pairs"])
def pairs(
    model: o.PairsModel = None,
    data: o.PairsData = None,
    output: o.PairsOutput = None,
    recipe: o.OptionalRecipe = None,
    set_: o.Set = None,
    samples: o.PairsSamples = None,
    limit: o.Limit = None,
    overwrite: o.Overwrite = False,
) -> None:
    """Mine preference pairs by execution: sample K answers per question, run them, pair correct with wrong."""
    from nl2sql_align.pairs import run_pairs_for_recipe
    from nl2sql_align.recipe import load_recipe

    r = load_recipe(recipe, [*(set_ or []), *([f"pairs.samples={samples}"] if samples is not None else [])])
    with results_only_on_stdout():  # like a training stage: stdout carries the output folder only
        folder = run_pairs_for_recipe(r, model, data, output, limit=limit, overwrite=overwrite)
    print_result(str(folder))


@app.command(short_help=o.SHORT_HELP["validate"])
def validate(
    recipe: o.RecipeArg,
    stage: o.StageName = None,
    set_: o.Set = None,
    num_processes: o.ValidateProcs = 1,
    json_: o.Json = False,
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


@app.command("eval", short_help=o.SHORT_HELP["eval"])
def eval_(
    data: o.DataSpec,
    report: o.Report = None,
    model: o.Model = None,
    predictions: o.Predictions = None,
    write_predictions: o.WritePredictions = None,
    recipe: o.EvalRecipe = None,
    set_: o.Set = None,
    metric: o.Metric = None,
    keep_distinct: o.KeepDistinct = None,
    timeout: o.Timeout = None,
    samples: o.Samples = None,
    temperature: o.Temperature = None,
    ves: o.Ves = None,
    backend: o.Backend = None,
    agent: o.Agent = None,
    limit: o.Limit = None,
    db_dir: o.DbDir = None,
    skip_bad_gold: o.SkipBadGold = False,
    dialect: o.Dialect = None,
    overwrite: o.Overwrite = False,
    min_ex: o.MinEx = None,
    json_: o.Json = False,
) -> None:
    """Execution accuracy of a model (greedy, self-consistency, pass@k) or a file; flags override [eval] keys."""
    from nl2sql_align.evaluate import check_min_ex, eval_command, eval_flag_overrides

    overrides = eval_flag_overrides(model, set_, metric=metric, keep_distinct=keep_distinct, backend=backend,
                                    timeout=timeout, samples=samples, temperature=temperature, agent=agent,
                                    ves_iterations=ves)  # fmt: skip
    with results_only_on_stdout(json_ or is_stdio(write_predictions)):
        summary = eval_command(
            data, report, model=model, predictions=predictions, recipe=recipe, overrides=overrides, json_=json_,
            write_predictions=write_predictions, limit=limit, db_dir=db_dir, skip_bad_gold=skip_bad_gold,
            dialect=dialect, overwrite=overwrite,
        )  # fmt: skip
    if json_:
        print_result(json.dumps(summary, ensure_ascii=False, indent=2))
    elif report is not None and not is_stdio(write_predictions):
        typer.echo(report)
    if not check_min_ex(summary, min_ex):
        raise typer.Exit(1)


@app.command(short_help=o.SHORT_HELP["ask"])
def ask(model: o.AskModel, db: o.AskDb, questions: o.Questions = None, recipe: o.EvalRecipe = None,
        set_: o.Set = None, samples: o.AskSamples = None, temperature: o.Temperature = None, backend: o.Backend = None,
        timeout: o.Timeout = None, rows: o.AskRows = 10, json_: o.AskJson = False) -> None:  # fmt: skip
    """Answer questions about a database with a trained model: the SQL it writes, run in the sandbox."""
    from nl2sql_align.ask import ask_command

    ask_command(model, db, questions, recipe, set_, samples=samples, temperature=temperature, backend=backend,
                timeout=timeout, rows=rows, json_=json_)  # fmt: skip


@app.command("data", short_help=o.SHORT_HELP["data"])
def data_(
    spec: o.DataArg,
    prompts: o.Prompts = False,
    stats: o.Stats = False,
    json_: o.Json = False,
    limit: o.Limit = None,
    db_dir: o.DbDir = None,
    db: o.OneDb = None,
    recipe: o.OptionalRecipe = None,
) -> None:
    """Print the loaded examples as JSONL, or the exact prompts training will see, or (--stats) what they hold."""
    from nl2sql_align.data.show import data_command

    lines = data_command(spec, recipe, prompts=prompts, stats=stats, json_=json_, limit=limit, db_dir=db_dir, db=db)
    for line in lines:
        print_result(line)


@app.command(short_help=o.SHORT_HELP["merge"])
def merge(
    adapter: o.Adapter, output: o.MergeOutput, dtype: o.MergeDtype = None, overwrite: o.Overwrite = False
) -> None:
    """Merge LoRA adapters into an unquantized copy of the base; the result loads with plain transformers."""
    from nl2sql_align.merge import merge_adapter

    with results_only_on_stdout():
        folder = merge_adapter(adapter, output, dtype, overwrite=overwrite)
    print_result(str(folder))


@app.command(short_help=o.SHORT_HELP["compare"], context_settings={"allow_extra_args": True})
def compare(
    ctx: typer.Context,
    runs: o.Runs = None,
    recipe: o.PipelineRecipe = None,
    data: o.CompareData = None,
    report: o.CompareReport = None,
    limit: o.Limit = None,
    metric: o.CompareMetric = None,
    baseline: o.CompareBaseline = None,
    seeds: o.CompareSeeds = None,
    db_dir: o.DbDir = None,
    set_: o.PipelineSet = None,
    overwrite: o.CompareOverwrite = False,
    reuse: o.Reuse = True,
    resume: o.PipelineResume = False,
    json_: o.Json = False,
) -> None:
    """Score trained runs on one eval set (greedy, each with its own recipe's prompt) beside their training cost;
    with --recipe, first train them: a pipeline of sft, pairs, rm, dpo, ppo, grpo and rloo steps."""
    from nl2sql_align.compare import compare_command, print_table

    with results_only_on_stdout(json_):  # `--runs A B C`: click takes A for --runs, B and C land in ctx.args
        summary = compare_command(
            runs, list(ctx.args), recipe, data=data, report=report, limit=limit, metric=metric, db_dir=db_dir,
            overrides=set_, overwrite=overwrite, reuse=reuse, resume=resume, baseline=baseline, seeds=seeds,
        )  # fmt: skip
        print_table(summary)
    print_result(json.dumps(summary, ensure_ascii=False, indent=2, default=str) if json_ else str(summary["report"]))


@app.command(short_help=o.SHORT_HELP["demo"])
def demo(
    recipe: o.DemoRecipe = Path("recipes/compare-demo.toml"),
    model_dir: o.TinyModelDir = Path("out/tiny-model"),
    set_: o.DemoSet = None,
    reuse: o.Reuse = True,
) -> None:
    """The whole job on the embedded demo: build the tiny model, then SFT, pairs -> RM -> DPO and PPO, and GRPO,
    then score every policy on the held-out demo:test beside its training cost (what `make demo` runs)."""
    from nl2sql_align.compare import print_table
    from nl2sql_align.pipeline import run_demo

    summary = run_demo(recipe, model_dir, set_, reuse)
    print_table(summary)
    typer.echo(f"{summary['pipeline']['report']}/report.md")


cli_tools.register(app)  # import-gguf, db copy: listed after the commands above


def main() -> None:
    """Exit codes: see cli_options.EXIT_CODES."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="nl2sql-align")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        stage = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        hint = f": run the same `{stage}` command with --resume to continue" if stage in o.STAGE_HELP else ""
        print(f"interrupted{hint}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
