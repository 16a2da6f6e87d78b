#!/usr/bin/env bash
# The prepared GPU check: run on a machine with one CUDA GPU (e.g. the lent H100/H200) from the repo
# root. Needs torch (no open_clip). Writes benchmarks/results/gpu_check.json and gpu_predict_torch.*
# (and copies them to $OUT/ when set), even when a section fails or the time runs out.
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
out=benchmarks/results/gpu_check.json
PYTHONUNBUFFERED=1 timeout 280 python3 benchmarks/gpu_check.py --out "$out"
rc=$?
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_check.json benchmarks/results/gpu_predict_torch.* "$OUT/" 2>/dev/null; fi
exit $rc
