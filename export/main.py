"""``yoloworld-export``: fold a vocabulary into a checkpoint and write ONNX (and TensorRT) artifacts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdk.errors import YoloWorldError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-export", description=__doc__.splitlines()[0].strip("`"))
    p.add_argument("--weights", required=True, help="official .pth or own .pt checkpoint")
    p.add_argument("--classes", help='"person,car" or a class-text JSON; default: the checkpoint\'s vocabulary')
    p.add_argument("--engine", choices=("onnx", "trt"), default="onnx")
    p.add_argument("--output", required=True, help="artifact path (model.onnx / model.engine)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--batch", type=int, default=32, help="largest batch the artifact claims (dynamic axis)")
    p.add_argument("--static-batch", action="store_true", help="fixed batch 1 instead of a dynamic axis")
    p.add_argument("--no-simplify", action="store_true")
    p.add_argument("--prompt-merge", choices=("first", "mean", "max"), default="first")
    p.add_argument("--pad-prompt", action="store_true", help="append the official demo's ' ' prompt")
    p.add_argument("--conf", type=float, default=0.25, help="recorded default / in-graph NMS setting")
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--agnostic", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (YoloWorldError, ValueError, OSError) as e:
        print(f"yoloworld-export: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from sdk.backends.torch import encode_texts
    from sdk.errors import VocabularyError
    from sdk.manifest import NmsSettings
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary

    from .onnx_export import export_onnx, file_sha256

    if args.engine == "trt":
        raise YoloWorldError("--engine trt: the TensorRT builder is not implemented yet; use --engine onnx")
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--output {out}: expected a .onnx path for --engine onnx")
    if not out.parent.exists() or not out.parent.is_dir():
        raise ValueError(f"--output {out}: folder {out.parent} does not exist")
    model, meta = load_checkpoint_with_meta(args.weights)
    classes = args.classes or meta.get("vocabulary")
    if not classes:
        raise VocabularyError(f"{args.weights} stores no vocabulary; pass --classes")
    vocab = Vocabulary.from_any(classes, args.prompt_merge, args.pad_prompt)
    emb = vocab.embeddings(lambda texts: encode_texts(model, meta.get("text_embeddings"), texts))
    export_onnx(model, vocab, emb, out, imgsz=args.imgsz, opset=args.opset, dynamic_batch=not args.static_batch,
                max_batch=args.batch, simplify=not args.no_simplify, source_sha256=file_sha256(args.weights),
                nms=NmsSettings(args.conf, args.iou, args.max_det, args.agnostic))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
