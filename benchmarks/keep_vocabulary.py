"""What fine-tuning costs the open vocabulary, strategy by strategy -> JSON, table, Pareto figure.

A stand-in for a model pre-trained on a broad vocabulary (the official checkpoints cannot be downloaded
here): the ``tiny`` model trained from scratch on a generated "pre-training" set of 24 colour x shape
classes (three prompts each, grey backgrounds) mixed with grounding captions over part of its images.
It is then fine-tuned on a generated "user" set: four new classes (other shapes and colours) on dark
gridded backgrounds, where half of the images also hold one or two unannotated objects of the old
vocabulary (a user's photos hold more than the classes they label). For every strategy: AP of the old
vocabulary on its validation split (prompted with its own class texts, first prompt, as official
validation), AP of the new classes on the user set's validation split, both with ``sdk.Detector`` at
the evaluation settings, and the fine-tuning wall time.

    python benchmarks/keep_vocabulary.py --work ../peer/keep [--epochs 20] [--only plain,distill]
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

from benchmarks.common import cpu_name, run_finetune, save_png  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

IMGSZ, BATCH = 256, 16
OLD = dict(num_train=600, num_val=150, grounding=150, epochs=30, seed=11)
NEW = dict(num_train=200, num_val=60, seed=12)


def make_sets(work: Path) -> tuple[Path, Path, Path]:
    """(pre-training data YAML: detection + grounding, old-vocabulary data YAML, user data YAML)."""
    import yaml

    from training.synthetic import OTHER_CLASSES, VOCAB_CLASSES, make_shapes_dataset

    old = work / "old" / "data.yaml"
    if not old.exists():
        make_shapes_dataset(old.parent, OLD["num_train"], OLD["num_val"], IMGSZ, seed=OLD["seed"],
                            classes=VOCAB_CLASSES, grounding_images=OLD["grounding"])
    mixed = work / "old" / "pretrain.yaml"
    config = yaml.safe_load(old.read_text())
    config["train"] = [config["train"], {"ann_file": "annotations/grounding.json", "img_dir": "train",
                                         "type": "grounding"}]
    mixed.write_text(yaml.safe_dump(config, sort_keys=False))
    new = work / "user" / "data.yaml"
    if not new.exists():
        make_shapes_dataset(new.parent, NEW["num_train"], NEW["num_val"], IMGSZ, seed=NEW["seed"],
                            classes=OTHER_CLASSES, style="dark", grounding_images=0, distractors=VOCAB_CLASSES)
    return mixed, old, new


def finetune(args: list[str], out: Path) -> float:
    """``python -m training.finetune`` (defaults plus ``args``) into ``out``; its wall time, seconds."""
    return run_finetune([*args, "--imgsz", str(IMGSZ), "--batch-size", str(BATCH)], out)


def pretrain(work: Path) -> Path:
    """The starting model: tiny from scratch on the pre-training mix (cached in ``work/pretrain``)."""
    mixed, _, _ = make_sets(work)
    out = work / "pretrain"
    if not (out / "last.pt").exists():
        finetune(["--data", str(mixed), "--model", "tiny", "--epochs", str(OLD["epochs"])], out)
    return out / "last.pt"


def replay_yaml(work: Path, images: int) -> Path:
    """The user set mixed with grounding captions over ``images`` images of the pre-training set (the
    official guide's mixed grounding data; here the old images themselves, as replay)."""
    import yaml

    old = work / "old"
    ground = json.loads((old / "annotations" / "grounding.json").read_text())
    keep = {img["id"] for img in ground["images"][:images]}
    ground["images"] = [i for i in ground["images"] if i["id"] in keep]
    ground["annotations"] = [a for a in ground["annotations"] if a["image_id"] in keep]
    (old / "annotations" / f"replay{images}.json").write_text(json.dumps(ground))
    user = work / "user"
    config = yaml.safe_load((user / "data.yaml").read_text())
    config["train"] = [config["train"], {"ann_file": f"../old/annotations/replay{images}.json",
                                         "img_dir": "../old/train", "type": "grounding"}]
    path = user / f"replay{images}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def average_precision(weights: Path, data_root: Path) -> float:
    """COCO mAP50:95 of ``weights`` on ``data_root``'s validation split, prompted with its class texts
    (first prompt), at the evaluation settings (conf 0.001, square letterbox)."""
    from sdk import Detector
    from sdk.evaluation import evaluate_detector, pair_classes
    from sdk.vocabulary import read_class_texts

    texts = read_class_texts(data_root / "class_texts.json")
    det = Detector(weights, classes=texts, conf=0.001)
    ann = json.loads((data_root / "annotations" / "val.json").read_text())
    pairing = pair_classes(det.class_names, texts, ann["categories"])
    _, metrics = evaluate_detector(det, ann, data_root / "val", pairing.category_ids, progress=False)
    return float(metrics["AP"])


#: name -> (fine-tuning options besides --data/--weights/--epochs, data: "user" or "replayN").
STRATEGIES: dict[str, tuple[list[str], str]] = {
    "plain": ([], "user"),
    "prompt": (["--mode", "prompt"], "user"),
    "efficient": (["--mode", "efficient"], "user"),
    "replay": ([], "replay100"),
    "distill": (["--keep-vocabulary"], "user"),
    "distill+replay": (["--keep-vocabulary"], "replay100"),
    "distill+replay50": (["--keep-vocabulary"], "replay50"),
}
#: post-hoc WiSE-FT: (strategy it starts from, alpha) -> name
INTERPOLATIONS = [("plain", 0.5), ("plain", 0.75), ("distill", 0.75)]


def run_strategy(work: Path, start: Path, name: str, epochs: int) -> dict[str, Any]:
    options, data = STRATEGIES[name]
    path = work / "user" / "data.yaml" if data == "user" else replay_yaml(work, int(data.removeprefix("replay")))
    out = work / "runs" / name.replace("+", "_")
    out.parent.mkdir(exist_ok=True)
    seconds = finetune(["--data", str(path), "--weights", str(start), "--epochs", str(epochs), *options], out)
    return {"options": options, "data": data, "seconds": seconds, "weights": out / "best.pt"}


def score(work: Path, weights: Path, closed: bool = False) -> dict[str, float | None]:
    """Old-vocabulary and new-class AP; a closed vocabulary (efficient mode) cannot be prompted: None."""
    return {"old_AP": None if closed else average_precision(weights, work / "old"),
            "new_AP": average_precision(weights, work / "user")}


def summarise(report: dict[str, Any]) -> None:
    """Adds, per strategy, old AP kept (share of the start's) and new AP relative to plain's, and time
    relative to plain's."""
    start_old = report["start"]["old_AP"]
    plain = report["strategies"]["plain"]
    for r in report["strategies"].values():
        r["old_kept"] = (r["old_AP"] or 0.0) / start_old
        r["new_vs_plain"] = r["new_AP"] / plain["new_AP"]
        r["time_vs_plain"] = r["seconds"] / plain["seconds"]
        r["meets_targets"] = r["old_kept"] >= 0.9 and r["new_vs_plain"] >= 0.95 and r["time_vs_plain"] <= 1.5


def table(report: dict[str, Any]) -> str:
    s = report["start"]
    lines = [f"start (pre-trained): old-vocabulary AP {s['old_AP']:.3f}, new-class AP {s['new_AP']:.3f}", "",
             "| strategy | old AP | kept | new AP | vs plain | time | vs plain | targets |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report["strategies"].items():
        old = "closed" if r["old_AP"] is None else f"{r['old_AP']:.3f}"
        lines.append(f"| {name} | {old} | {r['old_kept']:.0%} | {r['new_AP']:.3f} | {r['new_vs_plain']:.0%} | "
                     f"{r['seconds'] / 60:.1f} min | {r['time_vs_plain']:.2f}x | "
                     f"{'met' if r['meets_targets'] else 'missed'} |")
    for name, r in report.get("superseded", {}).items():  # measured with earlier code, kept for the record
        lines.append(f"\n{name}: old AP {r['old_AP']:.3f}, new AP {r['new_AP']:.3f}, {r['seconds'] / 60:.1f} min "
                     f"({r['why']})")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    plain = report["strategies"]["plain"]["new_AP"]
    ax.fill_between([0.95 * plain, 1.0], 0.9, 1.05, color="tab:green", alpha=0.12,
                    label="targets: >= 90 % kept, >= 95 % of plain's new AP")
    ranked = sorted(report["strategies"].items(), key=lambda kv: kv[1]["old_kept"])
    for k, (name, r) in enumerate(ranked):  # labels alternate left and right so close points stay legible
        ax.plot(r["new_AP"], r["old_kept"], "o", ms=6)
        ax.annotate(f"{name} ({r['time_vs_plain']:.2f}x)", (r["new_AP"], r["old_kept"]), fontsize=7,
                    xytext=(6, -3) if k % 2 else (-6, 3), ha="left" if k % 2 else "right",
                    textcoords="offset points")
    ax.set_xlabel("new classes: val mAP50:95")
    ax.set_ylabel("old vocabulary: share of the start's mAP kept")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title("fine-tuning tiny on 4 new classes (200 images): what the old 24 keep", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_xlim(0.45, 1.02)
    save_png(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (outside the repository)")
    p.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs")
    p.add_argument("--only", help="comma-separated strategies to (re)run; the others come from --out")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "keep_vocabulary.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    start = pretrain(args.work)
    old_report = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    report: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "environment": {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": {"imgsz": IMGSZ, "batch": BATCH, "epochs": args.epochs, "pretraining": OLD, "user_set": NEW,
                     "old_vocabulary": "VOCAB_CLASSES (24 colour x shape), grey, + grounding captions",
                     "user_classes": "OTHER_CLASSES (4), dark, unannotated old-vocabulary objects in half"},
        "start": score(args.work, start), "strategies": dict(old_report.get("strategies", {})),
        "superseded": old_report.get("superseded", {})}
    wanted = args.only.split(",") if args.only else list(STRATEGIES)
    for name in wanted:
        r = run_strategy(args.work, start, name, args.epochs)
        r.update(score(args.work, r.pop("weights"), closed=name == "efficient"))
        report["strategies"][name] = r
        print(f"{name}: old AP {r['old_AP']}, new AP {r['new_AP']:.3f}, {r['seconds'] / 60:.1f} min", flush=True)
    from training.keep import interpolate_checkpoint

    for base, alpha in INTERPOLATIONS:
        name = f"{base} + WiSE-FT {alpha:g}"
        b = report["strategies"][base]
        out = args.work / "runs" / f"{base}_wise{alpha:g}.pt"
        interpolate_checkpoint(start, args.work / "runs" / base / "best.pt", alpha, out)
        report["strategies"][name] = {**score(args.work, out), "seconds": b["seconds"],
                                      "options": [*b["options"], f"then interpolate at {alpha:g}"], "data": b["data"]}
    summarise(report)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), table(report))
    plot(report, args.out.with_suffix(".png"))
    print(table(report))


if __name__ == "__main__":
    main()
