"""Command-line front ends (argparse only; each calls one library function)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from .errors import YoloWorldError


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-predict",
                                description="Detect objects named by text prompts in images.")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--weights", required=True, help="official .pth or own .pt checkpoint")
    p.add_argument("--classes", help='"person,car" or a class-text JSON (one prompt list per class); '
                                     "default: the vocabulary stored in the checkpoint")
    p.add_argument("--out", default="runs/predict", help="output folder (annotated images + JSON)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    p.add_argument("--prompt-merge", choices=("first", "mean", "max"), default="first")
    p.add_argument("--pad-prompt", action="store_true", help="append the official demo's ' ' prompt")
    return p


def predict_main(argv: list[str] | None = None) -> int:
    args = predict_parser().parse_args(argv)
    try:
        return run_predict(args)
    except (YoloWorldError, NotImplementedError, ValueError) as e:
        print(f"yoloworld-predict: error: {e}", file=sys.stderr)
        return 2


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .detector import Detector
    from .images import expand_sources, read_image

    detector = Detector(args.weights, classes=args.classes, device=args.device, imgsz=args.imgsz,
                        conf=args.conf, iou=args.iou, max_det=args.max_det, agnostic=args.agnostic,
                        prompt_merge=args.prompt_merge, pad_prompt=args.pad_prompt)
    sources = expand_sources(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, total = [], 0
    bar = tqdm(total=len(sources), unit="img", disable=len(sources) < 2)
    for start in range(0, len(sources), args.batch_size):
        chunk = sources[start:start + args.batch_size]
        for source, det in zip(chunk, detector.predict(chunk, batch_size=args.batch_size), strict=True):
            name = Path(source).name
            cv2.imwrite(str(out / name), det.draw(read_image(source)))
            records.append({"image": str(source), **det.to_dict(), "speed_ms": det.data["speed_ms"]})
            total += len(det)
        bar.update(len(chunk))
    bar.close()
    (out / "predictions.json").write_text(json.dumps({"classes": detector.class_names,
                                                      "results": records}, indent=1))
    print(f"{len(sources)} images, {total} detections -> {out}/ (annotated images, predictions.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(predict_main())
