"""COCO AP of a fine-tuned model per export precision, runtime and letterbox, beside PyTorch -> JSON + PNG.

The checkpoint is exported (``export_artifact``, the defaults: dynamic height and width) in fp32, fp16
and int8 (Q/DQ, calibrated on up to 64 training images: the default; the default with its Conv outputs
quantized too; the form before issue 23), then evaluated with pycocotools
(conf 0.001, IoU 0.7, 300 per image) on:

- ONNX Runtime: each artifact as exported (fp32, fp16, int8);
- OpenVINO: fp32 and fp16 artifacts computed in fp32 and bf16 (where the CPU has it natively), int8;
- each with the square letterbox (the official pipeline) and the minimal-padding one (rect).

Besides AP, ``matched`` is the fraction of the reference's detections above conf 0.25 (PyTorch fp32,
square) that the row also finds: same class, IoU >= 0.5. Defaults: the demo fine-tuning output
(``make demo`` writes runs/demo_finetune/). Any fine-tuning run with a COCO JSON, YOLO YAML or VOC
folder works:

    python benchmarks/precision_accuracy.py [--run runs/demo_finetune] [--ann ... --images ... --split val]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, repo_path, save_barh  # noqa: E402
from export.pipeline import ExportOptions, export_artifact  # noqa: E402
from sdk import Detector, RuntimeOptions  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402
from sdk.evaluation import evaluate_detector  # noqa: E402

MATCH_CONF, MATCH_IOU = 0.25, 0.5


def matched_fraction(ref: list[dict], got: list[dict]) -> float:
    """Fraction of ``ref``'s COCO results scoring >= MATCH_CONF that ``got`` finds (class, IoU >= 0.5)."""
    from sdk.nms import pairwise_iou

    def by_image(results: list[dict]) -> dict:
        out: dict = {}
        for r in results:
            if r["score"] >= MATCH_CONF:
                x, y, w, h = r["bbox"]
                out.setdefault((r["image_id"], r["category_id"]), []).append([x, y, x + w, y + h])
        return out

    ref_boxes, got_boxes = by_image(ref), by_image(got)
    total = hits = 0
    for key, boxes in ref_boxes.items():
        total += len(boxes)
        if key in got_boxes:
            iou = pairwise_iou(np.asarray(boxes, np.float32), np.asarray(got_boxes[key], np.float32))
            hits += int((iou.max(1) >= MATCH_IOU).sum())
    return hits / max(total, 1)


def rows_for(precision: str) -> list[tuple[str, str | None]]:
    """(backend, OpenVINO compute precision) rows for one artifact."""

    from sdk.backends.openvino import native_bf16, shared_core

    ov = [("openvino", "fp32")] + ([("openvino", "bf16")] if native_bf16(shared_core()) else [])
    return [("onnxruntime", None)] + (ov if precision != "int8" else [("openvino", None)])


def evaluate(model: str | Path, gt: dict, images: Path, imgsz: int, **kw: Any) -> tuple[dict, list[dict]]:
    det = Detector(model, imgsz=imgsz, conf=0.001, iou=0.7, max_det=300, **kw)
    cats = sorted(c["id"] for c in gt["categories"])
    results, m = evaluate_detector(det, gt, images, cats, batch_size=8, progress=False)
    ran = {"backend": det.backend.name, "precision": det.backend.precision,
           "letterbox": "rect" if det.rect else "square"}
    return {**ran, **{k: round(float(m[k]), 4) for k in ("AP", "AP50", "AP75")}}, results


