"""Transfer with the defaults: fine-tuning from pre-trained weights beats training from scratch -> JSON, plot.

The official checkpoints cannot be downloaded here, so a stand-in: the ``tiny`` model is first trained
on one generated set (set A: the six-class shapes on grey backgrounds), then fine-tuned on another
(set B: four other shapes and colours on dark gridded backgrounds) with the defaults for pre-trained
weights (``--weights A/last.pt``: the official fine-tuning learning rate 2e-4), against the same model
trained on set B from scratch with its defaults (``--model tiny``: 1e-3), for the same epochs, batch and
image size. Both are validated every 5 epochs and every epoch of the last 10 with pycocotools (EMA
weights) on set B's validation split.

    python benchmarks/transfer.py --work ../peer/transfer [--pretrained A/last.pt] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, read_curve, run_finetune, save_png  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

IMGSZ, BATCH = 320, 16
SET_A = (600, 120, 30)  # train, val, epochs of the pre-training
SET_B = (200, 60)


def finetune(args: list[str], out: Path) -> tuple[float, list[tuple[int, float]], float]:
    """Run ``python -m training.finetune`` (defaults plus ``args``); (seconds, mAP curve, final mAP)."""
    seconds = run_finetune([*args, "--imgsz", str(IMGSZ), "--batch-size", str(BATCH)], out)
    curve = read_curve(out / "metrics.csv")
    return seconds, curve, curve[-1][1]


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, style in (("from_pretrained", "o-"), ("from_scratch", "s--")):
        r = report[key]
        ep, m = zip(*r["curve"], strict=True)
        ax.plot(ep, m, style, ms=3, label=f"{key.replace('_', ' ')} (lr {r['lr']:g}): final {r['final_mAP']:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("set B val mAP50:95")
    ax.set_title(f"tiny on set B ({SET_B[0]} images), defaults")
    ax.legend(fontsize=8)
    save_png(fig, path)


def main() -> None:
    import yaml

    from training.synthetic import OTHER_CLASSES, SIX_CLASSES, make_shapes_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (outside the repository)")
    p.add_argument("--pretrained", type=Path, help="a tiny checkpoint trained on set A (default: train one)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "transfer_tiny.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "environment": {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": {"imgsz": IMGSZ, "batch": BATCH, "epochs": args.epochs, "set_a": "SIX_CLASSES, grey, "
                     f"{SET_A[0]} train", "set_b": f"OTHER_CLASSES, dark, {SET_B[0]} train / {SET_B[1]} val"}}
    pretrained = args.pretrained
    if pretrained is None:
        a = make_shapes_dataset(args.work / "set_a", SET_A[0], SET_A[1], IMGSZ, seed=1, classes=SIX_CLASSES)
        seconds, _, final = finetune(["--data", str(a), "--model", "tiny", "--epochs", str(SET_A[2])],
                                     args.work / "pretrain")
        report["pretraining"] = {"epochs": SET_A[2], "seconds": seconds, "set_a_val_mAP": final}
        pretrained = args.work / "pretrain" / "last.pt"
    else:  # e.g. the shapes600 run of finetune_vs_ultralytics.py: the same set A, epochs, batch and size
        epoch, final = read_curve(pretrained.parent / "metrics.csv")[-1]
        report["pretraining"] = {"given": f"{pretrained.parent.name}/{pretrained.name}", "epochs": epoch,
                                 "set_a_val_mAP": final}
    b = make_shapes_dataset(args.work / "set_b", SET_B[0], SET_B[1], IMGSZ, seed=2, classes=OTHER_CLASSES,
                            style="dark")
    common = ["--data", str(b), "--epochs", str(args.epochs)]
    for key, extra in (("from_pretrained", ["--weights", str(pretrained)]), ("from_scratch", ["--model", "tiny"])):
        out = args.work / key
        seconds, curve, final = finetune([*common, *extra], out)
        lr = yaml.safe_load((out / "config.yaml").read_text())["lr"]
        report[key] = {"seconds": seconds, "curve": curve, "final_mAP": final, "lr": lr}
        print(f"{key}: mAP50:95 {final:.3f} in {seconds / 60:.1f} min (lr {lr:g})", flush=True)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
