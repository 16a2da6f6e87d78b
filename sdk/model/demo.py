"""Offline end-to-end demo: synthetic images -> tiny YOLO-World in the official checkpoint layout ->
``Detector`` -> annotated images and JSON. No download, runs on CPU in seconds.

The tiny model's weights are random (BN statistics and head scalars calibrated so scores are
not saturated), so its boxes show the pipeline, not a trained detector.

    python -m sdk.model.demo [--out runs/demo]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..detector import Detector
from .calibrate import calibrate_random_model
from .checkpoint import save_official_checkpoint
from .config import get_config
from .yoloworld import YoloWorld

CLASSES = ["red circle", "green square", "blue triangle"]


def shapes_image(rs: np.random.RandomState, size: int = 320) -> np.ndarray:
    """A noisy background with a few coloured circles, squares and triangles (BGR uint8)."""
    img = rs.randint(90, 160, (size, size, 3)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (7, 7), 0)
    for _ in range(rs.randint(2, 5)):
        kind = rs.randint(3)
        r = int(rs.randint(size // 14, size // 6))
        cx, cy = (int(v) for v in rs.randint(r, size - r, 2))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, (40, 40, 220), -1)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), (40, 200, 40), -1)
        else:
            pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
            cv2.fillPoly(img, [pts], (220, 60, 40))
    return img


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="offline YOLO-World demo (tiny random model)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--images", type=int, default=6)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(0)
    image_dir = args.out / "images"
    image_dir.mkdir(exist_ok=True)
    images = [shapes_image(rs) for _ in range(args.images)]
    for i, img in enumerate(images):
        cv2.imwrite(str(image_dir / f"shapes_{i}.jpg"), img)

    torch.manual_seed(0)
    model = YoloWorld(get_config("tiny", "v2"))
    batch = np.stack([cv2.resize(im, (320, 320))[..., ::-1].transpose(2, 0, 1) for im in images])
    calibrate_random_model(model, torch.from_numpy(batch.astype(np.float32) / 255),
                           model.encode_text(CLASSES))
    ckpt = save_official_checkpoint(model, args.out / "tiny_official_layout.pth")

    detector = Detector(ckpt, classes=CLASSES, imgsz=320, conf=0.3)
    results = detector.predict(str(image_dir), batch_size=4)
    pred_dir = args.out / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for det in results:
        name = Path(det.data["source"]).name
        cv2.imwrite(str(pred_dir / name), det.draw(cv2.imread(det.data["source"])))
    (args.out / "predictions.json").write_text(json.dumps(
        [{"image": d.data["source"], **d.to_dict()} for d in results], indent=1))
    speed = results[0].data["speed_ms"]
    print(f"demo: {len(results)} images, {sum(len(d) for d in results)} detections "
          f"({', '.join(f'{k} {v:.1f} ms/img' for k, v in speed.items())}), "
          f"{time.perf_counter() - t0:.1f} s in all")
    print(f"  checkpoint (official layout): {ckpt}")
    print(f"  annotated images: {pred_dir}/  detections: {args.out / 'predictions.json'}")
    print("  note: random weights; fine-tuning (python -m training.finetune) is not implemented yet")
    print(f"  next: yoloworld-predict {image_dir} --weights {ckpt} --classes "
          f"\"{','.join(CLASSES)}\" --imgsz 320 --out runs/predict")


if __name__ == "__main__":
    main()
