"""End-to-end throughput of the exported S model on ONNX Runtime (CPU by default): ``yoloworld-bench``
on a reproducible model, with model-only timings and the share of each stage (read + letterbox,
inference, post-processing) -> JSON, markdown and PNG.

The S model (random weights, BN-tempered as in bench_onnx_precision.py, 80 classes) is exported at
640 in the raw form; 16 synthetic JPEGs of varied sizes are predicted with ``Detector.predict`` at
batch 1 and 8 (conf 0.25), after one warm-up pass.

    python benchmarks/bench_e2e.py [--imgsz 640] [--batches 1 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_onnx_precision import build  # noqa: E402
from sdk.benchmark import markdown, run, write_report  # noqa: E402


def main() -> None:
    from export.onnx_export import export_onnx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e_onnxruntime_cpu.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab, emb = build(args.imgsz)
        onnx_path = Path(tmp) / "s.onnx"
        export_onnx(model, vocab, emb, onnx_path, imgsz=args.imgsz, log=lambda *_: None)
        report = run([str(onnx_path)], args.batches, args.device, count=args.images, repeats=args.repeats)
    report["what"] = ("exported S (random BN-tempered weights, raw form, 80 classes) at "
                      f"{args.imgsz}; " + report["what"])
    print(markdown(report))
    print("wrote " + ", ".join(map(str, write_report(report, args.out))))


if __name__ == "__main__":
    main()
