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

    python tests/rerun_numeric.py [--isa avx2|avx512|default] [--threads N] [--all] [pytest args]

``--all`` runs the whole suite instead of ``-m numeric``; the README's CPU matrix is the six runs of
``--all`` with ``--isa default|avx512|avx2`` and ``--threads 1|2``.
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


def environment(isa: str = "avx2", threads: int = 1) -> dict[str, str]:
    n = str(threads)
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "YOLOWORLD_TEST_ORT_THREADS": n}
    if isa == "avx2":
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2")
        targets = numpy_targets_above_avx2()
        if targets:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(targets)
    elif isa == "avx512":
        env["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE"  # AVX-512 without AMX / AVX512-BF16 (e.g. Skylake)
    return env


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isa", choices=("avx2", "avx512", "default"), default="avx2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--all", action="store_true", help="the whole suite, not only -m numeric")
    args, rest = p.parse_known_args(argv)
    env = environment(args.isa, args.threads)
    shown = {k: env[k] for k in sorted(env) if k not in os.environ or os.environ[k] != env[k]}
    what = "the whole suite" if args.all else "numeric tests again"
    print(f"{what} under " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", "-q", *([] if args.all else ["-m", "numeric"]), *rest],
                           env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
