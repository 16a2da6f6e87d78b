"""``yoloworld-predict``, ``yoloworld-eval`` and ``yoloworld-data`` (argparse only; each calls one library
function), and the options every command that runs a model shares (:func:`add_detector_args`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import cv2

from .atomic import atomic_path, atomic_write_text, check_can_create, staged_dir
from .backends.base import RuntimeOptions
from .errors import YoloWorldError
from .settings import BACKENDS, PROMPT_MERGES, DetectorSettings

#: ``--imgsz`` as every command that runs or exports a model takes it.
IMGSZ_HELP = ("network input size, a multiple of 32; default: the size the model was trained or exported at "
              "(640 for official checkpoints)")


def plain(text: str) -> str:
    """Docstring text as a ``--help`` description: RST ``literal`` markup dropped."""
    return re.sub(r"``([^`]*)``", r"\1", text)


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-predict",
                                description="Detect objects named by text prompts in images and videos.")
    p.add_argument("images", nargs="+", help="image files, folders (searched with their subfolders) and/or video "
                                             "files (an annotated .mp4 each)")
    p.add_argument("--weights", required=True, help="a checkpoint (official .pth or own .pt) or an export (.onnx, "
                                                    ".engine)")
    p.add_argument("--classes", help='"person,car" or a class-text JSON (one prompt list per class); '
                                     "default: the vocabulary stored in the checkpoint or export")
    p.add_argument("--out", default="runs/predict", help="output folder (annotated images + predictions.json)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (default 8)")
    p.add_argument("--skip-bad", action="store_true",
                   help="an unreadable image gets an empty result with its error (listed at the end) instead of "
                        "stopping the run")
    add_detector_args(p)
    return p


def add_detector_args(p: argparse.ArgumentParser, conf: bool = True) -> None:
    """The options of every command that runs a model, one per :class:`~sdk.settings.DetectorSettings`
    field (``conf=False``: the command sets or parses the threshold itself); read back with
    :func:`detector_settings`."""
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--imgsz", type=int, default=None, help=IMGSZ_HELP)
    if conf:
        p.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7, official)")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image (default 300, COCO's)")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS (one label per object)")
    p.add_argument("--prompt-merge", choices=PROMPT_MERGES, default="first",
                   help="how several prompts of a class combine: the first (official), the mean embedding, or "
                        "the max score")
    p.add_argument("--pad-prompt", action="store_true", help="append the official demo's ' ' prompt")
    p.add_argument("--backend", choices=BACKENDS,
                   help="default: the fastest correct one here (OpenVINO for .onnx on a CPU when installed, else "
                        "ONNX Runtime; TensorRT for .engine; torch for checkpoints)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="OpenVINO: what fp32/fp16 exports compute in (default: bf16 where the CPU runs it natively, "
                        "else fp32)")
    p.add_argument("--rect", action="store_true",
                   help="minimal-padding letterbox (exports with dynamic height and width, checkpoints): faster, "
                        "costs accuracy (measured in benchmarks/README.md)")
    p.add_argument("--square", action="store_true", help="the official square letterbox (the default)")
    p.add_argument("--half", action="store_true", help="float16 PyTorch on a checkpoint (CUDA)")
    p.add_argument("--threads", type=int, help="inference threads (ONNX Runtime, OpenVINO, PyTorch; default: the "
                                               "runtime's own, one per core)")


def detector_settings(args: argparse.Namespace, conf: float | None = None) -> DetectorSettings:
    """:func:`add_detector_args`' options as settings (``conf``: the command's own threshold)."""
    return DetectorSettings(
        device=args.device, imgsz=args.imgsz, conf=args.conf if conf is None else conf, iou=args.iou,
        max_det=args.max_det, agnostic=args.agnostic, prompt_merge=args.prompt_merge, pad_prompt=args.pad_prompt,
        backend=args.backend, rect=True if args.rect else (False if args.square else None),
        runtime=RuntimeOptions(half=args.half, precision=args.precision, intra_op_threads=args.threads))


def predict_main(argv: list[str] | None = None) -> int:
    args = predict_parser().parse_args(argv)
    try:
        return run_predict(args)
    except (YoloWorldError, NotImplementedError, ValueError, OSError) as e:
        print(f"yoloworld-predict: error: {e}", file=sys.stderr)
        return 2


def run_predict(args: argparse.Namespace) -> int:
    """Everything is written into a staging folder that becomes ``--out``'s content only when the whole
    run succeeded: a failed run leaves no ``--out`` folder and no half of its files."""
    from .detector import Detector
    from .images import VIDEO_SUFFIXES

    detector = Detector.from_settings(args.weights, args.classes, detector_settings(args))
    print(f"yoloworld-predict: {detector.describe()}")
    videos = [v for v in args.images if Path(v).suffix.lower() in VIDEO_SUFFIXES]
    sources = output_names([s for s in args.images if s not in videos])
    out = Path(args.out)
    for video in videos:  # before any work: a long video run must not end on a typo in the next name
        if not Path(video).is_file():
            raise YoloWorldError(f"video {video!r} does not exist")
        if (out / f"{Path(video).stem}.mp4").resolve() == Path(video).resolve():
            raise YoloWorldError(f"the annotated copy of {video!r} would overwrite it; choose another --out")
    records: list[dict] = []
    total = 0
    with staged_dir(out) as stage:
        for video in videos:
            frames, found = annotate_video(detector, video, stage, args.batch_size, records)
            print(f"{video}: {frames} frames, {found} detections -> {out / (Path(video).stem + '.mp4')}")
            total += found
        total += annotate_images(detector, sources, stage, args.batch_size, records, args.skip_bad)
        atomic_write_text(stage / "predictions.json", json.dumps(
            {"classes": detector.class_names, "ran": detector.ran_with(), "results": records}, indent=1))
    bad = [r for r in records if "error" in r]
    print(f"{len(sources)} images, {len(videos)} videos, {total} detections -> {out}/ (annotated images and "
          f"videos, predictions.json)" + (f"; {len(bad)} unreadable image(s) skipped:" if bad else ""))
    for r in bad[:20]:
        print(f"  {r['image']}: {r['error']}")
    return 0


def output_names(args: list[str]) -> list[tuple[str, str]]:
    """(image path, name of its annotated copy): a folder's images keep their path below the folder, so
    images of the same name in different subfolders never overwrite each other."""
    from .images import expand_sources

    pairs = []
    for arg in args:
        root = Path(arg)
        for path in expand_sources(arg):
            pairs.append((str(path), str(Path(str(path)).relative_to(root)) if root.is_dir() else root.name))
    seen: dict[str, str] = {}
    for path, name in pairs:
        if seen.setdefault(name, path) != path:
            raise YoloWorldError(f"{seen[name]} and {path} would both be written as {name}; predict them into "
                                 f"different --out folders")
    return pairs


def annotate_images(detector, sources: list[tuple[str, str]], out: Path, batch_size: int, records: list,
                    skip_bad: bool = False) -> int:
    """``out/<name>`` with each image's detections drawn; appends one record per image (with ``error`` for
    an image ``skip_bad`` let through). Returns the number of detections."""
    from tqdm import tqdm

    from .images import read_image

    total = 0
    with tqdm(total=len(sources), unit="img", disable=len(sources) < 2) as bar:
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            dets = detector.predict([p for p, _ in chunk], batch_size=batch_size, skip_bad=skip_bad)
            for (source, name), det in zip(chunk, dets, strict=True):
                record = {"image": source, **det.to_dict(), "speed_ms": det.data.get("speed_ms")}
                if "error" in det.data:
                    records.append({**record, "error": det.data["error"]})
                    continue
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(out / name), det.draw(read_image(source))):
                    raise YoloWorldError(f"cannot write the annotated copy of {source} to {out / name}")
                records.append(record)
                total += len(det)
            bar.update(len(chunk))
    return total


def annotate_video(detector, video: str, out: Path, batch_size: int, records: list) -> tuple[int, int]:
    """``out/<stem>.mp4`` (written atomically) with every frame's detections drawn, decoding overlapped
    with inference (``predict_stream``); appends one record per frame. Returns (frames, detections)."""
    from tqdm import tqdm

    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise YoloWorldError(f"cannot open video {video!r}")
    fps, count = cap.get(cv2.CAP_PROP_FPS) or 25.0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    frames = found = 0
    with atomic_path(out / f"{Path(video).stem}.mp4", suffix=".tmp.mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise YoloWorldError(f"OpenCV cannot write an mp4v video here ({tmp.name}); it needs FFmpeg")
        try:
            with tqdm(total=count or None, unit="frame", desc=Path(video).name) as bar:
                for frame, det in detector.predict_stream(video, batch_size, with_frames=True):
                    writer.write(det.draw(frame))
                    records.append({"image": det.data["source"], **det.to_dict(), "speed_ms": det.data["speed_ms"]})
                    frames, found = frames + 1, found + len(det)
                    bar.update()
        finally:
            writer.release()
    return frames, found


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-eval", description="COCO box evaluation (pycocotools) of a model "
                                "or of an existing results file.")
    p.add_argument("--ann", required=True, help="COCO annotation file (instances_val.json), an Ultralytics "
                                                "dataset YAML or a Pascal VOC folder (see --split)")
    p.add_argument("--split", default="val", help="YOLO / VOC: which split to evaluate (default val)")
    p.add_argument("--model", help="checkpoint (.pth/.pt) or exported model (.onnx)")
    p.add_argument("--images", help="image folder of the annotation file's file_name entries (YOLO / VOC: "
                                    "the dataset's own)")
    p.add_argument("--classes", help="the vocabulary to run (names or a class-text JSON); default: the model's "
                                     "own, else the dataset's category names. Classes and categories are paired "
                                     "by name; when none match, --classes is taken in the order of the category "
                                     "ids sorted ascending")
    p.add_argument("--results", help="evaluate this COCO results JSON instead of running a model")
    p.add_argument("--results-out", help="write the model's COCO results JSON here")
    p.add_argument("--json", help="write the metrics (AP, AP50, ..., ARl, per_class) here")
    p.add_argument("--evaluator", choices=["pycocotools", "faster-coco-eval"], default="pycocotools",
                   help="faster-coco-eval: the same numbers, faster on large sets (pip install faster-coco-eval)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (default 8)")
    add_detector_args(p, conf=False)  # evaluation scores every detection above 0.001, as COCO's protocol does
    return p


def eval_main(argv: list[str] | None = None) -> int:
    args = eval_parser().parse_args(argv)
    try:
        return run_eval(args)
    except (YoloWorldError, NotImplementedError, ValueError, OSError, ImportError) as e:
        print(f"yoloworld-eval: error: {e}", file=sys.stderr)
        return 2


def run_eval(args: argparse.Namespace) -> int:
    from .evaluation import STAT_NAMES, coco_evaluate, validate_results

    for target in (args.json, args.results_out):  # before the evaluation, not after
        if target:
            check_can_create(Path(target).parent)

    ann, images_dir = read_ground_truth(args.ann, args.split, args.images)
    cats = sorted(ann["categories"], key=lambda c: c["id"])
    if args.results:
        try:
            results = json.loads(Path(args.results).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise YoloWorldError(f"cannot read results file {args.results}: {e}") from None
        metrics = coco_evaluate(ann, validate_results(results, args.results), evaluator=args.evaluator)
    else:
        if not (args.model and images_dir):
            raise YoloWorldError("give --model and --images (or --results)")
        metrics = evaluate_model(args, ann, images_dir, cats)
    names = {c["id"]: c["name"] for c in cats}
    print("  ".join(f"{k} {metrics[k]:.3f}" for k in STAT_NAMES))
    for cid, ap in metrics["per_class"].items():
        label = f"  {names.get(cid, cid)!s:>24}"
        print(f"{label}  AP {ap:.3f}" if ap >= 0 else f"{label}  (no ground truth)")
    if args.json:
        out = {k: metrics[k] for k in STAT_NAMES}
        out.update({k: metrics[k] for k in ("ran", "classes") if k in metrics})
        out["per_class"] = {names.get(cid, str(cid)): ap for cid, ap in metrics["per_class"].items()}
        atomic_write_text(args.json, json.dumps(out, indent=1))
    return 0


def evaluate_model(args: argparse.Namespace, ann: dict, images_dir: str, cats: list[dict]) -> dict:
    """Run ``--model`` over the images and score it; classes paired with the categories by name (by
    position only when ``--classes`` shares no name with them). Metrics with ``ran`` and ``classes``."""
    from .detector import Detector
    from .errors import VocabularyError
    from .evaluation import evaluate_detector, pair_classes

    settings = detector_settings(args, conf=0.001)
    try:  # --classes, else the model's own vocabulary (own checkpoint or exported model)
        det = Detector.from_settings(args.model, args.classes, settings)
    except VocabularyError:
        if args.classes:
            raise
        det = Detector.from_settings(args.model, [[c["name"]] for c in cats], settings)  # the dataset's names
    pairing = pair_classes(det.class_names, [list(p) for p in det.vocabulary.prompts], cats, source=args.ann,
                           by_position=bool(args.classes))
    print(f"ran with {det.describe()}\n{pairing.describe()}")
    results, metrics = evaluate_detector(det, ann, images_dir, pairing.category_ids, args.batch_size,
                                         evaluator=args.evaluator)
    if args.results_out:
        atomic_write_text(args.results_out, json.dumps(results))
    metrics["ran"] = det.ran_with()
    metrics["classes"] = {"paired_by": "position" if pairing.by_position else "name",
                          "paired": len(pairing.paired), "unmatched_model": pairing.unmatched_model,
                          "unmatched_categories": pairing.unmatched_categories}
    return metrics


def read_ground_truth(ann: str, split: str, images: str | None) -> tuple[dict, str | None]:
    """(COCO ground truth, image folder) from a COCO JSON, or a YOLO YAML / VOC folder's ``split``."""
    from .datasets import detect_format, read_dataset

    if detect_format(ann) != "coco":
        ds = read_dataset(ann)
        if split not in ds.splits:
            raise YoloWorldError(f"{ann} has no {split!r} split (it has {sorted(ds.splits)}); pass --split")
        return ds.splits[split].coco, images or str(ds.splits[split].img_dir)
    try:
        data = json.loads(Path(ann).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise YoloWorldError(f"cannot read annotation file {ann}: {e}") from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise YoloWorldError(f"{ann}: not a COCO annotation file (needs images, annotations, categories)")
    return data, images


def data_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-data", description="Check a detection dataset (Ultralytics YAML, "
                                "Pascal VOC folder) and convert it to COCO + class-text JSON for training. "
                                "Exits 2 on what cannot be used (missing or corrupt images, bad label lines, "
                                "misspelt classes); clipped or dropped boxes and a made val split are fixed, "
                                "counted and named in the summary.")
    p.add_argument("source", help="Ultralytics dataset YAML or Pascal VOC folder")
    p.add_argument("--out", help="write OUT/annotations/<split>.json (the boxes as fixed), OUT/class_texts.json "
                                 "and OUT/data.yaml (images stay where they are)")
    p.add_argument("--class-texts", help="class-text JSON to use instead of the class names (one prompt list "
                                         "per class, in class order)")
    return p


def data_main(argv: list[str] | None = None) -> int:
    args = data_parser().parse_args(argv)
    try:
        return run_data(args)
    except (YoloWorldError, OSError) as e:
        print(f"yoloworld-data: error: {e}", file=sys.stderr)
        return 2


def run_data(args: argparse.Namespace) -> int:
    """The check (``sdk.datacheck``) and its summary, then the COCO files with ``--out``."""
    from .datasets import read_dataset
    from .vocabulary import read_class_texts

    if args.out:
        check_can_create(args.out)
    ds = read_dataset(args.source)
    texts = read_class_texts(args.class_texts) if args.class_texts else None
    if texts is not None and len(texts) != len(ds.class_names):
        raise YoloWorldError(f"{args.class_texts} lists {len(texts)} classes but {args.source} has "
                             f"{len(ds.class_names)} ({ds.class_names[:10]}...)")
    print(ds.describe())
    if args.out:
        from .datasets import write_coco

        print(f"wrote {write_coco(ds, args.out, texts)} (train with: python -m training.finetune --data it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(predict_main())
