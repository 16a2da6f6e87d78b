"""Fine-tuning with the defaults, side by side with Ultralytics YOLO-World: mAP per epoch and wall time -> JSON, plot.

Both sides train from scratch on the same data with only what a user would type: the dataset, the
model (this project's ``tiny``; Ultralytics' ``yolov8n-worldv2.yaml``), the epochs, the image size and
the batch, with the same CPU threads. Both are then scored by the same pycocotools code on the same
validation split at the training size (conf 0.001, IoU 0.7, 300 detections per image, each side's last
weights: its EMA; for Ultralytics the detections its own validator writes). Per-epoch curves are each
side's own validation (pycocotools on the EMA weights here; Ultralytics' own mAP50-95 there).

Ultralytics runs as a black box in a scratch virtual environment outside this repository
(``--peer-venv``; ``pip install ultralytics`` there). No CLIP weights are reachable offline, so both
sides use the same random text tower (this project's ``tiny`` model at seed 0): Ultralytics receives it
through its own text-embedding cache file and a stand-in ``clip`` module written into the scratch
environment (``tokenize`` + ``load().encode_text``); the vectors are checked to be the ones this project
trains with.

Datasets: the generated six-class shapes set (``training.synthetic.SIX_CLASSES``, non-contiguous ids,
synonyms) at about 100, 600 and 3000 images, and the raccoon dataset (200 real photos, Pascal VOC,
github.com/datitran/raccoon_dataset, MIT licence; fetched outside the repository, ``--raccoon DIR`` with
its ``images/`` and ``annotations/``), split 160 / 40.

    python benchmarks/finetune_vs_ultralytics.py --peer-venv ../peer/venv --work ../peer/work \\
        [--sets shapes100 shapes600 shapes3000 raccoon] [--raccoon DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, read_curve, repo_path, save_png, timed_run  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

# name -> (train images, val images, epochs); image size and batch are the same for every set
SETS = {"shapes100": (80, 20, 30), "shapes600": (600, 120, 30), "shapes3000": (3000, 300, 5),
        "raccoon": (160, 40, 30)}
IMGSZ, BATCH, THREADS = 320, 16, 2
PEER_MODEL = "yolov8n-worldv2.yaml"

CLIP_SHIM = '''"""Offline stand-in for OpenAI's clip package, written by yoloworld-sdk's benchmark: the text tower of
yoloworld-sdk's tiny model at seed 0 (the random encoder that project trains with from scratch)."""
import sys

import torch

sys.path.insert(0, {root!r})


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from sdk.model import build_model, get_config

        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.enc = build_model(get_config("tiny", "v2")).text_encoder

    def encode_text(self, ids):
        return self.enc(ids)


def load(name, device="cpu", download_root=None, **_):
    return _Model().to(device), None


def tokenize(texts, truncate=True, **_):
    from sdk.model import tokenize as sdk_tokenize
    from sdk.model.text_encoder import EOT_TOKEN

    texts = [texts] if isinstance(texts, str) else list(texts)
    return torch.tensor([s + [EOT_TOKEN] * (77 - len(s)) for s in sdk_tokenize(texts)], dtype=torch.long)
'''

PEER_TRAIN = '''import sys
from ultralytics import YOLOWorld
data, epochs, imgsz, batch, project = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
YOLOWorld({model!r}).train(data=data, epochs=epochs, imgsz=imgsz, batch=batch, device="cpu", project=project,
                           name="run", exist_ok=True, plots=False)
'''

PEER_PREDICT = '''import sys
from ultralytics import YOLOWorld
weights, data, imgsz, project = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
YOLOWorld(weights).val(data=data, imgsz=imgsz, batch=16, conf=0.001, iou=0.7, max_det=300, device="cpu", plots=False,
                       save_json=True, project=project, name="val", exist_ok=True)