def run(ckpt: Path, gt: dict, images: Path, calib: Path, imgsz: int, work: Path, log: Any = print) -> list[dict]:
    from export.precision import DECODE_TAIL
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary

    rows = []
    ref, ref_results = evaluate(ckpt, gt, images, imgsz)
    rows.append({"artifact": "checkpoint fp32 (default)", **ref, "matched": 1.0})
    log(rows[-1])
    model, meta = load_checkpoint_with_meta(ckpt)
    vocab = Vocabulary.from_any(meta["vocabulary"])
    # "int8 conv outputs": the default int8 with a Q/DQ pair on every Conv output too (the default until the conv
    # outputs stayed float); "int8 before": the int8 export before issue 23: symmetric int8 activations, every op
    # type and output quantized, only the decode tail float
    variants = {"int8 conv outputs": {"int8_float_outputs": ()},
                "int8 before": {"int8_keep_float": (DECODE_TAIL,), "int8_activations": "int8", "int8_op_types": None,
                                "int8_float_outputs": ()}}
    for name, precision in (("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8"), ("int8 conv outputs", "int8"),
                            ("int8 before", "int8")):
        out = work / f"model_{name.replace(' ', '_')}.onnx"
        calib_images = str(calib) if precision == "int8" else None
        options = ExportOptions(precision=precision, imgsz=imgsz, calib_images=calib_images, **variants.get(name, {}))
        export_artifact(model, vocab, out, options, log=lambda *_: None)
        if name == "fp32":  # the export run the default way: what a user gets without flags
            row, results = evaluate(out, gt, images, imgsz)
            rows.append({"artifact": "onnx fp32 (default)", **row, "matched": round(matched_fraction(ref_results,
                                                                                                  results), 4)})
            log(rows[-1])
        for backend, compute in rows_for(precision):
            for rect in (False, True):
                row, results = evaluate(out, gt, images, imgsz, backend=backend, rect=rect,
                                        runtime=RuntimeOptions(precision=compute))
                rows.append({"artifact": f"onnx {name}", **row, "matched": round(matched_fraction(ref_results,
                                                                                                        results), 4)})
                log(rows[-1])
    return rows


def plot(report: dict, path: Path) -> None:
    rows = report["results"]
    values = [r["AP"] for r in rows]
    save_barh(path, [f"{r['artifact']} {r['backend']} {r['precision']} {r['letterbox']}" for r in rows], values,
              ["#4c72b0" if r["letterbox"] == "square" else "#55a868" for r in rows],
              "COCO AP (mAP50:95); blue square letterbox, green rect",
              f"{report['name']}: {report['checkpoint']} at {report['imgsz']}",
              xlim=(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.02)), fontsize=7)


def main() -> None:
    from sdk.cli import read_ground_truth

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "demo_finetune", help="a fine-tuning output folder")
    p.add_argument("--ann", help="COCO JSON, YOLO YAML or VOC folder (default: the run's data/annotations/val.json)")
    p.add_argument("--images", help="image folder of a COCO --ann (default: the run's data/val)")
    p.add_argument("--split", default="val")
    p.add_argument("--calib", type=Path, help="int8 calibration images (default: the run's data/train)")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--name", default="demo")
    p.add_argument("--about", help="how the checkpoint was made (recorded in the JSON)")
    p.add_argument("--out", type=Path, help="default: benchmarks/results/precision_accuracy_<name>.json")
    args = p.parse_args()
    ckpt = args.run / "best.pt"
    gt, images = read_ground_truth(args.ann or str(args.run / "data" / "annotations" / "val.json"), args.split,
                                   args.images or (None if args.ann else str(args.run / "data" / "val")))
    calib = args.calib or args.run / "data" / "train"
    work = args.run / "export"
    work.mkdir(exist_ok=True)
    rows = run(ckpt, gt, Path(images), calib, args.imgsz, work)
    import onnxruntime
    import openvino

    report = {"name": args.name, "checkpoint": repo_path(ckpt), "about": args.about, "imgsz": args.imgsz,
              "cpu": cpu_name(),
              "images": len(gt["images"]), "python": platform.python_version(),
              "versions": {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "settings": f"conf 0.001, iou 0.7, max_det 300; matched: conf {MATCH_CONF}, IoU {MATCH_IOU}",
              "results": rows}
    out = args.out or ROOT / "benchmarks" / "results" / f"precision_accuracy_{args.name}.json"
    atomic_write_text(out, json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
