"""The GPU check behind scripts/device_check.sh: speed and memory of our stages on Qwen2.5 shapes, random weights.

    python scripts/device_check.py run --out DIR [--sizes 0.5b,7b] [--deadline 450] [--smoke]
    python scripts/device_check.py dry-run [--packages FILE] [--wheels FILE] [--whl-dir DIR]

`run` (on the device, through device_check.sh): writes random-init Qwen2.5-0.5B and Qwen2.5-7B shaped models
(the configs below; the tokenizer is our tiny BPE one, trained here on the check's own questions, since nothing
can be downloaded), a SQLite database with questions and gold SQL (the demo's databases are DuckDB, and duckdb is
not carried), then runs each stage through our own code (`nl2sql_align.stages.<stage>.run`, what the CLI runs),
each in its own process: bf16 LoRA SFT and GRPO (execution rewards on SQLite) on both shapes, a 2-step PPO and a
2-step DPO on the 0.5B shape. Per stage: seconds per step, tokens/s where the trainer counts tokens, and
torch.cuda.max_memory_allocated; all of it in DIR/device_check.json. Stages that would start past --deadline
seconds are skipped (and said so). --smoke runs the same plan on the CPU with a micro shape (a test of the
script, not of speed).

`dry-run` (here, on the CPU): imports every module the check needs, maps them to the distributions that provide
them, and checks that each is in the union of a package list (default: scripts/device_packages.txt, the device
image's list from the device README's KINDS.md) and the wheels carried (scripts/device_wheels.txt, which `make
device-wheels` downloads into .whl, and any .whl/*.whl). Exits 1 naming each missing module and distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# Qwen2.5-0.5B and Qwen2.5-7B (their config.json); micro: for --smoke on a CPU.
SHAPES = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    "micro": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=4096,
        tie_word_embeddings=True,
    ),
}
COMMON_SHAPE = dict(max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6)

# (shape, stage, steps, overrides[, name]). The 7B runs use gradient checkpointing; GRPO's group is 8 (0.5B) / 4.
# QLoRA last (bitsandbytes is carried: 43 MB of the 64 MiB): the first run the deadline drops.
PLAN = [
    ("0.5b", "sft", 6, ["train.per_device_train_batch_size=8"]),
    (
        "0.5b",
        "grpo",
        3,
        ["train.per_device_train_batch_size=16", "train.num_generations=8", "train.max_completion_length=128"],
    ),
    ("0.5b", "ppo", 2, ["train.per_device_train_batch_size=16", "train.max_completion_length=128"]),
    ("0.5b", "dpo", 2, ["train.per_device_train_batch_size=8"]),
    ("7b", "sft", 4, ["train.per_device_train_batch_size=4", "train.gradient_checkpointing=true"]),
    (
        "7b",
        "grpo",
        2,
        [
            "train.per_device_train_batch_size=8",
            "train.num_generations=4",
            "train.max_completion_length=64",
            "train.gradient_checkpointing=true",
        ],
    ),
    (
        "7b",
        "sft",
        4,
        ["train.per_device_train_batch_size=4", "train.gradient_checkpointing=true", "quantization.bits=4"],
        "qlora-sft",
    ),
]

# Questions on one SQLite database (the demo's shop, rebuilt in SQLite).
SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                     product_id INTEGER REFERENCES products(id), quantity INTEGER, order_date TEXT);
"""
QUESTIONS = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers"),
    ("How many products are there?", "SELECT COUNT(*) FROM products"),
    ("How many orders are there?", "SELECT COUNT(*) FROM orders"),
    ("List all customer names.", "SELECT name FROM customers"),
    ("List all product names.", "SELECT name FROM products"),
    ("List all customer cities.", "SELECT city FROM customers"),
    ("List all product categories.", "SELECT DISTINCT category FROM products"),
    ("List all order dates.", "SELECT order_date FROM orders"),
    ("What is the most expensive product?", "SELECT name FROM products ORDER BY price DESC LIMIT 1"),
    ("What is the average product price?", "SELECT AVG(price) FROM products"),
    ("How many customers live in Paris?", "SELECT COUNT(*) FROM customers WHERE city = 'Paris'"),
    (
        "Which customers placed an order?",
        "SELECT DISTINCT c.name FROM customers c JOIN orders o ON o.customer_id = c.id",
    ),
    ("How many units were ordered in total?", "SELECT SUM(quantity) FROM orders"),
    ("How many products are in each category?", "SELECT category, COUNT(*) FROM products GROUP BY category"),
    ("Which products cost more than 20?", "SELECT name FROM products WHERE price > 20"),
    ("How many orders did each customer place?", "SELECT customer_id, COUNT(*) FROM orders GROUP BY customer_id"),
]


