"""The command line's options, declared once: `cli.py` reads as a list of commands, each a few lines over the
module that does its work. Help texts say which recipe key an option overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXIT_CODES = (
    "Exit codes: 0 success; 1 the command ran but failed (eval --min-ex not reached, or a crash: the traceback "
    "says where); 2 usage or input error (bad recipe, missing file, bad data line: the message says what to fix); "
    "130 interrupted (a training stage continues with --resume)."
)

# One command per training stage; they differ only in their help text.
STAGE_HELP = {
    "sft": "Supervised fine-tuning (TRL SFTTrainer): full, LoRA or 4-bit QLoRA; loss on the SQL answer only.",
    "rm": "Reward model (TRL RewardTrainer) on preference pairs from `pairs` or your own file; reports pairwise "
    "accuracy on held-out pairs before and after training. `ppo` loads the result as its reward model.",
    "dpo": "Preference optimisation on pairs; [preference] method = dpo (TRL DPOTrainer, any train.loss_type: "
    "sigmoid, ipo, hinge, ...), kto (TRL KTOTrainer on labelled completions), simpo or orpo (EXPERIMENTAL in "
    "TRL 1.16: trl.experimental CPOTrainer / ORPOTrainer, API may change). Reports held-out log-prob margins.",
    "ppo": "PPO (our own actor-critic: value head, GAE, clipped losses, KL to the starting policy) rewarded by "
    "execution components and/or a reward model from `rm` ([reward] model = DIR, model_weight); full, LoRA or "
    "QLoRA.",
    "grpo": "GRPO (TRL GRPOTrainer) with execution rewards: [reward] picks components and weights (presets "
    "default, sql-r1, arctic, skyrl, or your own function); usually starts from an sft output.",
    "rloo": "RLOO (TRL RLOOTrainer, REINFORCE Leave-One-Out: each completion's baseline is the mean reward of the "
    "other completions of its prompt) with the same data, [reward] components, presets and guards as grpo.",
}

# The one-line summaries `nl2sql-align --help` lists (whole at 80 columns; the full text is each command's --help).
SHORT_HELP = {
    "sft": "Supervised fine-tuning (LoRA, QLoRA or full).",
    "rm": "Train a reward model on preference pairs.",
    "dpo": "Preference optimisation: DPO, KTO, SimPO, ORPO.",
    "ppo": "PPO with execution rewards and/or a reward model.",
    "grpo": "GRPO with execution rewards.",
    "rloo": "RLOO (leave-one-out baseline) with execution rewards.",
    "ask": "Ask a trained model questions about a database.",
    "import-gguf": "Convert a GGUF file into a model folder.",
    "db": "Database utilities (copy into PostgreSQL).",
    "pairs": "Mine preference pairs by executing samples.",
    "validate": "Check a recipe as the run would, without training.",
    "eval": "Execution accuracy of a model or predictions.",
    "data": "Show loaded examples, prompts or stats.",
    "merge": "Merge LoRA adapters into a plain model.",
    "compare": "Score runs side by side, or train a pipeline.",
    "demo": "The whole comparison on the embedded demo.",
}

# The Typer application's settings (cli.py builds `app` from them).
APP = {
    "name": "nl2sql-align",
    "help": "Post-train language models to write SQL: SFT, then preference and RL stages, scored by execution.",
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": {"max_content_width": 120},
    "epilog": EXIT_CODES,
}

# Sub-command groups (`db ...`) format their help the same way.
SUBAPP = {"rich_markup_mode": None, "context_settings": {"max_content_width": 120}}

# Shared by several commands.
Recipe = Annotated[Path, typer.Option("--recipe", "-r", help="Recipe TOML file (- reads it from stdin).")]
OptionalRecipe = Annotated[Path | None, typer.Option(help="Recipe whose [data] prompt and [eval] keys to use.")]
Set = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set train.learning_rate=1e-6 (repeatable)."),
]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing output folder (once the new one is complete).")]
Resume = Annotated[
    bool, typer.Option(help="Continue an interrupted run from its newest complete checkpoint (needs save_steps).")
]
Procs = Annotated[
    int, typer.Option("--num-processes", help="Train on N processes: relaunches itself through `accelerate launch`.")
]
AccelConfig = Annotated[
    Path | None,
    typer.Option(
        "--accelerate-config", help="Accelerate config (e.g. recipes/accelerate/zero3.yaml) for the relaunch."
    ),
]
DbDir = Annotated[str | None, typer.Option(help="Folder of databases named by db_id (JSONL/alpaca data).")]
Limit = Annotated[int | None, typer.Option(help="Only the first N examples.")]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else (tables go to stderr).")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
Model = Annotated[
    str | None,
    typer.Option(
        help="Model or adapter folder to generate with; its recipe.resolved.toml (a checkpoint-N folder: its run's) "
        "gives the prompt."
    ),
]
PairsModel = Annotated[
    str | None,
    typer.Option(
        help="Model or adapter folder to sample from (default: the recipe's model); --recipe gives the prompt."
    ),
]
DataSpec = Annotated[str, typer.Option(help="Data spec: demo:dev, spider:DIR, bird:DIR, FILE.jsonl, FILE.json, -.")]

# pairs
PairsData = Annotated[str | None, typer.Option(help="Questions with gold SQL (default: the recipe's pairs.data).")]
PairsOutput = Annotated[
    Path | None,
    typer.Option(help="Folder for pairs.jsonl, unpaired.jsonl, samples.jsonl, summary.json (pairs.output)."),
]
PairsSamples = Annotated[int | None, typer.Option(help="Completions sampled per question (pairs.samples).")]

# validate
RecipeArg = Annotated[Path, typer.Argument(help="Recipe TOML file (- reads it from stdin).")]
StageName = Annotated[str | None, typer.Option(help="Stage to check it for (default: from the file name).")]
ValidateProcs = Annotated[int, typer.Option(help="Training processes the recipe will run on (batch arithmetic).")]

# eval: every flag below `--recipe` is an override of an [eval] key.
Report = Annotated[
    Path | None, typer.Option(help="Folder for per_example.jsonl, summary.json and ex.png (default: none written).")
]
Predictions = Annotated[
    Path | None,
    typer.Option(
        help="Score these instead (- reads stdin): Spider text (one SQL per line, optionally SQL<TAB>db_id), "
        'BIRD JSON {"0": "SQL\\t----- bird -----\\tdb_id"}, or JSONL {index, sql}; detected from the '
        "extension/content."
    ),
]
WritePredictions = Annotated[
    Path | None,
    typer.Option(
        help="Also write the predictions scored here, for the official scripts: .sql/.txt Spider text "
        "(SQL<TAB>db_id per line), .json BIRD, .jsonl this tool's format; - writes Spider text to stdout."
    ),
]
EvalRecipe = Annotated[
    Path | None, typer.Option(help="Recipe for the prompt and [eval] settings (default: the model's own).")
]
Metric = Annotated[
    str | None,
    typer.Option(help="eval.metric: spider (test-suite), bird (set equality) or bird-f1 (bird's EX plus Soft-F1)."),
]
KeepDistinct = Annotated[bool | None, typer.Option(help="eval.keep_distinct (Spider metric).")]
Timeout = Annotated[float | None, typer.Option(help="eval.timeout: seconds per query.")]
Samples = Annotated[
    int | None, typer.Option(help="eval.samples: also sample N per question (self-consistency, pass@k).")
]
Temperature = Annotated[float | None, typer.Option(help="eval.temperature for --samples.")]
Ves = Annotated[
    int | None,
    typer.Option(
        "--ves",
        help="eval.ves_iterations: also report BIRD mini-dev's R-VES, timing each correct prediction and its gold "
        "N times (the official script: 100); 0: off (a model trained with it set).",
    ),
]
Backend = Annotated[str | None, typer.Option(help="eval.backend: auto, hf or vllm (the [vllm] extra).")]
Agent = Annotated[
    bool | None, typer.Option(help="eval.agent: let the model run execute_sql tool calls before it answers ([agent]).")
]
SkipBadGold = Annotated[bool, typer.Option(help="Leave out examples whose gold SQL fails.")]
Dialect = Annotated[
    str | None, typer.Option(help="Dialect the predictions are written in (sqlglot name); default: the database's.")
]
MinEx = Annotated[float | None, typer.Option(help="Exit 1 when EX (%) is below this: a gate for CI jobs.")]

# data
DataArg = Annotated[
    str, typer.Argument(help="Data spec: demo:train, spider:DIR, bird:DIR, FILE.jsonl, FILE.json, - (stdin).")
]
Prompts = Annotated[bool, typer.Option(help="Print the rendered chat prompts instead of the records.")]
Stats = Annotated[bool, typer.Option(help="Print counts per level and database instead of the records.")]
OneDb = Annotated[str | None, typer.Option(help="One database for every example (alpaca files).")]

# merge
Adapter = Annotated[Path, typer.Option(help="A LoRA/QLoRA output folder (adapter_config.json names the base).")]
MergeOutput = Annotated[Path, typer.Option(help="Folder for the merged model and tokenizer.")]
MergeDtype = Annotated[str | None, typer.Option(help="dtype to load the base in (default: the training recipe's).")]

# compare and demo
Runs = Annotated[
    list[Path] | None,
    typer.Option(
        "--runs", help="Trained output folders (sft, dpo, ppo, grpo, rloo): --runs A B C (or --runs A --runs B)."
    ),
]
PipelineRecipe = Annotated[
    Path | None,
    typer.Option(
        "--recipe",
        "-r",
        help="Pipeline recipe (e.g. recipes/compare-demo.toml): run its [[steps]] in order, then compare the "
        "policies they trained. Steps whose output is up to date are reused.",
    ),
]
CompareData = Annotated[
    str | None, typer.Option(help="Eval set every run is scored on: demo:dev, spider:DIR, bird:DIR, FILE.")
]
CompareReport = Annotated[
    Path | None, typer.Option(help="Folder for report.md, summary.json, plots, runs/<name>/ (default out/compare).")
]
CompareBaseline = Annotated[
    str | None,
    typer.Option(help="Run the others are tested against (default: the first sft run, else the first run)."),
]
CompareSeeds = Annotated[
    int | None,
    typer.Option(help="--recipe: train every step with N seeds; report the spread across seeds ([compare] seeds)."),
]
CompareMetric = Annotated[str | None, typer.Option(help="spider, bird or bird-f1 (default: the runs' eval.metric).")]
PipelineSet = Annotated[
    list[str] | None,
    typer.Option("--set", help="Pipeline: --set STEP.train.learning_rate=1e-5, or --set compare.limit=50."),
]
CompareOverwrite = Annotated[
    bool, typer.Option(help="--runs: replace an existing report. Pipeline: retrain steps made with other settings.")
]
Reuse = Annotated[bool, typer.Option(help="Pipeline: reuse steps made with the same settings and inputs.")]
PipelineResume = Annotated[bool, typer.Option(help="Pipeline: continue a step interrupted after a checkpoint.")]
DemoRecipe = Annotated[Path, typer.Option(help="Pipeline recipe of the demo.")]
TinyModelDir = Annotated[Path, typer.Option(help="Where the tiny model is built (reused if present).")]
DemoSet = Annotated[
    list[str] | None,
    typer.Option("--set", help="Change one step's recipe: --set sft.train.num_train_epochs=4, --set compare.limit=50."),
]

# ask
Questions = Annotated[
    list[str] | None, typer.Argument(help="Questions (none: one per line from stdin).", show_default=False)
]
AskModel = Annotated[
    str, typer.Option(help="Model or adapter folder; its recipe.resolved.toml gives the prompt and [eval] keys.")
]
AskDb = Annotated[
    str, typer.Option(help="Database the questions are about: a .sqlite/.duckdb file or postgresql:// URI.")
]
AskRows = Annotated[int, typer.Option(help="Rows of each result to show.")]
AskSamples = Annotated[
    int | None, typer.Option(help="eval.samples: sample N per question and answer with the vote over their results.")
]
AskJson = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object per question on stdout and nothing else (tables to stderr)."),
]
