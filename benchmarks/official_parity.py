"""Measure agreement with the official YOLO-World outputs stored in golden files; write JSON.

Golden files (``tests/fixtures/golden_*.npz`` for the tiny variants; full-size S/L files made the
same way live outside the repo) hold the official code's outputs for weights made by
``tests/fixtures/official_format.fill_state_dict`` plus calibrated overrides.

    python benchmarks/official_parity.py [--full-dir DIR] [--out benchmarks/results/official_parity.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from official_format import fill_state_dict, synthetic_image  # noqa: E402
from parity import match_detections, max_rel_diff  # noqa: E402

from sdk import Detector  # noqa: E402
from sdk.model import build_model, get_config, load_checkpoint, to_official_state_dict  # noqa: E402
from sdk.preprocess import preprocess  # noqa: E402

# golden name -> (size, variant, imgsz, texts, cases {name: (seed, h, w)})
TINY_CASES = {"A": (1, 160, 160), "B": (2, 200, 120), "C": (3, 70, 100)}
FULL_CASES = {"A": (1, 640, 640), "B": (2, 1080, 810)}
SPECS = {
    "golden_v2_vlpan_bn": ("tiny", "v2", 160, ["person", "red car", "a dog"], TINY_CASES),
    "golden_v1_dual_l2": ("tiny", "v1", 160, ["person", "red car", "a dog"], TINY_CASES),
    "golden_v2_efficient_bn": ("tiny", "efficient", 160, ["person", "red car", "a dog"], TINY_CASES),
    "golden_v1_efficient_l2": ("tiny", "efficient_l2", 160, ["person", "red car", "a dog"], TINY_CASES),
    "v2_s_vlpan_bn": ("s", "v2", 640, ["person", "bus", "car", "dog"], FULL_CASES),
    "v1_l_dual_l2": ("l", "v1", 640, ["person", "bus", "car", "dog"], FULL_CASES),
}


def evaluate(path: Path, tmp: Path) -> dict:
    size, variant, imgsz, texts, cases = SPECS[path.stem]
    with np.load(path) as data:
        golden = {k: data[k] for k in data.files}
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in to_official_state_dict(
            build_model(get_config(size, variant))).items()}
    keys_equal = [f"{k}|{','.join(map(str, s))}" for k, s in shapes.items()] == \
        golden["state_dict_keys"].tolist()
    sd = fill_state_dict(shapes, seed=0)
    sd.update({k[9:]: v for k, v in golden.items() if k.startswith("override/")})
    ckpt = tmp / f"{path.stem}.pth"
    torch.save({"meta": {}, "state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}}, ckpt)
    model = load_checkpoint(ckpt)
    text = model.encode_text(texts)
    report: dict = {"size": size, "variant": variant, "imgsz": imgsz, "num_keys": len(shapes),
                    "keys_and_shapes_equal": keys_equal,
                    "text_feats_max_abs": float(np.abs(text.numpy() - golden["text_feats"]).max()),
                    "cases": {}}
    det = Detector(ckpt, classes=texts, imgsz=imgsz, conf=0.001, iou=0.7, max_det=300)
    for case, (seed, h, w) in cases.items():
        image = synthetic_image(seed, h, w)
        entry: dict = {}
        if f"{case}/cls_logits_0" in golden:
            batch, _ = preprocess([image], imgsz)
            with torch.no_grad():
                out = model(torch.from_numpy(batch), text)
            entry["cls_logits_max_rel"] = max(
                max_rel_diff(out.cls_logits[i].numpy(), golden[f"{case}/cls_logits_{i}"]) for i in range(3))
            entry["box_dists_max_rel"] = max(
                max_rel_diff(out.box_dists[i].numpy(), golden[f"{case}/bbox_dist_{i}"]) for i in range(3))
        res = det.predict(image)[0]
        ref = (golden[f"{case}/det_bboxes"], golden[f"{case}/det_scores"], golden[f"{case}/det_labels"])
        entry["detections"] = len(res)
        entry["official_detections"] = len(ref[2])
        entry["matched_0.05px_1e-4"] = match_detections(res.xyxy, res.confidence, res.class_id, *ref,
                                                        box_atol=0.05, score_atol=1e-4)
        entry["matched_1px_1e-3"] = match_detections(res.xyxy, res.confidence, res.class_id, *ref,
                                                     box_atol=1.0, score_atol=1e-3)
        report["cases"][case] = entry
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full-dir", type=Path, help="folder with v2_s_vlpan_bn.npz / v1_l_dual_l2.npz")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "official_parity.json")
    args = p.parse_args()
    files = sorted((ROOT / "tests" / "fixtures").glob("golden_v*.npz"))
    if args.full_dir:
        files += [args.full_dir / f"{n}.npz" for n in ("v2_s_vlpan_bn", "v1_l_dual_l2")
                  if (args.full_dir / f"{n}.npz").exists()]
    results = {"reference": "AILab-CVC/YOLO-World 4f70adb (mmyolo 0.6.0), torch 2.13 CPU, 2 threads",
               "ours": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "machine": platform.machine()},
               "date": time.strftime("%Y-%m-%d"), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            results["models"][f.stem] = evaluate(f, Path(tmp))
            print(f.stem, json.dumps(results["models"][f.stem]["cases"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
