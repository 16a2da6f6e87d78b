"""Per-image latency of ``Detector.predict`` on the PyTorch backend (CPU) at each batch size -> JSON.

Issue 21: on the demo model (tiny, 256 px, 2 cores) batch 8 took 312 ms per image against 109 ms at
batch 1. This times what a user calls, ``Detector(checkpoint, backend="torch").predict(images,
batch_size=b)`` on in-memory images, and each stage's share (``speed_ms`` of the results), so the same
script measures before and after a change (``--label``: rows of several runs go into one file).

    python benchmarks/torch_cpu_batch.py runs/demo_finetune/best.pt --batches 1 8 --label after
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, repo_path, synthetic_bgr  # noqa: E402
from sdk import Detector  # noqa: E402
from sdk.images import expand_sources, load  # noqa: E402

STAGES = ("preprocess", "inference", "postprocess")
SYNTHETIC = "synthetic (bench.cli.synthetic_bgr, seed 7)"


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(detector: Detector, images: list, batch: int, warmup: int, repeats: int) -> dict:
    """ms per image of ``predict(images, batch_size=batch)`` over ``repeats`` passes after ``warmup``,
    and each stage's ms per image (the results' ``speed_ms``, averaged over a pass)."""
    for _ in range(warmup):
        detector.predict(images, batch_size=batch)
    wall, stages = [], {s: [] for s in STAGES}
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = detector.predict(images, batch_size=batch)
        wall.append((time.perf_counter() - t0) * 1e3 / len(images))
        for s in STAGES:
            stages[s].append(statistics.mean(r.data["speed_ms"][s] for r in results))
    return {"batch": batch, "ms_per_image": stats(wall), "stage_ms_per_image": {s: stats(v) for s, v in stages.items()},
            "boxes": sum(len(r) for r in results)}


def environment(threads: int | None) -> dict:
    import torch

    return {"device": "cpu", "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "threads_option": threads,
            "mkldnn": torch.backends.mkldnn.is_available(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("weights", help="a checkpoint (.pt/.pth)")
    p.add_argument("--images", help="an image folder (default: 16 synthetic images)")
    p.add_argument("--count", type=int, default=16, help="images per pass")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes, one row each")
    p.add_argument("--imgsz", type=int, default=None, help="default: the size the checkpoint was trained at")
    p.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes per batch size")
    p.add_argument("--repeats", type=int, default=7, help="timed passes per batch size")
    p.add_argument("--label", default="run", help="names this run's rows (e.g. before / after)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "torch_cpu_batch.json")
    args = p.parse_args()
    from sdk.backends.base import RuntimeOptions

    detector = Detector(args.weights, backend="torch", imgsz=args.imgsz,
                        runtime=RuntimeOptions(intra_op_threads=args.threads))
    if args.images:
        images = [load(s, i)[0] for i, s in enumerate(expand_sources([args.images])[:args.count])]
    else:
        images = synthetic_bgr(args.count, 7, detector.imgsz)
    # on a shared CPU the timings depend on what else runs there (see sdk.backends.torch)
    rows, load_before = [], os.getloadavg()
    for b in args.batches:
        row = measure(detector, images, b, args.warmup, args.repeats)
        ms, stage = row["ms_per_image"], row["stage_ms_per_image"]
        print(f"{args.label} batch {b}: {ms['median']:.1f} ms/img (min {ms['min']:.1f})"
              + "".join(f", {s} {stage[s]['median']:.1f}" for s in STAGES), flush=True)
        rows.append(row)
    load_avg = {"before": load_before[0], "after": os.getloadavg()[0]}
    run = {"label": args.label, "environment": {**environment(args.threads), "load_average_1m": load_avg},
           "settings": {"weights": repo_path(args.weights), "imgsz": detector.imgsz, "images": len(images),
                        "image_source": repo_path(args.images) if args.images else SYNTHETIC,
                        "warmup": args.warmup, "repeats": args.repeats, "ran_with": detector.describe()},
           "results": rows}
    report = json.loads(args.out.read_text()) if args.out.exists() else {"what": __doc__.split("\n\n")[0], "runs": []}
    report["runs"] = [r for r in report["runs"] if r["label"] != args.label] + [run]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
