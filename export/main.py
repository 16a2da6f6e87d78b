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
from typing import Any

from sdk.errors import YoloWorldError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-export", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=__doc__.split("\n\n")[0].strip("`") + "\n\n" + __doc__.split("\n\n")[1])
    p.add_argument("--weights", required=True, help="official .pth or own .pt checkpoint")
    p.add_argument("--classes", help='"person,car" or a class-text JSON; default: the checkpoint\'s vocabulary')
    p.add_argument("--engine", choices=("onnx", "trt", "triton"), default="onnx")
    p.add_argument("--output", required=True,
                   help="model.onnx (onnx), model.engine (trt) or a repository folder (triton)")
    p.add_argument("--output-form", choices=("raw", "nms", "trt_nms"), default=None,
                   help="raw: scores+boxes, NMS on the host (default for onnx); nms: ONNX NonMaxSuppression "
                        "in the graph; trt_nms: TensorRT's EfficientNMS_TRT plugin (default for trt)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--calib-images", help="folder of representative images for --precision int8")
    p.add_argument("--calib-cache", help="calibration cache file (reused when it matches)")
    p.add_argument("--int8-activations", choices=("int8", "uint8"), default="int8",
                   help="int8: symmetric, what TensorRT needs; uint8: what ONNX Runtime's x86 kernels run fast")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--batch", type=int, default=32, help="largest batch the artifact accepts (dynamic axis)")
    p.add_argument("--opt-batch", type=int, default=8, help="TensorRT profile's optimal batch")
    p.add_argument("--static-batch", action="store_true", help="fixed batch 1 instead of a dynamic axis")
    p.add_argument("--no-simplify", action="store_true")
    p.add_argument("--prompt-merge", choices=("first", "mean", "max"), default="first")
    p.add_argument("--pad-prompt", action="store_true", help="append the official demo's ' ' prompt")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (recorded; applied in-graph by NMS forms)")
    p.add_argument("--iou", type=float, default=0.7)
    p.add_argument("--max-det", type=int, default=300)
    p.add_argument("--agnostic", action="store_true")
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


def run(args: argparse.Namespace) -> int:
    """Validate, then export; a failure removes every file this run created (nothing half-made)."""
    from sdk.atomic import removed_on_failure

    out = Path(args.output)
    onnx_path = out if args.engine == "onnx" else (out.with_suffix(".onnx") if args.engine == "trt"
                                                   else out.parent / f"{out.name}.build.onnx")
    reference = onnx_path.with_name(onnx_path.stem + ".fp32.onnx")
    created = [onnx_path, reference, onnx_path.with_name(onnx_path.stem + ".raw.onnx")]
    created += [Path(f"{p}.json") for p in created]
    created += [out, out.with_suffix(".timing.cache"), onnx_path.with_name(onnx_path.stem + ".text_encoder.onnx")]
    with removed_on_failure(*created):
        return _run(args, out, onnx_path, reference)


def _run(args: argparse.Namespace, out: Path, onnx_path: Path, reference: Path) -> int:
    from sdk.atomic import check_can_create
    from sdk.backends.torch import encode_texts
    from sdk.errors import VocabularyError
    from sdk.manifest import NmsSettings, read_manifest
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary

    from .onnx_export import export_onnx, file_sha256
    from .verify import DEFAULT_TOLERANCE

    t0 = time.perf_counter()
    form = args.output_form or ("trt_nms" if args.engine == "trt" else "raw")
    if args.engine == "onnx" and out.suffix.lower() != ".onnx":
        raise ValueError(f"--output {out}: expected a .onnx path for --engine onnx")
    if args.engine == "trt" and out.suffix.lower() not in (".engine", ".plan"):
        raise ValueError(f"--output {out}: expected a .engine or .plan path for --engine trt")
    folder = out if args.engine == "triton" else out.parent
    if args.engine != "triton" and not folder.is_dir():
        raise ValueError(f"--output {out}: folder {folder} does not exist")
    check_can_create(folder)  # before minutes of export work
    if args.engine == "trt":
        from .tensorrt import import_tensorrt

        import_tensorrt()  # fails fast, before any export work, with a clear message
    if args.precision == "int8" and not args.calib_images:
        raise ValueError("--precision int8 needs --calib-images DIR (representative images of your data)")
    tolerance = None if args.no_verify else DEFAULT_TOLERANCE.scaled(args.verify_tolerance)
    model, meta = load_checkpoint_with_meta(args.weights)
    source = file_sha256(args.weights)
    nms = NmsSettings(args.conf, args.iou, args.max_det, args.agnostic)
    common: dict[str, Any] = dict(imgsz=args.imgsz, opset=args.opset, dynamic_batch=not args.static_batch,
                                  max_batch=args.batch, simplify=not args.no_simplify, source_sha256=source, nms=nms,
                                  tolerance=tolerance)
    if args.open_vocab:
        if args.precision != "fp32" or form != "raw":
            raise ValueError("--open-vocab exports fp32 and the raw output form only")
        from .open_vocab import export_open_vocab

        export_open_vocab(model, onnx_path, capacity=args.capacity, **common)
    else:
        classes = args.classes or meta.get("vocabulary")
        if not classes:
            raise VocabularyError(f"{args.weights} stores no vocabulary; pass --classes")
        vocab = Vocabulary.from_any(classes, args.prompt_merge, args.pad_prompt)
        emb = vocab.embeddings(lambda texts: encode_texts(model, meta.get("text_embeddings"), texts))
        if args.precision == "fp32":
            export_onnx(model, vocab, emb, onnx_path, output_form=form, **common)
        else:
            export_onnx(model, vocab, emb, reference, output_form="raw", **common)
            _convert_precision(args, reference, onnx_path, form, nms)
    if args.engine == "trt":
        from .tensorrt import build_engine

        build_engine(onnx_path, out, 1, min(args.opt_batch, args.batch), args.batch if not args.static_batch else 1,
                     workspace_gib=args.workspace_gib, timing_cache=out.with_suffix(".timing.cache"),
                     cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    elif args.engine == "triton":
        from .triton import write_triton_repository

        model_dir = write_triton_repository(onnx_path, out, max_batch=read_manifest(onnx_path).max_batch)
        onnx_path.unlink()  # the repository holds its own copy
        Path(f"{onnx_path}.json").unlink(missing_ok=True)
        print(f"Triton model repository: {model_dir} (serve with: tritonserver --model-repository {out})")
    print(f"done in {time.perf_counter() - t0:.1f} s: {out}")
    return 0


def _convert_precision(args: argparse.Namespace, reference: Path, dst: Path, form: str, nms: Any) -> None:
    """fp16 / int8 from the fp32 raw ``reference``; NMS (if any) appended after conversion; report the
    agreement with fp32 on the calibration images (or generated ones)."""
    import onnx

    from sdk.images import expand_sources, load
    from sdk.manifest import read_manifest

    from .nms_graph import append_nms
    from .onnx_export import save_onnx
    from .precision import agreement, convert_fp16, copy_manifest, quantize_int8
    from .verify import check_images

    raw = dst if form == "raw" else dst.with_name(dst.stem + ".raw.onnx")
    if args.precision == "fp16":
        convert_fp16(reference, raw)
        extra: dict[str, Any] = {}
    else:
        info = quantize_int8(reference, raw, args.calib_images, args.imgsz, cache=args.calib_cache,
                             activations=args.int8_activations)
        extra = {"calibration": {k: v for k, v in (info or {}).items() if isinstance(v, (int, float, str))}}
    copy_manifest(reference, raw, args.precision, extra)
    if args.calib_images:
        images = [load(s, i)[0] for i, s in enumerate(expand_sources(args.calib_images)[:32])]
    else:
        images = [(img.transpose(1, 2, 0)[..., ::-1] * 255).astype("uint8") for img in check_images(args.imgsz)]
    report = agreement(reference, raw, images, args.imgsz, conf=args.conf, iou=args.iou)
    print(f"{args.precision} vs fp32 on {len(images)} images: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
    if form != "raw":
        manifest = read_manifest(raw)
        proto = append_nms(onnx.load(str(raw)), nms, form)
        manifest = dataclasses.replace(manifest, output_form=form,
                                       output_names=tuple(o.name for o in proto.graph.output))
        save_onnx(proto, manifest, dst)
        raw.unlink()
        Path(f"{raw}.json").unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
