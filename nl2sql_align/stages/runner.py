"""The one runner every stage shares: recipe -> TRL config, model/tokenizer/LoRA/QLoRA setup, metrics,
atomic outputs, plots, model card, and the evaluation at the end.

A stage module only says how to turn examples into its dataset columns and which TRL trainer to build
(see stages/sft.py); everything else lives here, so the stages cannot drift apart.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nl2sql_align.errors import RecipeError, UserError
from nl2sql_align.recipe import Recipe, write_resolved


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


def _final_dir(output_dir: str) -> Path:
    if not output_dir:
        raise RecipeError('output_dir is not set: add output_dir = "out/..." to the recipe or --set output_dir=...')
    return Path(output_dir)


def _refuse_existing(final: Path, overwrite: bool) -> None:
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise UserError(
            f"{final} already exists and is not empty; pass --overwrite to replace it once the new run completes"
        )


def prepare_output_dir(output_dir: str, overwrite: bool) -> tuple[Path, Path]:
    """Return (final dir, temp work dir beside it). Outputs appear under the final name only when complete."""
    final = _final_dir(output_dir)
    _refuse_existing(final, overwrite)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        raise UserError(
            f"cannot create the output folder {final}: {e.strerror or e}; choose a writable folder"
        ) from None
    return final, work


# A checkpoint counts as complete only once this marker exists: the Trainer writes checkpoint-N/ file by file, so
# a kill mid-save leaves a folder that looks like a checkpoint but is not one.
COMPLETE_MARKER = ".complete"


def partial_dir(final: Path) -> Path:
    """Where a training run works until it completes: stable, so that a killed run can be resumed."""
    return final.parent / f".{final.name}.partial"


def checkpoint_step(ckpt: Path) -> int:
    """The global step of a Trainer checkpoint folder (checkpoint-N); -1 for anything else."""
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def complete_checkpoints(work: Path) -> list[Path]:
    found = [p for p in work.glob("checkpoint-*") if checkpoint_step(p) >= 0 and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=checkpoint_step)


def prepare_training_dir(output_dir: str, overwrite: bool, resume: bool) -> tuple[Path, Path, Path | None]:
    """(final dir, work dir, checkpoint to resume from). The work dir is `.<name>.partial` beside the final one;
    it becomes the final dir when training completes."""
    final = _final_dir(output_dir)
    work = partial_dir(final)
    ckpts = complete_checkpoints(work) if work.is_dir() else []
    if resume:
        if not ckpts:
            raise UserError(
                f"--resume: no complete checkpoint in {work}. Checkpoints are written when [train] sets "
                'save_strategy = "steps" and save_steps = N; without one, start the run again without --resume'
            )
        return final, work, ckpts[-1]
    _refuse_existing(final, overwrite)
    if ckpts:
        raise UserError(
            f"{work} holds an interrupted run (newest complete checkpoint: {ckpts[-1].name}); pass --resume to "
            "continue it, or delete that folder to start over"
        )
    try:
        if work.exists():
            shutil.rmtree(work)  # an earlier attempt that never reached a checkpoint: nothing to keep
        work.mkdir(parents=True)
    except OSError as e:
        raise UserError(
            f"cannot create the output folder {work.parent}: {e.strerror or e}; choose a writable output_dir"
        ) from None
    return final, work, None


def publish(work: Path, final: Path) -> None:
    """Swap the finished work dir in; the old output (if any) is removed only after the new one is in place."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_model_kwargs(recipe: Recipe) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": recipe.model.dtype, "trust_remote_code": recipe.model.trust_remote_code}
    if recipe.model.attn_implementation:
        kwargs["attn_implementation"] = recipe.model.attn_implementation
    return kwargs


