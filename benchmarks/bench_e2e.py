"""End-to-end throughput of the exported S model on the CPU runtimes: ``yoloworld-bench`` on a
reproducible model, with model-only timings and the share of each stage (read + letterbox, inference,
post-processing) -> JSON, markdown and PNG.

The S model (random weights, BN-tempered as in bench_onnx_precision.py, 80 classes) is exported at
640 in the raw form with the defaults (dynamic height and width), in fp32 and int8 (symmetric Q/DQ,
32 generated calibration images); 16 synthetic JPEGs of varied sizes are predicted with
``Detector.predict`` at batch 1 and 8 (conf 0.25), after one warm-up pass, on ONNX Runtime and on
OpenVINO (fp32 and bf16 compute for the fp32 artifact), each with the rect and the square letterbox.

    python benchmarks/bench_e2e.py [--imgsz 640] [--batches 1 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cli import markdown, run, write_report  # noqa: E402
from benchmarks.bench_onnx_precision import build  # noqa: E402


def main() -> None:
    import cv2

    from benchmarks.common import synthetic_bgr
    from export.pipeline import ExportOptions, export_artifact

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e_cpu.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab, emb = build(args.imgsz)
        calib = Path(tmp) / "calib"
        calib.mkdir()
        for i, img in enumerate(synthetic_bgr(32, 11, args.imgsz)):
            cv2.imwrite(str(calib / f"{i:02d}.jpg"), img)
        paths = [Path(tmp) / "s_fp32.onnx", Path(tmp) / "s_int8.onnx"]
        export_artifact(model, vocab, paths[0], ExportOptions(imgsz=args.imgsz), emb, log=lambda *_: None)
        export_artifact(model, vocab, paths[1], ExportOptions(imgsz=args.imgsz, precision="int8",
                                                              calib_images=str(calib)), emb, log=lambda *_: None)
        report = run([str(p) for p in paths], args.batches, args.device, count=args.images, repeats=args.repeats,
                     backends=("onnxruntime", "openvino"), precisions=("fp32", "bf16"),
                     letterboxes=("rect", "square"))
    # the int8 artifact's rows under both --precision values are both "int8": keep the later, bf16 for the
    # layers left in float (the automatic choice on a bf16 CPU)
    rows = report["results"]
    report["results"] = [r for i, r in enumerate(rows) if not any(_same_row(r, q) for q in rows[i + 1:])]
    report["what"] = ("exported S (random BN-tempered weights, raw form, 80 classes) at "
                      f"{args.imgsz}; " + report["what"])
    print(markdown(report))
    print("wrote " + ", ".join(map(str, write_report(report, args.out))))


def _same_row(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("model", "backend", "precision", "letterbox", "batch"))


if __name__ == "__main__":
    main()