def write_data(root: Path) -> dict[str, Path]:
    """The SQLite database, the questions (our JSONL layout) and preference pairs (gold chosen, another rejected)."""
    import random
    import sqlite3

    root.mkdir(parents=True, exist_ok=True)
    db = root / "shop.sqlite"
    db.unlink(missing_ok=True)
    rng = random.Random(0)
    con = sqlite3.connect(db)
    con.executescript(SCHEMA)
    cities = ["Paris", "Berlin", "Rome", "Madrid"]
    con.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, f"customer {i}", cities[i % 4]) for i in range(40)])
    cats = ["tools", "toys", "books"]
    con.executemany(
        "INSERT INTO products VALUES (?, ?, ?, ?)", [(i, f"product {i}", cats[i % 3], 5.0 + 1.5 * i) for i in range(30)]
    )
    con.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
        [
            (i, rng.randrange(40), rng.randrange(30), rng.randint(1, 5), f"2024-0{1 + i % 9}-1{i % 9}")
            for i in range(200)
        ],
    )
    con.commit()
    con.close()
    train = root / "train.jsonl"
    pairs = root / "pairs.jsonl"
    with train.open("w") as f, pairs.open("w") as g:
        for i, (q, sql) in enumerate(QUESTIONS):
            f.write(json.dumps({"id": f"q{i}", "question": q, "sql": sql, "db": str(db)}) + "\n")
            other = QUESTIONS[(i + 1) % len(QUESTIONS)][1]
            g.write(
                json.dumps({"id": f"q{i}", "question": q, "sql": sql, "db": str(db), "chosen": sql, "rejected": other})
            )
            g.write("\n")
    return {"db": db, "train": train, "pairs": pairs}


