"""COCO AP of a fine-tuned model exported in FP32, FP16 and INT8 ONNX, beside PyTorch -> JSON.

Uses the demo fine-tuning output by default (``make demo`` writes runs/demo_finetune/): its checkpoint,
validation split and annotation file. Evaluation settings: conf 0.001, IoU 0.7, 300 per image.

    python benchmarks/precision_accuracy.py [--run runs/demo_finetune] [--imgsz 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import repo_path  # noqa: E402
from export.pipeline import ExportOptions, export_artifact  # noqa: E402
from sdk import Detector  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402
from sdk.evaluation import coco_evaluate  # noqa: E402


def evaluate(model: str | Path, ann: Path, images: Path, imgsz: int) -> dict:
    gt = json.loads(ann.read_text())
    det = Detector(model, imgsz=imgsz, conf=0.001, iou=0.7, max_det=300)
    cats = sorted(c["id"] for c in gt["categories"])
    results = []
    for img in gt["images"]:
        (r,) = det.predict(str(images / img["file_name"]))
        results += r.to_coco(img["id"], cats)
    m = coco_evaluate(gt, results)
    return {k: m[k] for k in ("AP", "AP50", "AP75")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "demo_finetune")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "precision_accuracy.json")
    args = p.parse_args()
    ckpt = args.run / "best.pt"
    ann, images = args.run / "data" / "annotations" / "val.json", args.run / "data" / "val"
    calib = args.run / "data" / "train"
    work = args.run / "export"
    work.mkdir(exist_ok=True)
    report = {"checkpoint": repo_path(ckpt), "imgsz": args.imgsz, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "settings": "conf 0.001, iou 0.7, max_det 300",
              "results": {"pytorch_fp32": evaluate(ckpt, ann, images, args.imgsz)}}
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary

    model, meta = load_checkpoint_with_meta(ckpt)
    vocab = Vocabulary.from_any(meta["vocabulary"])
    for precision in ("fp32", "fp16", "int8"):
        out = work / f"model_{precision}.onnx"
        options = ExportOptions(precision=precision, imgsz=args.imgsz,
                                calib_images=str(calib) if precision == "int8" else None)
        export_artifact(model, vocab, out, options)
        report["results"][f"onnx_{precision}"] = evaluate(out, ann, images, args.imgsz)
    print(json.dumps(report, indent=1))
    atomic_write_text(args.out, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
