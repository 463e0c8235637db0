"""Which settings make the demo's SFT bit-identical from run to run, and what they cost.

    python scripts/determinism.py [--steps 100] [--repeats 2] [--variants default,threads1,...]

Each variant trains the demo SFT (recipes/tiny-sft.toml on out/tiny-model) for --steps optimizer steps in its own
process, with the environment the variant names, and prints the SHA-256 of the saved weights and the seconds per
step from the run's train_end row. Two runs of one variant with the same hash are bit-identical; variants with
different hashes show which setting changes the arithmetic (thread count, the CPU instruction set the kernels
dispatch to, deterministic algorithms). Needs the tiny model: `make demo` or `python scripts/make_tiny_model.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from nl2sql_align.environment import PINNED_KERNELS

REPO = Path(__file__).resolve().parents[1]

# What each variant sets on top of the inherited environment ("--set" items go to the recipe).
PINNED_ISA = PINNED_KERNELS  # what `nl2sql-align demo` sets
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "default": ({"OMP_NUM_THREADS": "2"}, []),
    "threads1": ({"OMP_NUM_THREADS": "1"}, []),
    "full_determinism": ({"OMP_NUM_THREADS": "2"}, ["train.full_determinism=true"]),
    "isa_avx2": ({"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2"}, []),
    "isa_default": ({"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default"}, []),
    "pinned": ({"OMP_NUM_THREADS": "2", **PINNED_ISA}, []),
    "pinned_threads1": ({"OMP_NUM_THREADS": "1", **PINNED_ISA}, []),
}


def weights_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def train(name: str, run: int, steps: int, model: str, out: Path) -> dict:
    env_extra, sets = VARIANTS[name]
    folder = out / f"{name}-{run}"
    cmd = [sys.executable, "-m", "nl2sql_align", "sft", "--recipe", "recipes/tiny-sft.toml", "--overwrite"]
    for s in [f"model.name_or_path={model}", f"output_dir={folder}", f"train.max_steps={steps}",
              "eval.after_training=false", *sets]:  # fmt: skip
        cmd += ["--set", s]
    env = dict(os.environ, HF_HUB_OFFLINE="1", **env_extra)
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if '"train_end"' in x][-1]
    return {"variant": name, "run": run, "hash": weights_hash(folder), "s_per_step": end["seconds_per_step"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--model", default="out/tiny-model")
    p.add_argument("--out", type=Path, default=Path("out/determinism"))
    a = p.parse_args()
    names = a.variants.split(",")
    rows = []
    for run in range(a.repeats):  # alternate the variants so that machine load drifts evenly over them
        for name in names:
            rows.append(train(name, run, a.steps, a.model, a.out))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["hash"]
    print(f"\n{'variant':<18} {'hashes':<40} {'same in repeats':<16} {'= default':<10} s/step")
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        hashes = sorted({r["hash"] for r in mine})
        sps = sorted(r["s_per_step"] for r in mine)
        same = "yes" if len(hashes) == 1 else "NO"
        print(f"{name:<18} {' '.join(hashes):<40} {same:<16} {str(hashes == [base]):<10} {sps[len(sps) // 2]}")


if __name__ == "__main__":
    main()