def write_model(shape: str, out: Path, smoke: bool) -> Path:
    """A random-init Qwen2 model of `shape` (bf16 on the GPU; fp32 for --smoke) and our tiny BPE tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from nl2sql_align import tiny_model
    from nl2sql_align.data.prompts import format_answer

    if (out / "config.json").is_file():
        return out
    # Our tiny model's tokenizer, trained on this check's questions (its usual corpus is the demo, in DuckDB).
    texts = [t for q, s in QUESTIONS for t in (q, format_answer(s))]
    texts += [SCHEMA, "Write one SQLite SQL query that answers the question, in a ```sql block."]
    tiny_model.training_corpus = lambda: texts
    tokenizer = tiny_model.build_tokenizer(vocab_size=1024)
    config = Qwen2Config(
        **SHAPES[shape],
        **COMMON_SHAPE,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = torch.float32 if smoke else torch.bfloat16
    device = "cpu" if smoke else "cuda"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    # Sampling runs to max_completion_length: ids past the tokenizer's vocabulary decode to nothing, and EOS is
    # rarely drawn from ~150k random logits; every step costs the most it can, which is what a check wants.
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def stage_overrides(stage: str, model: Path, out: Path, data: dict, steps: int, smoke: bool) -> list[str]:
    sets = [
        f"model.name_or_path={model}",
        f"output_dir={out}",
        'data.eval=""',
        f"train.max_steps={steps}",
        "train.logging_steps=1",
        "lora.r=16",
        "lora.alpha=32",
        f"model.dtype={'float32' if smoke else 'bfloat16'}",
        f"train.bf16={'false' if smoke else 'true'}",
        "train.report_to=none",
    ]
    if stage == "dpo":
        sets += [f"data.train={data['pairs']}", "data.holdout=0"]
    else:
        sets += [f"data.train={data['train']}"]
    if stage in ("grpo", "ppo"):
        sets += ["reward.log_completions=0", "reward.timeout=2.0"]
    return sets


def run_one(stage: str, sets: list[str]) -> dict:
    """In its own process (`python device_check.py stage ...`): one stage through our code; its train_end row."""
    import importlib

    import torch

    from nl2sql_align.stages import load_stage_recipe

    recipe, _, _ = load_stage_recipe(stage, REPO / "recipes" / f"tiny-{stage}.toml", sets)
    module = importlib.import_module(f"nl2sql_align.stages.{stage}")
    final = module.run(recipe, overwrite=True)
    rows = [json.loads(line) for line in (Path(final) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    end = next(r for r in rows if r.get("event") == "train_end")
    result = {k: end.get(k) for k in ("steps", "train_seconds", "seconds_per_step", "num_tokens", "tokens_per_second")}
    result["peak_rss_mb"] = end.get("peak_rss_mb")
    if result["tokens_per_second"] is None:  # GRPO/PPO: completion tokens sampled per second, from the logs
        lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
        per_step = {
            "grpo": recipe.train.get("per_device_train_batch_size", 8),
            "ppo": recipe.train.get("per_device_train_batch_size", 16),
        }.get(stage)
        if lengths and per_step and result["train_seconds"]:
            result["completion_tokens_per_second"] = round(
                sum(lengths) * per_step / (len(lengths) or 1) * result["steps"] / result["train_seconds"], 1
            )
    # The top-level modules this run imported (the dry run's CHECK_IMPORTS must cover their distributions).
    result["modules"] = sorted(
        {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names) - {"__main__"}
    )
    if torch.cuda.is_available():
        result["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["device"] = torch.cuda.get_device_name()
    return result


def run_all(out: Path, sizes: list[str], deadline: float, smoke: bool) -> dict:
    t0 = time.time()
    work = Path(os.environ.get("DEVICE_CHECK_WORK", "/tmp/device_check"))
    data = write_data(work / "data")
    report: dict = {"sizes": sizes, "smoke": smoke, "stages": [], "skipped": []}
    try:
        import torch
        import transformers

        report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
        import trl

        report["versions"]["trl"] = trl.__version__
    except ImportError as e:
        report["versions_error"] = str(e)
    out.mkdir(parents=True, exist_ok=True)
    for shape, stage, steps, extra, *label in PLAN:
        if shape not in sizes:
            continue
        name = f"{shape}-{label[0] if label else stage}"
        left = deadline - (time.time() - t0)
        if left < 30:
            report["skipped"].append({"run": name, "why": f"{left:.0f} s left of --deadline {deadline:.0f}"})
            continue
        entry: dict = {"run": name, "shape": shape, "stage": stage}
        try:
            t = time.time()
            model = write_model("micro" if smoke else shape, work / "models" / ("micro" if smoke else shape), smoke)
            entry["model_write_seconds"] = round(time.time() - t, 1)
            sets = stage_overrides(stage, model, work / "runs" / name, data, steps, smoke) + extra
            if smoke:  # a test of the script on a CPU: short samples, no checkpointing
                sets = [s for s in sets if "gradient_checkpointing" not in s and "max_completion_length" not in s]
                sets += ["train.max_completion_length=8"] if stage in ("grpo", "ppo") else []
            t = time.time()
            p = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "stage", stage, "--", *sets],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=max(30, deadline - (time.time() - t0)),
            )
            entry["process_seconds"] = round(time.time() - t, 1)
            (out / f"{name}.log").write_text(p.stdout + p.stderr)
            if p.returncode != 0:
                entry["error"] = (p.stderr or p.stdout)[-2000:]
            else:
                entry.update(json.loads(p.stdout.strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            entry["error"] = "stopped at the deadline"
        except Exception as e:  # a check reports every run it can; one failure must not hide the others
            entry["error"] = f"{type(e).__name__}: {e}"
        report["stages"].append(entry)
        (out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(entry)[:600], flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    (out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# ---------------------------------------------------------------------------------------------------------------
# dry-run: is every module the check imports satisfied by the device's packages and the wheels carried?

# What the check imports: our stage modules and what they reach at run time (TRL's trainers are lazy attributes of
# `trl`; plots, generation, the reward engine and the sandbox are imported inside functions), and the libraries
# the script itself uses.
CHECK_IMPORTS = [
    "torch",
    "transformers",
    "transformers.models.qwen2.modeling_qwen2",
    "tokenizers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "trl",
    "nl2sql_align.cli",
    "nl2sql_align.stages.runner",
    "nl2sql_align.stages.sft",
    "nl2sql_align.stages.grpo",
    "nl2sql_align.stages.ppo",
    "nl2sql_align.stages.dpo",
    "nl2sql_align.stages.rl",
    "nl2sql_align.ppo.trainer",
    "nl2sql_align.rewards",
    "nl2sql_align.rewards.engine",
    "nl2sql_align.sql.sandbox",
    "nl2sql_align.sql.guard",
    "nl2sql_align.plots",
    "nl2sql_align.generation",
    "nl2sql_align.tiny_model",
    "nl2sql_align.environment",
    "matplotlib.pyplot",
]
CHECK_ATTRS = [("trl", n) for n in ("SFTConfig", "SFTTrainer", "GRPOConfig", "GRPOTrainer", "DPOConfig", "DPOTrainer")]
# Imported here only because they are installed here; the check runs without them (transformers, peft and TRL
# import them when present).
# httpx2, httpcore2, truststore: what huggingface_hub 2.x imports here; the device's huggingface_hub 1.33 uses httpx.
OPTIONAL = {
    "kernels",
    "sqlglotc",
    "psycopg",
    "psycopg-binary",
    "hypothesis",
    "pytest",
    "nl2sql-align",
    "httpx2",
    "httpcore2",
    "truststore",
}
NOT_DISTRIBUTIONS = {"cython_runtime", "nl2sql_align"}  # a Cython internal; our own package (it travels in the tree)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> set[str]:
    """Distribution names from a package list (one a line), a wheel list (NAME==VERSION) or a folder of wheels."""
    names = set()
    if path.is_dir():
        for whl in path.glob("*.whl"):
            names.add(normalize(whl.name.split("-")[0]))
        return names
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0]))
    return names


def needed_modules() -> dict[str, str]:
    """{top-level module: distribution} for every non-stdlib module the check's imports load."""
    import importlib
    from importlib import metadata

    for name in CHECK_IMPORTS:
        importlib.import_module(name)
    for module, attr in CHECK_ATTRS:
        getattr(importlib.import_module(module), attr)
    dists = metadata.packages_distributions()
    needed = {}
    for name in sorted({m.split(".")[0] for m in list(sys.modules)}):
        if name in sys.stdlib_module_names or name.startswith("_") or name in NOT_DISTRIBUTIONS or name == "__main__":
            continue
        for dist in dists.get(name, []):
            needed[name] = normalize(dist)
            break
        else:
            needed[name] = "?"  # a module no installed distribution claims
    return needed


