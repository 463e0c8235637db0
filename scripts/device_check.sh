#!/usr/bin/env bash
# The prepared GPU check (one command, under 8 minutes), for a session that is lent a device machine:
#
#   make device-wheels                      # here, once: the wheels the device image lacks, into .whl (47 MB)
#   device run, carry [".whl"]:  bash scripts/device_check.sh          # results: $OUT/device_check.json
#   bash scripts/device_check.sh --dry-run [--packages FILE]           # here, on the CPU: are the imports there?
#
# On the device: installs .whl/*.whl into /tmp/site (PYTHONPATH), then runs scripts/device_check.py: bf16 LoRA SFT
# and GRPO (SQLite execution rewards) on random-init Qwen2.5-0.5B and -7B shapes, a 2-step PPO and a 2-step DPO
# (0.5B), a 7B QLoRA SFT last (the first run the deadline drops);
# seconds per step, tokens/s, torch.cuda.max_memory_allocated per run. Extra arguments go to device_check.py run
# (--sizes 0.5b, --deadline SECONDS, --smoke for a CPU run of the same plan on a micro model).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--dry-run" ]]; then
    shift
    py="${PYTHON:-}"
    [[ -n "$py" ]] || { [[ -x .venv/bin/python ]] && py=.venv/bin/python || py=python3; }
    exec "$py" scripts/device_check.py dry-run "$@"
fi

py="${PYTHON:-python3}"
if [[ " $* " == *" --smoke "* ]]; then
    :  # a CPU run here: this Python's own packages
elif compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl/*.whl: run 'make device-wheels' here and carry .whl" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-out/device_check}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout 470 "$py" scripts/device_check.py run --out "$out" "$@"
