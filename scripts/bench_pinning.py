"""The cost of pinning the math kernels' code path (environment.PINNED_KERNELS): one demo-sized training step.

    for v in default pinned; do OMP_NUM_THREADS=1 python scripts/bench_pinning.py $v; done
    OMP_NUM_THREADS=1 MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/bench_pinning.py pinned

The variables must be set in the environment of the process (torch reads them when it loads); the argument is
only the label printed. Needs out/tiny-model (`make demo` or scripts/make_tiny_model.py).
"""

import sys
import time

import torch
from transformers import AutoModelForCausalLM

torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained("out/tiny-model")
x = torch.randint(0, 2000, (8, 200))
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)


def step():
    out = m(input_ids=x, labels=x)
    out.loss.backward()
    opt.step()
    opt.zero_grad()


step()
t = time.perf_counter()
for _ in range(5):
    step()
print(sys.argv[1], round((time.perf_counter() - t) / 5, 3), "s/step")
