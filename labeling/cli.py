"""``yoloworld-label``: label an image collection for training, in this process or on a Ray cluster."""

from __future__ import annotations

import argparse
import signal
import sys

from sdk.errors import YoloWorldError

from .termination import Terminated


def label_parser() -> argparse.ArgumentParser:
    from sdk.cli import add_detector_args

    p = argparse.ArgumentParser(
        prog="yoloworld-label", description="Label an image collection with text prompts: COCO or YOLO training "
        "data for python -m training.finetune --data. Resumable: a rerun labels only what is missing.")
    p.add_argument("sources", nargs="+", help="image folders (searched recursively), image files, or manifests "
                                              "(.txt: one path per line; .parquet: a 'path' column)")
    p.add_argument("--weights", required=True, help="checkpoint (.pth/.pt) or export (.onnx/.engine)")
    p.add_argument("--classes", help='"person,car" or a class-text JSON; default: the model\'s vocabulary')
    p.add_argument("--out", required=True, help="output folder (results are kept in OUT/shards for reruns)")
    p.add_argument("--format", choices=("coco", "yolo"), default="coco",
                   help="label files written: COCO JSON or YOLO txt, each with a data.yaml (default coco)")
    p.add_argument("--conf", default="0.25", help='score threshold: "0.25", or per class "person=0.3,car=0.4" '
                                                  '(others 0.25), or both "0.2,person=0.3"')
    p.add_argument("--min-size", type=float, default=2.0, help="smallest box side kept, pixels (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of images (chosen by a hash of the path) written as the val split")
    p.add_argument("--key", choices=("stat", "hash"), default="stat",
                   help="what marks an image as changed since its result: size and mtime, or a sha256 of it")
    add_ray_args(p, "run on Ray Data", "actor")
    p.add_argument("--shard-size", type=int, default=1000, help="results per shard file (also every 30 s)")
    p.add_argument("--stall-timeout", type=float, default=300.0,
                   help="Ray: stop when no image finished for this many seconds (0: never)")
    p.add_argument("--contact-sheet", type=int, default=16, help="images in contact_sheet.png (0: none)")
    add_detector_args(p, conf=False)  # --conf above: per class
    return p


def add_ray_args(p: argparse.ArgumentParser, what: str, unit: str) -> None:
    """``--ray [ADDRESS]``, ``--<unit>s``, ``--num-cpus``, ``--num-gpus``: where Ray runs the model copies and
    how :func:`labeling.engine.plan_actors` sizes them (``yoloworld-label``'s actors, ``yoloworld-serve``'s
    replicas)."""
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help=f"{what}: a new local Ray, or the cluster at ADDRESS (auto, ray://head:10001)")
    p.add_argument(f"--{unit}s", type=int, help=f"Ray: {'model ' if unit == 'actor' else ''}{unit}s (default: one "
                                                f"per GPU share, else one per 4 CPUs)")
    p.add_argument("--num-cpus", type=float, help=f"Ray: CPUs per {unit} (default: sized from the cluster)")
    p.add_argument("--num-gpus", type=float, default=0.0, help=f"Ray: GPUs per {unit} (e.g. 1, or 0.5 to share)")


def parse_conf(text: str) -> tuple[tuple[str, float], ...]:
    """``"0.2,person=0.3"`` -> ``(("*", 0.2), ("person", 0.3))``."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, value = item.rpartition("=")
        try:
            out.append((name.strip() or "*", float(value)))
        except ValueError:
            raise YoloWorldError(f"--conf {item!r}: expected a number or class=number") from None
    return tuple(out) or (("*", 0.25),)


def label_main(argv: list[str] | None = None) -> int:
    args = label_parser().parse_args(argv)
    try:
        run_label(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): the results received are in shards
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"yoloworld-label: {how}; the results so far are kept in {args.out}/shards, rerun the same "
              f"command to continue", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    except (YoloWorldError, ValueError, OSError) as e:
        print(f"yoloworld-label: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_label(args: argparse.Namespace) -> dict:
    from sdk.cli import detector_settings
    from sdk.vocabulary import Vocabulary

    from .run import LabelJob, label_collection
    from .worker import LabelSettings

    if not 0.0 <= args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    classes = Vocabulary.from_any(args.classes).prompts if args.classes else None
    conf = parse_conf(args.conf)
    # the detector's score floor: label_collection replaces it with the lowest of the class thresholds
    settings = LabelSettings(args.weights, classes, detector_settings(args, conf=0.25), args.batch_size)
    job = LabelJob(tuple(args.sources), args.out, settings, conf, args.min_size, args.format,
                   args.val_fraction, args.key, args.ray, args.actors, args.num_cpus, args.num_gpus, args.threads,
                   args.shard_size, args.stall_timeout or None, args.contact_sheet)
    return label_collection(job)
