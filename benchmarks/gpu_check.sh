#!/usr/bin/env bash
# The prepared GPU check: run on a machine with one CUDA GPU (e.g. the lent H100/H200) from the repo
# root. Needs torch; its fine-tuning section also needs open_clip and pycocotools, installed here from
# .whl/ when carried (benchmarks/gpu_wheels.sh). Writes benchmarks/results/gpu_check.json,
# gpu_predict_torch.* and gpu_finetune_curves.png (copied to $OUT/ when set), even when a section fails
# or the time runs out. PYTHON, GPU_CHECK_OUT and GPU_CHECK_ARGS (e.g. --smoke) are for the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
out=${GPU_CHECK_OUT:-benchmarks/results/gpu_check.json}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
if [ -d .whl ]; then  # wheels carried from benchmarks/gpu_wheels.sh (open_clip, pycocotools)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of words
PYTHONUNBUFFERED=1 timeout 285 "$py" benchmarks/gpu_check.py --out "$out" ${GPU_CHECK_ARGS:-}
rc=$?
if [ -n "${OUT:-}" ]; then
  dir=$(dirname "$out")
  cp "$out" "$dir"/gpu_predict_torch.* "$dir"/gpu_finetune_curves.png "$OUT/" 2>/dev/null
fi
exit $rc
