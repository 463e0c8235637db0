"""What a run's numbers depend on besides its recipe: the CPU, the thread count, the instruction set the math
kernels dispatch to, the library versions. Recorded in every run's train_end row (metrics.jsonl) and in the
header of its recipe.resolved.toml, so that two runs that differ can be told apart by more than their seed.

The same seed and recipe give bit-identical weights only with the same thread count and the same kernels: MKL,
oneDNN and torch's own vectorised kernels choose their code path (AVX2, AVX-512, ...) by CPU, and a sum computed
in another order rounds differently. The variables in PINNED_KERNELS fix that choice (BENCHMARKS.md,
"Reproducibility" has the measurements)."""

from __future__ import annotations

import os
import platform
import re
from functools import cache
from typing import Any

# Environment variables that fix the math kernels' code path across x86 CPUs with AVX2 (MKL's conditional
# numerical reproducibility, torch's CPU dispatch, oneDNN's ISA cap). Set before torch loads: they are read once.
# MKL_CBWR=AVX2 rather than COMPATIBLE: COMPATIBLE made a demo training step 2.3x slower here, AVX2 costs nothing
# measurable (BENCHMARKS.md, "Reproducibility").
PINNED_KERNELS = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
_RECORDED_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *PINNED_KERNELS)


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_environment(seed: int | None = None) -> dict[str, Any]:
    """The facts above, as a flat JSON-ready dict (torch is imported here: call it from a training process)."""
    import torch

    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    capability = re.search(r"CPU capability usage: (\S+)", config)
    env = {
        "seed": seed,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": capability.group(1) if capability else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch": torch.__version__,
        "blas": blas.group(1) if blas else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    env.update({k: os.environ[k] for k in _RECORDED_VARS if k in os.environ})
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