def build_quantization_config(recipe: Recipe):
    q = recipe.quantization
    if q is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if q.bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
            bnb_4bit_quant_storage=getattr(torch, q.compute_dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def build_peft_config(recipe: Recipe, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    if recipe.lora is None:
        if recipe.quantization is not None:
            raise RecipeError(
                f"{recipe.source}: [quantization] needs a [lora] table: a 4/8-bit base model cannot be fully "
                "fine-tuned (QLoRA trains LoRA adapters on top of it)"
            )
        return None
    from peft import LoraConfig

    lo = recipe.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules,
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(recipe.model.name_or_path, trust_remote_code=recipe.model.trust_remote_code)
    template = recipe.model.chat_template
    if template:
        p = Path(template)
        tok.chat_template = p.read_text(encoding="utf-8") if p.suffix in (".jinja", ".j2") and p.is_file() else template
    if tok.chat_template is None:
        raise RecipeError(
            f"{recipe.model.name_or_path} has no chat template; set model.chat_template to a Jinja template "
            "(inline or a .jinja path)"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def make_train_args(
    config_cls: type,
    recipe: Recipe,
    work_dir: Path,
    defaults: dict[str, Any],
    validating: bool = False,
    check: Callable[[dict[str, Any]], str | None] | None = None,
):
    """Built-in defaults < recipe [train]; device-aware where TRL's defaults assume a GPU.

    With `validating`, GPU-only precision flags are dropped on a machine without a GPU, so that a GPU recipe
    can be checked on a laptop. `check` (a stage's own rule over the merged values) returns a message that
    says which keys to change, or None."""
    import torch

    values = dict(defaults)
    values.update(recipe.train)
    if check is not None:
        problem = check(values)
        if problem:
            raise RecipeError(f"{recipe.source}: {problem}")
    values["output_dir"] = str(work_dir)
    values["seed"] = recipe.seed
    if not torch.cuda.is_available():
        # TRL configs default to bf16=True; on a CPU that means slow emulated autocast, so keep fp32 there
        # unless the recipe asks for it explicitly.
        if "bf16" not in recipe.train or validating:
            values["bf16"] = False
        if validating:
            values.pop("fp16", None)
            values.pop("tf32", None)
        # Without this, Accelerate treats N CPU processes as N separate single-process runs; with it, they
        # form one gloo process group (multi-process training on CPU, as the tests do).
        values.setdefault("use_cpu", True)
    values.setdefault("model_init_kwargs", build_model_kwargs(recipe))
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{recipe.source}: [train] rejected by {config_cls.__name__}: {e}") from None


class MetricsLogger:
    """A TrainerCallback (duck-typed, so this module imports no transformers at import time) that appends
    every Trainer log to metrics.jsonl, and at the end one `"event": "train_end"` row with what a comparison
    of runs needs (so `compare` never re-measures): wall time of the training loop, the optimizer steps it took,
    seconds per step (their ratio: a PPO rollout or a GRPO generation happens on some steps only, so a median
    would hide it), peak memory (this process's RSS; on a GPU also the CUDA peak) and the tokens seen, where the
    trainer counts them (`num_tokens`)."""

    def __init__(self, path: Path, stage: str | None = None):
        self.path = path
        self.stage = stage
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
            "train_seconds": round(seconds, 3),
            "steps": steps,
            "seconds_per_step": round(seconds / steps, 4) if steps > 0 else None,
            # ru_maxrss is in KiB on Linux: the peak resident memory of this process (model, optimizer, batches).
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
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


def checkpoint_marker():
    """A TrainerCallback that marks each checkpoint complete once the Trainer has finished writing it."""
    from transformers import TrainerCallback

    class _Marker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    tmp = ckpt / (COMPLETE_MARKER + ".tmp")
                    tmp.write_text(json.dumps({"global_step": state.global_step}) + "\n", encoding="utf-8")
                    os.replace(tmp, ckpt / COMPLETE_MARKER)

    return _Marker()


def run_stage(
    stage: str,
    recipe: Recipe,
    config_cls: type,
    build_trainer: Callable[[StageContext], Any],
    *,
    overwrite: bool = False,
    train_defaults: dict[str, Any] | None = None,
    check_train: Callable[[dict[str, Any]], str | None] | None = None,
    load_data: Callable[[Recipe], tuple[list, list, list]] | None = None,
    heldout: Callable[[Any, StageContext], dict[str, float]] | None = None,
    resume: bool = False,
) -> Path:
    """Train one stage end to end and publish its output directory. Returns the final output path.

    `load_data(recipe)` returns (train items, eval examples, held-out pairs); the default reads examples.
    `heldout(trainer, ctx)` measures the model on held-out data before and after training (pairwise accuracy,
    log-probability margins); both go to heldout.json and the model card.

    Training happens in `.<output>.partial/`, renamed to the output when complete. If the run dies after writing
    a checkpoint, that folder stays and `resume=True` continues from its newest complete checkpoint."""
    if not recipe.model.name_or_path:
        raise RecipeError(f"{recipe.source}: model.name_or_path is not set")
    import transformers

    transformers.set_seed(recipe.seed)
    train_examples, eval_examples, eval_pairs = (load_data or load_stage_examples)(recipe)
    main = is_main_process()
    if main:
        final, work, resume_from = prepare_training_dir(recipe.output_dir, overwrite, resume)
    else:  # the main process prepares the folder; the others only need its name
        final = Path(recipe.output_dir)
        work = partial_dir(final)
        ckpts = complete_checkpoints(work) if resume and work.is_dir() else []
        resume_from = ckpts[-1] if ckpts else None
    try:
        args = make_train_args(config_cls, recipe, work, train_defaults or {}, check=check_train)
        metrics = MetricsLogger(work / "metrics.jsonl", stage)
        ctx = StageContext(
            recipe=recipe,
            args=args,
            tokenizer=load_tokenizer(recipe),
            model=recipe.model.name_or_path,
            peft_config=build_peft_config(recipe),
            quantization_config=build_quantization_config(recipe),
            train_examples=train_examples,
            eval_examples=eval_examples,
            callbacks=[metrics.make(), checkpoint_marker()],
            eval_pairs=eval_pairs,
        )
        trainer = build_trainer(ctx)
        trace = BatchTrace.install(trainer)
        measured = {"before": heldout(trainer, ctx)} if heldout else None
        if heldout and ctx.quantization_config is not None:
            restore_4bit_training_layout(trainer.model)
        if resume_from is not None:
            _truncate_metrics(work / "metrics.jsonl", checkpoint_step(resume_from))
            print(f"resuming from {resume_from} (global step {checkpoint_step(resume_from)})", file=sys.stderr)
        started = time.time()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else args.resume_from_checkpoint)
        train_seconds = time.time() - started
        if heldout:
            measured["after"] = heldout(trainer, ctx)
        if trainer.accelerator.is_main_process:
            trainer.save_model(str(work))
            ctx.tokenizer.save_pretrained(str(work))
            trainer.state.save_to_json(str(work / "trainer_state.json"))
            write_resolved(recipe, work / "recipe.resolved.toml", resolved_command())
            from nl2sql_align.plots import plot_training

            plot_training(work / "metrics.jsonl", work / "plots", run_name=final.name)
            if measured:
                (work / "heldout.json").write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
            summary = None
            if eval_examples and recipe.eval.after_training:
                from nl2sql_align.evaluate import evaluate_model
                from nl2sql_align.generation import HFGenerator

                # The trained model is in memory: eval generates with it (HF), whatever eval.backend says.
                policy = HFGenerator(getattr(trainer, "eval_model", trainer.model), ctx.tokenizer)
                summary = evaluate_model(policy, eval_examples, recipe, report_dir=work / "eval", title=f"{stage} eval")
            write_model_card(work, final.name, stage, recipe, len(train_examples), train_seconds, summary, measured)
            publish(work, final)
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
            print(f"training stopped; {work} keeps its checkpoints: continue with --resume", file=sys.stderr)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows a killed run logged after its last checkpoint: the resumed run logs those steps again."""
    if path.is_file():
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def load_stage_examples(recipe: Recipe) -> tuple[list, list, list]:
    from nl2sql_align.data import load_examples

    d = recipe.data
    train = load_examples(d.train, db_dir=d.db_dir, db=d.db, db_field=d.db_field, limit=d.train_limit)
    evals = load_examples(d.eval, db_dir=d.db_dir, db=d.db, db_field=d.db_field, limit=d.eval_limit) if d.eval else []
    return train, evals, []


def write_model_card(
    out: Path,
    name: str,
    stage: str,
    recipe: Recipe,
    n_train: int,
    seconds: float,
    summary: dict | None,
    measured: dict | None = None,
) -> None:
    unit = "examples" if stage in ("sft", "grpo", "ppo") else "preference records"
    lines = [
        f"# {name}: {stage} on {recipe.data.train}",
        "",
        f"Trained by nl2sql-align `{stage}` from `{recipe.model.name_or_path}` on {n_train} {unit} in {seconds:.0f} s.",
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
