"""The one runner every stage shares: recipe -> TRL config, model/tokenizer/LoRA/QLoRA setup, metrics,
atomic outputs, plots, model card, and the evaluation at the end.

A stage module only says how to turn examples into its dataset columns and which TRL trainer to build
(see stages/sft.py); everything else lives here, so the stages cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nl2sql_align.environment import run_environment
from nl2sql_align.evaluate import evaluate
from nl2sql_align.gguf import resolve_model_path
from nl2sql_align.recipe import RESOLVED_NAME, Recipe, write_resolved
from nl2sql_align.stages import Stage
from nl2sql_align.stages.budget import BudgetStop
from nl2sql_align.stages.checkpoints import (  # noqa: F401  (re-exported: the stage modules' one import)
    COMPLETE_MARKER,
    _truncate_metrics,
    check_resume,
    checkpoint_marker,
    checkpoint_step,
    complete_checkpoints,
    partial_dir,
    prepare_output_dir,
    prepare_training_dir,
    publish,
)
from nl2sql_align.stages.preflight import check_stage, train_args
from nl2sql_align.stages.setup import (  # noqa: F401
    build_model_kwargs,
    build_peft_config,
    build_quantization_config,
    load_stage_examples,
    load_training_tokenizer,
    make_train_args,
)

log = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage's build function receives."""

    recipe: Recipe
    args: Any  # the stage's TRL config instance
    tokenizer: Any
    model: str  # a path or hub id; TRL loads it with args.model_init_kwargs
    peft_config: Any | None
    quantization_config: Any | None
    train_examples: list  # Examples, or PreferenceRecords for the preference stages
    eval_examples: list  # Examples scored by execution after training (stages that generate)
    callbacks: list
    eval_pairs: list = field(default_factory=list)  # held-out PreferenceRecords (rm, dpo)


def resolved_command() -> str:
    return " ".join(["nl2sql-align", *sys.argv[1:]]) if sys.argv else "nl2sql-align"


class MetricsLogger:
    """A TrainerCallback (duck-typed, so this module imports no transformers at import time) that appends
    every Trainer log to metrics.jsonl, and at the end one `"event": "train_end"` row with what a comparison
    of runs needs (so `compare` never re-measures): wall time of the training loop, the optimizer steps it took,
    seconds per step (their ratio: a PPO rollout or a GRPO generation happens on some steps only, so a median
    would hide it), peak memory (this process's RSS; on a GPU also the CUDA peak) and the tokens seen, where the
    trainer counts them (`num_tokens`)."""

    def __init__(self, path: Path, stage: str | None = None, method: str | None = None, seed: int | None = None):
        self.path = path
        self.seed = seed
        self.budget: BudgetStop | None = None  # the run's [budget], reported in train_end when it stopped the run
        self.stage = stage
        self.method = method  # dpo's preference method (dpo, kto, simpo, orpo); the stage stays "dpo"
        self.t0 = time.time()
        self.num_tokens: float | None = None
        self.train_started: float | None = None
        self.first_step = 0

    def write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def summary(self, state) -> dict:
        import resource

        seconds = time.time() - (self.train_started or self.t0)
        steps = state.global_step - self.first_step
        row = {
            "step": state.global_step,
            "event": "train_end",
            "stage": self.stage,
            **({"method": self.method} if self.method else {}),
            "train_seconds": round(seconds, 3),
            "steps": steps,
            "seconds_per_step": round(seconds / steps, 4) if steps > 0 else None,
            # ru_maxrss is in KiB on Linux: the peak resident memory of this process (model, optimizer, batches).
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "env": run_environment(self.seed),  # what the numbers depend on beyond the recipe (environment.py)
        }
        if self.budget is not None and self.budget.stopped_at is not None:
            row["budget"] = self.budget.stopped_at  # [budget] ended the run: which limit, at which step
        try:
            import torch

            if torch.cuda.is_available():
                row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        except ImportError:
            pass
        if self.num_tokens is not None:
            row["num_tokens"] = self.num_tokens
            row["tokens_per_second"] = round(self.num_tokens / seconds, 2) if seconds > 0 else None
        return row

    def make(self):
        from transformers import TrainerCallback

        logger = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                logger.train_started = time.time()
                logger.first_step = state.global_step  # > 0 when resuming

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not state.is_world_process_zero or not logs:
                    return
                if isinstance(logs.get("num_tokens"), (int, float)):
                    logger.num_tokens = logs["num_tokens"]
                row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time() - logger.t0, 3)}
                row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
                logger.write(row)

            def on_train_end(self, args, state, control, **kwargs):
                if state.is_world_process_zero:
                    logger.write(logger.summary(state))

        return _CB()


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a plain single process), before any process group exists."""
    return int(os.environ.get("RANK", "0") or 0) == 0


class BatchTrace:
    """Diagnostics for multi-process runs, on when NL2SQL_ALIGN_TRACE_DIR is set: each rank writes
    rank<k>.json with a fingerprint of every batch it trained on and of its final weights, so that one can check
    that the ranks saw different data and ended with the same model."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.batches: list[str] = []

    @classmethod
    def install(cls, trainer) -> BatchTrace | None:
        folder = os.environ.get("NL2SQL_ALIGN_TRACE_DIR")
        if not folder:
            return None
        trace = cls(Path(folder))
        step = trainer.training_step

        def traced(model, inputs, *args, **kwargs):
            if isinstance(inputs, dict) and "input_ids" in inputs:  # tokenized batches (sft, rm, dpo)
                trace.batches.append(_fingerprint([inputs["input_ids"]]))
            else:  # GRPO hands its raw rows (prompts, gold SQL) to training_step
                import hashlib

                trace.batches.append(hashlib.sha256(json.dumps(inputs, default=str).encode()).hexdigest()[:16])
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = traced
        return trace

    def write(self, trainer) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        params = [p.detach() for _, p in sorted(model.named_parameters())]
        rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": world,
                    "global_step": trainer.state.global_step,
                    "batches": self.batches,
                    "params": _fingerprint(params),
                }
            )
            + "\n",
            encoding="utf-8",
        )


