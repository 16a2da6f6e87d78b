"""OpenVINO model-only time per int8 form against bf16 (and fp32), rect and square -> JSON + PNG.

The random YOLO-World v2 S at 640 with 80 classes, exported as in ``e2e_vs_ultralytics.py`` (fp32; the default
int8; the same with a Q/DQ pair on every Conv output too, the default until the conv outputs stayed float; the
int8 before issue 23), each compiled by OpenVINO for one static input, 384x640 (a 16:9 photo, rect) and 640x640
(square), batch 1, latency hint, 2 threads. Each compiled model is a worker process, timed in alternating blocks
(each one block per round), so a busy machine slows all alike; timing starts once the 1-minute load average is
below 1 (recorded). What is timed is ``infer`` alone: no letterbox, no post-processing.

    python benchmarks/openvino_int8_speed.py [--blocks 8] [--per-block 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, save_barh  # noqa: E402
from benchmarks.e2e_vs_ultralytics import THREADS, export_ours, run_workers  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

SHAPES = {"rect": (384, 640), "square": (640, 640)}
# row -> (artifact, OpenVINO inference precision hint): int8 artifacts run their Q/DQ layers in int8 either way
ROWS = {"bf16": ("fp32", "bf16"), "fp32": ("fp32", "f32"), "int8": ("int8", "f32"),
        "int8, conv outputs quantized": ("int8 conv outputs", "f32"), "int8 before issue 23": ("int8 before", "f32")}

COLORS = {"bf16": "#8c8c8c", "fp32": "#c8c8c8", "int8": "#4c72b0"}  # other int8 forms: light blue


def worker(path: str, hint: str, height: str, width: str) -> None:
    """``--worker``: compile ``path`` for one static input and time ``infer`` per block size read from stdin
    (JSON lines out, as ``e2e_vs_ultralytics.worker_ours``)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    name = model.inputs[0].get_any_name()
    shape = [1, 3, int(height), int(width)]
    model.reshape({name: shape})
    config = {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    feed = {name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t = time.perf_counter()
            request.infer(feed)
            times.append((time.perf_counter() - t) * 1e3)
        print("@@" + json.dumps({"ms": times}), flush=True)


def start_workers(paths: dict[str, Path]) -> dict[str, subprocess.Popen]:
    """One process per row and letterbox: idle compiled models in one process slowed the timed one."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    workers = {}
    for row, (artifact, hint) in ROWS.items():
        for letterbox, (h, w) in SHAPES.items():
            cmd = [sys.executable, __file__, "--worker", str(paths[artifact]), hint, str(h), str(w)]
            workers[f"{row}, {letterbox}"] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                              text=True, env=env)
    return workers


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--per-block", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "openvino_int8_speed.json")
    args = p.parse_args()
    import openvino

    with tempfile.TemporaryDirectory() as tmp:
        results, load = run_workers(start_workers(export_ours(Path(tmp))), args.warmup, args.blocks, args.per_block)
    speedup = {f"{row} vs bf16, {lb}": results[f"bf16, {lb}"]["median_ms"] / results[f"{row}, {lb}"]["median_ms"]
               for row in ROWS if row != "bf16" for lb in SHAPES}
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "cpu": cpu_name(), "threads": THREADS,
              "python": platform.python_version(), "openvino": openvino.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_1min": load,
              "settings": {"blocks": args.blocks, "per_block": args.per_block, "warmup": args.warmup},
              "results": results, "speedup_vs_bf16": speedup}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    rows = sorted(results.items(), key=lambda kv: kv[1]["median_ms"])
    save_barh(args.out.with_suffix(".png"), [k for k, _ in rows], [r["median_ms"] for _, r in rows],
              [COLORS.get(k.rsplit(", ", 1)[0], "#a6bddb") for k, _ in rows],
              "ms per image, OpenVINO infer only; median, whiskers min-max",
              f"YOLO-World v2 S, 80 classes, batch 1, {THREADS} threads: {report['cpu']}",
              xerr=[[r["median_ms"] - r["min_ms"] for _, r in rows], [r["max_ms"] - r["median_ms"] for _, r in rows]])
    print(json.dumps({k: round(r["median_ms"], 1) for k, r in results.items()}, indent=1))
    print(json.dumps({k: round(v, 2) for k, v in speedup.items()}, indent=1))


if __name__ == "__main__":
    main()
