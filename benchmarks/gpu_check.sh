#!/usr/bin/env bash
# One short GPU check of kdflow's fast path: a warm-up and a timed epoch of KD per published
# CIFAR pair (10,000 synthetic images, batch 64: ~160 timed steps each), bf16, channels_last,
# on-device crop+flip. Prints samples/s, peak memory and the projected time of a 240-epoch run
# of the paper protocol; then the same with torch.compile. Run from the repository root:
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PYTHON="${PYTHON:-.venv/bin/python}"; else PYTHON="${PYTHON:-python}"; fi
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA device visible to torch; run it on a GPU worker")'
"$PYTHON" -c 'import torch; print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)'
"$PYTHON" benchmarks/gpu_check.py --batch-size 64 "$@"
"$PYTHON" benchmarks/gpu_check.py --batch-size 64 --compile "$@"
