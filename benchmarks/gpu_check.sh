#!/usr/bin/env bash
# The prepared GPU check: run on a machine with one CUDA GPU (e.g. the lent H100/H200) from the repo
# root. Needs torch (no open_clip). Writes benchmarks/results/gpu_check.json (and $OUT/ when set).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
out=benchmarks/results/gpu_check.json
PYTHONUNBUFFERED=1 timeout 280 python3 benchmarks/gpu_check.py --out "$out"
if [ -n "${OUT:-}" ]; then cp "$out" "$OUT/"; fi
