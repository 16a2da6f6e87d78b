"""``yoloworld-export``: fold a vocabulary into a checkpoint; write ONNX, TensorRT or Triton artifacts.

    yoloworld-export --weights best.pt --engine onnx --output model.onnx
    yoloworld-export --weights W.pth --classes texts.json --engine trt --output model.engine \\
        --precision fp16 --output-form nms
    yoloworld-export --weights W.pth --classes "a,b" --engine onnx --precision int8 --calib-images imgs/ \\
        --output model.int8.onnx
    yoloworld-export --weights W.pth --open-vocab --capacity 128 --output model_ov.onnx
    yoloworld-export --weights W.pth --engine triton --output model_repository/
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from sdk.cli import IMGSZ_HELP, plain
from sdk.errors import YoloWorldError
from sdk.facts import OFFICIAL_IMGSZ, ModelFacts, resolve_imgsz, resolve_vocabulary
from sdk.manifest import NmsSettings

from .pipeline import ExportOptions, check_options, export_artifact
from .verify import DEFAULT_TOLERANCE


def parser() -> argparse.ArgumentParser:
    summary, examples = __doc__.split("\n\n")[:2]
    p = argparse.ArgumentParser(prog="yoloworld-export", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=plain(summary) + "\n\n" + examples)
    p.add_argument("--weights", required=True, help="official .pth or own .pt checkpoint")
    p.add_argument("--classes", help='"person,car" or a class-text JSON; default: the checkpoint\'s vocabulary')
    p.add_argument("--engine", choices=("onnx", "trt", "triton"), default="onnx",
                   help="artifact: an ONNX model, a TensorRT engine, or a Triton model repository (default onnx)")
    p.add_argument("--output", required=True,
                   help="model.onnx (onnx), model.engine (trt) or a repository folder (triton)")
    p.add_argument("--output-form", choices=("raw", "nms", "trt_nms"), default=None,
                   help="raw: scores+boxes, NMS on the host (default for onnx); nms: ONNX NonMaxSuppression "
                        "in the graph; trt_nms: TensorRT's EfficientNMS_TRT plugin (default for trt)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="weights and compute precision (int8: calibrated on --calib-images; default fp32)")
    p.add_argument("--calib-images", help="folder of representative images for --precision int8")
    p.add_argument("--calib-cache", help="calibration cache file (reused when it matches)")
    p.add_argument("--int8-activations", choices=("int8", "uint8"),
                   help="int8: symmetric, what TensorRT needs (the default for --engine trt/triton); uint8: what "
                        "OpenVINO and ONNX Runtime run accurately and fast on x86 (the default for --engine onnx)")
    p.add_argument("--imgsz", type=int, default=None, help=IMGSZ_HELP)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--batch", type=int, default=32, help="largest batch the artifact accepts (dynamic axis)")
    p.add_argument("--opt-batch", type=int, default=8, help="TensorRT profile's optimal batch")
    p.add_argument("--static-batch", action="store_true", help="fixed batch 1 instead of a dynamic axis")
    p.add_argument("--static-shape", action="store_true",
                   help="fixed imgsz x imgsz input (the official square letterbox only); default for onnx: dynamic "
                        "height and width, so each image is padded to the smallest multiple of 32 (rect)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim's graph simplification")
    p.add_argument("--prompt-merge", choices=("first", "mean", "max"), default="first",
                   help="classes with several prompts: the first prompt's embedding (official), their mean, "
                        "or the best-scoring prompt (default first)")
    p.add_argument("--pad-prompt", action="store_true", help="append the official demo's ' ' prompt")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (recorded; applied in-graph by NMS forms)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (recorded; default 0.7, official)")
    p.add_argument("--max-det", type=int, default=300, help="most boxes kept per image (recorded; default 300)")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS (one label per object)")
    p.add_argument("--open-vocab", action="store_true",
                   help="keep the vocabulary an input (text_embeds + text_mask) and export the text encoder too")
    p.add_argument("--capacity", type=int, default=80, help="vocabulary slots of an --open-vocab model")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="TensorRT builder workspace")
    p.add_argument("--cache-dir", help="TensorRT engine cache (reused when model, GPU, version, precision, "
                                       "profile match)")
    p.add_argument("--verify-tolerance", type=float, default=1.0, metavar="K",
                   help="scale the self-check's bounds (ONNX Runtime vs PyTorch, relative to the scores' logit "
                        "scale and the box sizes) by K; the measured differences go into the manifest")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the self-check (a warning is printed and the manifest records it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (YoloWorldError, ValueError, OSError) as e:
        print(f"yoloworld-export: error: {e}", file=sys.stderr)
        return 2


def options_from(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        engine=args.engine, output_form=args.output_form, precision=args.precision,
        imgsz=args.imgsz or OFFICIAL_IMGSZ,  # provisional when unset: run() takes the checkpoint's
        opset=args.opset, max_batch=args.batch, opt_batch=args.opt_batch, dynamic_batch=not args.static_batch,
        dynamic_hw=False if args.static_shape else None,
        simplify=not args.no_simplify, nms=NmsSettings(args.conf, args.iou, args.max_det, args.agnostic),
        calib_images=args.calib_images, calib_cache=args.calib_cache, int8_activations=args.int8_activations,
        open_vocab=args.open_vocab, capacity=args.capacity, workspace_gib=args.workspace_gib,
        cache_dir=args.cache_dir,
        tolerance=None if args.no_verify else DEFAULT_TOLERANCE.scaled(args.verify_tolerance))


def run(args: argparse.Namespace) -> int:
    """argparse -> :class:`ExportOptions`; the checkpoint and its vocabulary; one ``export_artifact`` call."""
    from sdk.backends.torch import encode_texts
    from sdk.manifest import file_sha256
    from sdk.model.checkpoint import load_checkpoint_with_meta

    t0 = time.perf_counter()
    options = options_from(args)
    check_options(Path(args.output), options)  # before the checkpoint is even read
    model, meta = load_checkpoint_with_meta(args.weights)
    facts = ModelFacts(vocabulary=meta.get("vocabulary"), imgsz=meta.get("imgsz"), class_names=meta.get("class_names"))
    # the size the checkpoint was trained at unless --imgsz says otherwise (official releases: 640)
    imgsz, imgsz_from = resolve_imgsz(args.imgsz, args.weights, facts)
    options = dataclasses.replace(options, imgsz=imgsz)
    vocab, emb = None, None
    if not options.open_vocab:
        # as Detector resolves it: --classes, else the checkpoint's vocabulary under its class names
        vocab = resolve_vocabulary(args.classes, args.weights, facts, args.prompt_merge, args.pad_prompt)
        emb = vocab.embeddings(lambda texts: encode_texts(model, meta.get("text_embeddings"), texts))
    print(f"yoloworld-export: imgsz {imgsz} ({imgsz_from}), "
          + ("open vocabulary" if vocab is None else f"{len(vocab)} classes: {vocab.names[:8]}"))
    export_artifact(model, vocab, args.output, options, emb, source_sha256=file_sha256(args.weights))
    print(f"done in {time.perf_counter() - t0:.1f} s: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
