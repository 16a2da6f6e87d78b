"""Run the numerically sensitive tests (``-m numeric``) again under another CPU's float kernels.

The whole suite runs first with this machine's kernels; this second pass caps every library at AVX2
and one thread, as on an AVX2-only laptop, so a test that holds only for the development machine's
kernels (AVX-512, AMX, two threads) fails here too:

- PyTorch: ``ATEN_CPU_CAPABILITY=avx2``, oneDNN ``ONEDNN_MAX_CPU_ISA=AVX2``, MKL
  ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``OMP_NUM_THREADS=1``;
- numpy (the SDK's post-processing): its dispatch targets above AVX2 disabled
  (``NPY_DISABLE_CPU_FEATURES``, only those this numpy build has and this CPU supports);
- ONNX Runtime picks its kernels from the CPU with no switch: its comparisons hold by design (relative
  bounds, edge-aware detection matching) and run here with one intra-op thread
  (``YOLOWORLD_TEST_ORT_THREADS``, read by ``tests/conftest.py``).

    python tests/rerun_numeric.py [pytest args]
"""

from __future__ import annotations

import os
import subprocess
import sys


def numpy_targets_above_avx2() -> list[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    above = [t for t in __cpu_dispatch__ if t.startswith(("AVX512", "X86_V4"))]
    return [t for t in above if __cpu_features__.get(t)]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2",
           "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "YOLOWORLD_TEST_ORT_THREADS": "1"}
    targets = numpy_targets_above_avx2()
    if targets:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(targets)
    return env


def main(argv: list[str]) -> int:
    env = environment()
    shown = {k: env[k] for k in sorted(env) if k not in os.environ or os.environ[k] != env[k]}
    print("numeric tests again under " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "numeric", *argv], env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
