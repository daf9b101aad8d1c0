#!/usr/bin/env bash
# GPU check of ditkit's diff generation and DIT step on random models shaped like Qwen3-0.6B and
# Qwen3-4B (no network, no downloaded weights). Needs one CUDA GPU; well under 8 minutes on an
# H100/H200. Writes gpu_check.json and gpu_check.log under ${OUT:-/tmp/gpu_check}.
#
#   bash benchmarks/gpu_check.sh                    # both models
#   bash benchmarks/gpu_check.sh --models qwen3-4b  # extra arguments go to gpu_check.py
#   .venv/bin/python benchmarks/gpu_check.py --tiny --device cpu   # CPU smoke test, seconds
set -euo pipefail

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${OUT:-/tmp/gpu_check}"
limit_s="${GPU_CHECK_TIMEOUT:-460}"  # the script itself needs about 2-3 minutes on an H100

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check.sh needs an NVIDIA GPU (nvidia-smi not found)." >&2
    echo "On a CPU, run the smoke test instead:" >&2
    echo "  .venv/bin/python benchmarks/gpu_check.py --tiny --device cpu" >&2
    exit 2
fi
echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "$python: torch sees no CUDA device (a CPU-only torch build?); set PYTHON to one with CUDA" >&2
    exit 2
fi

mkdir -p "$out_dir"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
echo "writing $out_dir/gpu_check.json and $out_dir/gpu_check.log (time limit ${limit_s} s)"
timeout --signal=TERM --kill-after=20 "$limit_s" \
    "$python" "$repo/benchmarks/gpu_check.py" --device cuda --out "$out_dir/gpu_check.json" "$@" \
    2>&1 | tee "$out_dir/gpu_check.log"
