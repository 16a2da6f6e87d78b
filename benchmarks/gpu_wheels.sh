#!/usr/bin/env bash
# Run HERE (with internet to PyPI) before a device call: downloads into .whl/ (git-ignored, about 3 MB)
# the wheels the lent GPU machines lack for gpu_check.sh's fine-tuning section: open_clip_torch (its
# tokenizer and text tower; ftfy, wcwidth) and pycocotools (validation mAP). Their Python is 3.12.
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"]); gpu_check.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
rm -rf .whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl open_clip_torch ftfy wcwidth pycocotools
ls -l .whl
