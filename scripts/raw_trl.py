"""The raw-TRL side of scripts/bench_overhead.py: train one stage with TRL alone, from a spec file.

    python scripts/raw_trl.py SPEC.json OUT_DIR

SPEC.json (written by bench_overhead.py) holds the stage (sft, grpo, dpo), the model folder, the exact keyword
arguments our CLI passes to the TRL config class, and the dataset rows our row builders produced for the same
recipe; so this script needs TRL, datasets and transformers only. The one exception is GRPO's reward: the same
callables the CLI hands TRL (our reward engine's functions), imported from nl2sql_align.rewards, so that both
sides do the same work per step.

It writes OUT_DIR/metrics.jsonl the way the CLI's MetricsLogger does, measured the same way: every Trainer log
row, then one `"event": "train_end"` row with the training loop's wall time (on_train_begin to on_train_end),
optimizer steps, seconds per step and this process's peak RSS (ru_maxrss) at the end of training.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)

    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    stage = spec["stage"]
    config_cls, trainer_cls = {
        "sft": (trl.SFTConfig, trl.SFTTrainer),
        "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
        "dpo": (trl.DPOConfig, trl.DPOTrainer),
    }[stage]

    class Meter(TrainerCallback):
        t0 = None

        def write(self, row):
            with metrics.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            row = {"step": state.global_step}
            row.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float, str))})
            self.write(row)

        def on_train_end(self, args, state, control, **kwargs):
            seconds = time.time() - self.t0
            steps = state.global_step
            self.write(
                {
                    "step": steps,
                    "event": "train_end",
                    "train_seconds": round(seconds, 3),
                    "steps": steps,
                    "seconds_per_step": round(seconds / steps, 4) if steps else None,
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                }
            )

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = config_cls(**{**spec["config"], "output_dir": str(out)})
    kwargs = dict(
        model=spec["model"],
        args=args,
        train_dataset=Dataset.from_list(spec["rows"]),
        processing_class=tokenizer,
        callbacks=[Meter()],
    )
    engine = None
    if stage == "grpo":
        from nl2sql_align.recipe import RewardSection
        from nl2sql_align.rewards import engine_for, reward_functions_for

        section = RewardSection(**spec["reward"]) if spec.get("reward") is not None else None
        engine = engine_for(section)
        kwargs["reward_funcs"], args.reward_weights = reward_functions_for(section, engine)
    try:
        trainer = trainer_cls(**kwargs)
        trainer.train()
        trainer.save_model(str(out))
    finally:
        if engine is not None:
            engine.close()


if __name__ == "__main__":
    main()