def _fingerprint(tensors) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def restore_4bit_training_layout(model) -> None:
    """Undo bitsandbytes' CPU inference packing before training continues.

    On CPU, a Linear4bit forward in eval mode without gradients repacks its weight into an inference-only layout
    and keeps it; a later training forward then takes the inference kernel and fails ("a view of a leaf Variable
    ... in-place operation", bitsandbytes 0.50). Held-out measurements run before training, so they call this."""
    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if isinstance(module, Linear4bit) and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, state
            )


def run_stage(
    stage: Stage,
    recipe: Recipe,
    build_trainer: Callable[[StageContext], Any],
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Train one stage end to end and publish its output directory. Returns the final output path.

    First every check `validate` makes (preflight.check_stage: nothing is created, no model loads, if one
    fails). Training happens in `.<output>.partial/`, renamed to the output when complete; the resolved recipe is
    written there first, so that `resume=True` continues from the newest complete checkpoint only with the same
    recipe (checkpoints.check_resume)."""
    import transformers

    checked = check_stage(stage, recipe)
    train_examples, eval_examples, eval_pairs = checked.data
    transformers.set_seed(recipe.seed)
    main = is_main_process()
    if main:
        final, work, resume_from = prepare_training_dir(recipe.output_dir, overwrite, resume)
    else:  # the main process prepares the folder; the others only need its name
        final = Path(recipe.output_dir)
        work = partial_dir(final)
        ckpts = complete_checkpoints(work) if resume and work.is_dir() else []
        resume_from = ckpts[-1] if ckpts else None
    try:
        if main:
            if resume_from is not None:
                check_resume(recipe, work / RESOLVED_NAME)
            write_resolved(recipe, work / RESOLVED_NAME, resolved_command(), run_environment(recipe.seed))
        args = train_args(stage, recipe, work)
        metrics = MetricsLogger(work / "metrics.jsonl", stage.name, stage.method(recipe), recipe.seed)
        budget = metrics.budget = BudgetStop(recipe.budget.seconds, recipe.budget.tokens)
        ctx = StageContext(
            recipe=recipe,
            args=args,
            tokenizer=load_training_tokenizer(recipe),
            model=resolve_model_path(recipe.model.name_or_path),  # a .gguf file: its imported folder
            peft_config=build_peft_config(recipe),
            quantization_config=build_quantization_config(recipe),
            train_examples=train_examples,
            eval_examples=eval_examples,
            callbacks=[metrics.make(), checkpoint_marker(), budget.make()],
            eval_pairs=eval_pairs,
        )
        trainer = build_trainer(ctx)
        trace = BatchTrace.install(trainer)
        heldout = stage.heldout
        measured = {"before": heldout(trainer, ctx)} if heldout else None
        if heldout and ctx.quantization_config is not None:
            restore_4bit_training_layout(trainer.model)
        if resume_from is not None:
            _truncate_metrics(work / "metrics.jsonl", checkpoint_step(resume_from))
            log.info("resuming from %s (global step %d)", resume_from, checkpoint_step(resume_from))
        started = time.time()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else args.resume_from_checkpoint)
        train_seconds = time.time() - started
        if heldout:
            measured["after"] = heldout(trainer, ctx)
        if trainer.accelerator.is_main_process:
            _finish(stage, recipe, trainer, ctx, work, final, train_seconds, measured)
        if trace is not None:
            trace.write(trainer)
        trainer.accelerator.wait_for_everyone()
        return final
    finally:
        # A run that dies after a complete checkpoint keeps its folder for --resume; anything else is removed.
        if not main:
            pass  # only the main process owns the folder
        elif work.exists() and not complete_checkpoints(work):
            shutil.rmtree(work, ignore_errors=True)
        elif work.exists():
            log.warning("training stopped; %s keeps its checkpoints: continue with --resume", work)


def _finish(stage: Stage, recipe: Recipe, trainer, ctx: StageContext, work: Path, final: Path, seconds, measured):
    """Save, plot, evaluate (the one evaluation path, on the model in memory), write the card, publish."""
    from nl2sql_align.generation import HFGenerator
    from nl2sql_align.plots import plot_training

    trainer.save_model(str(work))
    ctx.tokenizer.save_pretrained(str(work))
    trainer.state.save_to_json(str(work / "trainer_state.json"))
    plot_training(work / "metrics.jsonl", work / "plots", run_name=final.name)
    if measured:
        (work / "heldout.json").write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    summary = None
    if ctx.eval_examples and recipe.eval.after_training:
        # The trained model is in memory: eval generates with it (HF), whatever eval.backend says.
        policy = HFGenerator(getattr(trainer, "eval_model", trainer.model), ctx.tokenizer)
        summary, _ = evaluate(
            ctx.eval_examples, recipe, generator=policy, report_dir=work / "eval", title=f"{stage.name} eval"
        )
    shortened = sum(getattr(ex, "schema_values", None) is not None for ex in ctx.train_examples)
    write_model_card(work, final.name, stage, recipe, len(ctx.train_examples), seconds, summary, measured, shortened)
    publish(work, final)


def write_model_card(
    out: Path,
    name: str,
    stage: Stage,
    recipe: Recipe,
    n_train: int,
    seconds: float,
    summary: dict | None,
    measured: dict | None = None,
    shortened: int = 0,
) -> None:
    method = stage.method(recipe)
    how = f"`{stage.name}`" + (f" (preference.method = {method})" if method else "")
    lines = [
        f"# {name}: {stage.name} on {recipe.data.train}",
        "",
        f"Trained by nl2sql-align {how} from `{recipe.model.name_or_path}` on {n_train} {stage.unit} "
        f"in {seconds:.0f} s"
        + (f" ({shortened} of them with a schema shortened to fit train.max_length)." if shortened else "."),
        "Mode: "
        + ("QLoRA" if recipe.quantization else "LoRA" if recipe.lora else "full fine-tune")
        + ". The exact settings are in `recipe.resolved.toml`; training logs in `metrics.jsonl`, curves in `plots/`.",
    ]
    if summary:
        lines += [
            "",
            f"Execution accuracy on {recipe.data.eval} ({summary['n']} examples, {summary['metric']} semantics): "
            f"**EX {summary['ex']:.1f}%**, executable {summary['executable']:.1f}%. Per example: `eval/per_example.jsonl`.",
        ]
    if measured and measured["before"]:
        lines += ["", "Held-out preference data (`heldout.json`):", ""]
        for key in measured["before"]:
            lines.append(f"- {key}: {measured['before'][key]:.4g} before, {measured['after'][key]:.4g} after training")
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