'''


def prepare_peer(venv: Path) -> Path:
    """The scratch venv's python, with the stand-in ``clip`` module written into its site-packages."""
    python = venv / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", query], text=True).strip())
    (site / "clip").mkdir(exist_ok=True)
    (site / "clip" / "__init__.py").write_text(CLIP_SHIM.format(root=str(ROOT)))
    return python


def make_shapes(root: Path, n_train: int, n_val: int) -> Path:
    """The six-class shapes set in COCO form, then as an Ultralytics dataset (boxes); returns its YAML."""
    from training.synthetic import SIX_CLASSES, make_shapes_dataset, to_yolo_layout

    coco = make_shapes_dataset(root / "coco", n_train, n_val, size=IMGSZ, seed=1, classes=SIX_CLASSES)
    return to_yolo_layout(coco, root / "yolo")


def make_raccoon(source: Path, root: Path) -> Path:
    """The raccoon photos as a Pascal VOC folder (160 train / 40 val, a seeded split), then converted for
    Ultralytics by this project's reader; returns the YOLO YAML (this project trains on the VOC folder)."""
    from sdk.datasets import read_voc, write_coco
    from training.synthetic import to_yolo_layout

    voc = root / "voc"
    stems = sorted(p.stem for p in (source / "annotations").glob("*.xml"))
    random.Random(0).shuffle(stems)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(source / "annotations" / f"{stem}.xml", voc / "Annotations" / f"{stem}.xml")
        shutil.copy(source / "images" / f"{stem}.jpg", voc / "JPEGImages" / f"{stem}.jpg")
    n_train = SETS["raccoon"][0]
    (voc / "ImageSets/Main/train.txt").write_text("".join(f"{s}\n" for s in stems[:n_train]))
    (voc / "ImageSets/Main/val.txt").write_text("".join(f"{s}\n" for s in stems[n_train:]))
    coco_yaml = write_coco(read_voc(voc), root / "coco")
    return to_yolo_layout(coco_yaml, root / "yolo")


def ours_data(name: str, root: Path, yolo_yaml: Path) -> Path:
    return root / "voc" if name == "raccoon" else yolo_yaml


def write_peer_text_cache(yolo_yaml: Path) -> list[str]:
    """Ultralytics' text-embedding cache beside the training images: the tiny tower's vectors."""
    import torch
    import yaml

    from sdk.model import build_model, get_config

    names = yaml.safe_load(yolo_yaml.read_text())["names"]
    torch.manual_seed(0)
    emb = build_model(get_config("tiny", "v2")).text_encoder.encode(names)
    torch.save(dict(zip(names, emb, strict=True)), yolo_yaml.parent / "images" / "text_embeddings_clip_ViT-B_32.pt")
    return names


def val_split(yolo_yaml: Path) -> tuple[dict, Path]:
    from sdk.datasets import read_yolo

    split = read_yolo(yolo_yaml).splits["val"]
    return split.coco, split.img_dir


def score(results: list[dict], gt: dict) -> dict[str, float]:
    from sdk.evaluation import coco_evaluate

    m = coco_evaluate(gt, results)
    return {"mAP50_95": m["AP"], "mAP50": m["AP50"]}


def run_ours(name: str, data: Path, epochs: int, work: Path, gt: dict, img_dir: Path) -> dict[str, Any]:
    from sdk import Detector

    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "training.finetune", "--data", str(data), "--model", "tiny", "--epochs", str(epochs),
           "--imgsz", str(IMGSZ), "--batch-size", str(BATCH), "--output", str(out)]
    seconds = timed_run(cmd, work / "ours.log", ROOT)
    det = Detector(out / "last.pt", imgsz=IMGSZ, conf=0.001, iou=0.7, max_det=300)
    cats = sorted(c["id"] for c in gt["categories"])
    results = []
    for img in gt["images"]:
        results += det.predict(str(img_dir / img["file_name"]))[0].to_coco(img["id"], cats)
    curve = read_curve(out / "metrics.csv")
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    def hide(text: str) -> str:  # the scratch folder as <work>: results must not record this machine's layout
        return text.replace(str(work.parent), "<work>")

    return {"command": hide(" ".join(cmd[1:]).replace(str(data), repo_path(data))), "revision": revision,
            "train_seconds": seconds, **score(results, gt), "curve": curve,
            "schedule": hide((out / "config.yaml").read_text())}


def run_peer(python: Path, yolo_yaml: Path, epochs: int, work: Path, gt: dict, img_dir: Path) -> dict[str, Any]:
    out = work / "peer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "train.py").write_text(PEER_TRAIN.format(model=PEER_MODEL))
    (out / "predict.py").write_text(PEER_PREDICT)
    seconds = timed_run([str(python), "train.py", str(yolo_yaml), str(epochs), str(IMGSZ), str(BATCH), str(out)],
                        work / "peer.log", out)
    # scored on what its own validator predicts (its rect letterbox): predict() on single images gave far
    # fewer detections and a third of the mAP, so this is the peer's best showing
    timed_run([str(python), "predict.py", str(out / "run" / "weights" / "last.pt"), str(yolo_yaml), str(IMGSZ),
               str(out)], work / "peer_val.log", out)
    cats = sorted(c["id"] for c in gt["categories"])
    image_id = {Path(i["file_name"]).stem: i["id"] for i in gt["images"]}
    results = [{"image_id": image_id[str(r["image_id"])], "category_id": cats[r["category_id"] - 1], "bbox": r["bbox"],
                "score": r["score"]} for r in json.loads((out / "val" / "predictions.json").read_text())]
    with open(out / "run" / "results.csv", newline="") as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    curve = [(int(float(r["epoch"])), float(r["metrics/mAP50-95(B)"])) for r in rows]
    return {"command": f"YOLOWorld('{PEER_MODEL}').train(data, epochs={epochs}, imgsz={IMGSZ}, batch={BATCH}, "
                       f"device='cpu')", "train_seconds": seconds, **score(results, gt), "curve": curve}


def check_same_text_tower(ours_dir: Path, names: list[str]) -> float:
    """Largest difference between the trained checkpoint's (frozen) text embeddings and Ultralytics' cache."""
    import torch

    from sdk.model import load_checkpoint

    enc = load_checkpoint(ours_dir / "last.pt").text_encoder
    cache = torch.load(next(ours_dir.parent.rglob("text_embeddings_clip_ViT-B_32.pt")), weights_only=True)
    return float((enc.encode(names) - torch.stack([cache[n] for n in names])).abs().max())


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(report["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.4), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        r = report["sets"][name]
        for side, style in (("ours", "o-"), ("ultralytics", "s--")):
            ep, m = zip(*r[side]["curve"], strict=True) if r[side]["curve"] else ((), ())
            ax.plot(ep, m, style, ms=3, label=f"{side}: final {r[side]['mAP50_95']:.3f} "
                                              f"({r[side]['train_seconds'] / 60:.0f} min)")
        ax.set_title(f"{name} ({r['train_images']} train, {r['epochs']} epochs)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("val mAP50:95")
        ax.legend(fontsize=7)
    save_png(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-venv", type=Path, required=True, help="scratch venv with ultralytics installed")
    p.add_argument("--work", type=Path, required=True, help="scratch folder for datasets and runs (outside the repo)")
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    p.add_argument("--side", choices=("both", "ours", "ultralytics"), default="both",
                   help="rerun one side only, keeping the other side's recorded result for the set")
    p.add_argument("--raccoon", type=Path, help="the raccoon dataset checkout (images/, annotations/)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_vs_ultralytics.json")
    args = p.parse_args()
    python = prepare_peer(args.peer_venv)
    peer_version = subprocess.check_output([str(python), "-c", "import ultralytics; print(ultralytics.__version__)"],
                                           text=True).strip()
    import torch

    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.update({"what": __doc__.split("\n\n")[0], "settings": {"imgsz": IMGSZ, "batch": BATCH, "threads": THREADS,
                   "ours": "tiny (v2), defaults", "ultralytics": PEER_MODEL, "eval": "pycocotools, conf 0.001, "
                   "iou 0.7, max_det 300, last (EMA) weights, val split"},
                   "environment": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                                   "torch": torch.__version__, "ultralytics": peer_version}})
    report.setdefault("sets", {})
    for name in args.sets:
        n_train, n_val, epochs = SETS[name]
        work = args.work / name
        if name == "raccoon":
            if not args.raccoon:
                raise SystemExit("--sets raccoon needs --raccoon DIR (github.com/datitran/raccoon_dataset)")
            yolo_yaml = make_raccoon(args.raccoon, work / "data")
        else:
            yolo_yaml = make_shapes(work / "data", n_train, n_val)
        names = write_peer_text_cache(yolo_yaml)
        gt, img_dir = val_split(yolo_yaml)
        entry = report["sets"].get(name, {}) if args.side != "both" else {}
        if args.side in ("both", "ours"):
            print(f"[{name}] ours ...", flush=True)
            entry["ours"] = run_ours(name, ours_data(name, work / "data", yolo_yaml), epochs, work, gt, img_dir)
            print(f"[{name}] ours {entry['ours']['mAP50_95']:.3f} in {entry['ours']['train_seconds']:.0f} s",
                  flush=True)
        if args.side in ("both", "ultralytics"):
            print(f"[{name}] ultralytics ...", flush=True)
            entry["ultralytics"] = run_peer(python, yolo_yaml, epochs, work, gt, img_dir)
            print(f"[{name}] ultralytics {entry['ultralytics']['mAP50_95']:.3f} in "
                  f"{entry['ultralytics']['train_seconds']:.0f} s", flush=True)
        if "ours" not in entry or "ultralytics" not in entry:
            raise SystemExit(f"[{name}] no recorded result for the other side in {args.out}: run --side both")
        report["sets"][name] = {**entry, "train_images": n_train, "val_images": n_val, "epochs": epochs,
                                "classes": len(names),
                                "text_embeddings_max_abs_diff": check_same_text_tower(work / "ours", names)}
        atomic_write_text(args.out, json.dumps(report, indent=1))
        plot(report, args.out.with_suffix(".png"))
    print(json.dumps({k: {s: v[s]["mAP50_95"] for s in ("ours", "ultralytics")} for k, v in report["sets"].items()}))


if __name__ == "__main__":
    main()