def dry_run(packages: Path, wheels: Path, whl_dir: Path) -> int:
    have = read_names(packages)
    carried = read_names(wheels) if wheels.is_file() else set()
    if whl_dir.is_dir():
        carried |= read_names(whl_dir)
    needed = needed_modules()
    missing = {
        m: d for m, d in needed.items() if d not in OPTIONAL and d not in have and d not in carried and m not in have
    }
    dists = sorted(set(needed.values()) - OPTIONAL)
    print(f"the check imports {len(needed)} top-level modules from {len(dists)} distributions")
    print(f"  on the device ({packages}): {', '.join(d for d in dists if d in have)}")
    print(f"  carried as wheels ({wheels}): {', '.join(d for d in dists if d in carried and d not in have)}")
    if missing:
        for m, d in sorted(missing.items()):
            print(f"MISSING: module {m!r} (distribution {d}) is neither in {packages} nor carried", file=sys.stderr)
        return 1
    print("dry run: every module the check needs is there or carried")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--sizes", default="0.5b,7b")
    r.add_argument("--deadline", type=float, default=450.0, help="seconds; later stages are skipped")
    r.add_argument("--smoke", action="store_true", help="the same plan on a CPU with a micro model")
    d = sub.add_parser("dry-run")
    d.add_argument("--packages", type=Path, default=HERE / "device_packages.txt")
    d.add_argument("--wheels", type=Path, default=HERE / "device_wheels.txt")
    d.add_argument("--whl-dir", type=Path, default=REPO / ".whl")
    s = sub.add_parser("stage")
    s.add_argument("stage")
    s.add_argument("sets", nargs="*")
    a = ap.parse_args()
    if a.cmd == "dry-run":
        raise SystemExit(dry_run(a.packages, a.wheels, a.whl_dir))
    if a.cmd == "stage":
        result = run_one(a.stage, a.sets)
        print(json.dumps(result), flush=True)
        return
    report = run_all(a.out, a.sizes.split(","), a.deadline, a.smoke)
    failed = [s["run"] for s in report["stages"] if "error" in s]
    print(
        f"device check: {len(report['stages']) - len(failed)} runs ok, failed: {failed or 'none'}, "
        f"skipped: {[s['run'] for s in report['skipped']] or 'none'}; {a.out / 'device_check.json'}"
    )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
