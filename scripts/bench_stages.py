"""PPO versus GRPO: time per optimizer step and peak memory, same model, prompts and batch, side by side.

    python scripts/bench_stages.py [--model DIR] [--steps 12] [--completions 16] [--length 48] [--modes full,lora]

Each run is the real command (`nl2sql-align grpo|ppo`) in its own process, so peak memory is that run's alone;
the numbers come from the `train_end` row every stage writes to metrics.jsonl (training-loop wall time / steps,
peak RSS, and on a GPU the CUDA peak). What is held equal:

- the model (default: the demo's SFT output if present, else the tiny model), the prompts (demo:train), the
  completions trained on per optimizer step (`--completions`), their length cap (`--length`);
- a KL reference in both: GRPO beta = 0.04 (TRL keeps a reference model), PPO kl_coef = 0.05;
- one optimizer step per batch of samples: GRPO num_iterations = 1, PPO num_ppo_epochs = 1, one minibatch.

What differs is the method: GRPO samples `--group` completions for each of completions/group prompts and
needs no critic; PPO samples one completion for each of `--completions` prompts and also runs the value head
and an extra forward pass for the rollout's log-probs and values. Ratios are PPO / GRPO.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_stage(stage: str, model: Path, out: Path, sets: list[str]) -> dict:
    args = [sys.executable, "-m", "nl2sql_align", stage, "--recipe", f"recipes/tiny-{stage}.toml", "--overwrite"]
    for s in (f"model.name_or_path={model}", f"output_dir={out}", 'data.eval=""', *sets):
        args += ["--set", s]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{p.stderr[-3000:]}")
    from nl2sql_align.plots import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    end = next(r for r in rows if r.get("event") == "train_end")
    lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
    end["completion_length"] = sum(lengths) / len(lengths) if lengths else None
    return end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--completions", type=int, default=16, help="completions per optimizer step (both methods)")
    ap.add_argument("--group", type=int, default=8, help="GRPO completions per prompt")
    ap.add_argument("--length", type=int, default=48, help="max completion tokens")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="on in both (default: off in both)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "stages")
    a = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from nl2sql_align.tiny_model import ensure_tiny_model

    model = a.model or (REPO / "out" / "demo" / "sft")
    if a.model is None and not (model / "config.json").is_file():
        model = ensure_tiny_model(REPO / "out" / "tiny-model")
    common = [
        f"train.max_steps={a.steps}",
        f"train.max_completion_length={a.length}",
        "train.logging_steps=1",
        f"data.train_limit={max(64, a.completions * (a.steps + 1))}",
        "train.learning_rate=1e-5",
        f"train.per_device_train_batch_size={a.completions}",
        "reward.log_completions=0",
        # GRPOConfig turns gradient checkpointing on by default, TrainingArguments (PPO) off: the same for both.
        f"train.gradient_checkpointing={str(a.gradient_checkpointing).lower()}",
    ]
    grpo = [*common, f"train.num_generations={a.group}", "train.beta=0.04", "train.num_iterations=1"]
    ppo = [*common, "train.num_mini_batches=1", "train.num_ppo_epochs=1", "train.kl_coef=0.05"]
    results = {}
    console = Console()
    for mode in a.modes.split(","):
        extra = ["lora.r=16", "lora.alpha=32"] if mode == "lora" else []
        for stage, sets in (("grpo", grpo), ("ppo", ppo)):
            console.print(f"{mode}: {stage} ({a.steps} steps of {a.completions} completions) ...")
            results[f"{mode}/{stage}"] = run_stage(stage, model, a.out / f"{mode}-{stage}", [*sets, *extra])

    table = Table(title=f"PPO vs GRPO on {model.name}: {a.completions} completions/step, <= {a.length} tokens")
    for col in (
        "mode",
        "stage",
        "s/step",
        "peak RSS MB",
        "CUDA peak MB",
        "mean length",
        "PPO/GRPO time",
        "PPO/GRPO mem",
    ):
        table.add_column(col, justify="left" if col in ("mode", "stage") else "right")
    for mode in a.modes.split(","):
        g, p = results[f"{mode}/grpo"], results[f"{mode}/ppo"]
        mem = "cuda_max_allocated_mb" if "cuda_max_allocated_mb" in g else "peak_rss_mb"
        ratio_t = p["seconds_per_step"] / g["seconds_per_step"]
        ratio_m = p[mem] / g[mem]
        results[f"{mode}/ratios"] = {
            "time_per_step": round(ratio_t, 3),
            "memory": round(ratio_m, 3),
            "memory_kind": mem,
        }
        for name, r in (("grpo", g), ("ppo", p)):
            table.add_row(
                mode,
                name,
                f"{r['seconds_per_step']:.3f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r.get('cuda_max_allocated_mb', float('nan')):.0f}",
                f"{r['completion_length'] or 0:.1f}",
                f"{ratio_t:.2f}" if name == "ppo" else "",
                f"{ratio_m:.2f}" if name == "ppo" else "",
            )
    console.print(table)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results: {a.out / 'results.json'}")


if __name__ == "__main__":
    main()
