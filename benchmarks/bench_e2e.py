"""End-to-end throughput from image file to ``Detections`` on ONNX Runtime (CPU by default), with the
share of each stage (read + letterbox, inference, post-processing) -> JSON, markdown and PNG.

The S model (random weights, BN-tempered as in bench_onnx_precision.py, 80 classes) is exported at
640 in the raw form; 16 synthetic JPEGs of varied sizes are predicted with ``Detector.predict`` at
batch 1 and 8 (conf 0.25), after one warm-up pass.

    python benchmarks/bench_e2e.py [--imgsz 640] [--batches 1 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_onnx_precision import build, synthetic_bgr  # noqa: E402
from benchmarks.common import cpu_name  # noqa: E402


def main() -> None:
    import cv2
    import onnxruntime as ort

    from export.onnx_export import export_onnx
    from sdk import Detector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e_onnxruntime_cpu.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab, emb = build(args.imgsz)
        onnx_path = Path(tmp) / "s.onnx"
        export_onnx(model, vocab, emb, onnx_path, imgsz=args.imgsz, log=lambda *_: None)
        files = []
        for i, img in enumerate(synthetic_bgr(args.images, 7, args.imgsz)):
            files.append(str(Path(tmp) / f"{i}.jpg"))
            cv2.imwrite(files[-1], img)
        det = Detector(onnx_path, device=args.device)
        for bs in args.batches:
            det.predict(files[:bs], batch_size=bs)  # warm-up
            walls, stages = [], {"preprocess": [], "inference": [], "postprocess": []}
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                results = det.predict(files, batch_size=bs)
                walls.append(time.perf_counter() - t0)
                for k in stages:
                    stages[k].append(statistics.mean(r.data["speed_ms"][k] for r in results))
            med = statistics.median(walls)
            stage_ms = {k: statistics.median(v) for k, v in stages.items()}
            total = sum(stage_ms.values())
            row = {"batch": bs, "images": len(files), "wall_s": {"min": min(walls), "median": med, "max": max(walls)},
                   "images_per_s": len(files) / med, "stage_ms_per_image": stage_ms,
                   "stage_share": {k: v / total for k, v in stage_ms.items()}}
            print(json.dumps(row))
            rows.append(row)
    report = {"what": "image file -> Detections, Detector.predict on ONNX Runtime, exported S (raw form), "
                      "80 classes, conf 0.25", "device": args.device, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
              "onnxruntime": ort.__version__, "providers": det.backend.session.get_providers(),
              "python": platform.python_version(), "imgsz": args.imgsz, "date": time.strftime("%Y-%m-%d %H:%M"),
              "results": rows}
    args.out.write_text(json.dumps(report, indent=1))
    lines = ["| batch | img/s | read+letterbox ms (share) | inference ms (share) | post ms (share) |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        s, sh = r["stage_ms_per_image"], r["stage_share"]
        lines.append(f"| {r['batch']} | {r['images_per_s']:.2f} | " + " | ".join(
            f"{s[k]:.1f} ({sh[k]:.0%})" for k in ("preprocess", "inference", "postprocess")) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    left = [0.0] * len(rows)
    for k, c in (("preprocess", "#55a868"), ("inference", "#4c72b0"), ("postprocess", "#c44e52")):
        vals = [r["stage_ms_per_image"][k] for r in rows]
        ax.barh([f"batch {r['batch']}" for r in rows], vals, left=left, color=c, label=k)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlabel("ms per image")
    ax.set_title(f"end to end, ONNX Runtime {args.device}, S at {args.imgsz}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
