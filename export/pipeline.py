"""The export pipeline as one library call: ``export_artifact(model, vocabulary, output, ExportOptions)``.

``yoloworld-export`` (``export.main``) is argparse -> :class:`ExportOptions` -> this call; benchmarks and
tests call it directly. One call writes one artifact (and what it needs beside it):

- ``engine="onnx"``: ``output`` (``.onnx``) and its sidecar; fp16 / int8 also keep the float32
  reference they were made from (``<stem>.fp32.onnx``) and print their agreement with it;
- ``engine="trt"``: the ONNX beside ``output`` (``<stem>.onnx``), then the TensorRT engine ``output``;
- ``engine="triton"``: a model repository in the folder ``output``.

A failed call removes every file it created (nothing half-made).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sdk.manifest import Manifest, NmsSettings, OutputForm, Precision, read_manifest
from sdk.model import YoloWorld
from sdk.vocabulary import Vocabulary

from .precision import DEFAULT_FLOAT_INT8, DEFAULT_FLOAT_OUTPUTS, DEFAULT_INT8_OPS
from .verify import DEFAULT_TOLERANCE, ExportError, Tolerance

Engine = Literal["onnx", "trt", "triton"]


@dataclass(frozen=True)
class ExportOptions:
    """How to export (``yoloworld-export``'s options; see the README's Export section)."""

    engine: Engine = "onnx"
    output_form: OutputForm | None = None  # None: trt_nms for engine="trt", else raw
    precision: Precision = "fp32"
    imgsz: int = 640
    opset: int = 17
    max_batch: int = 32  # largest batch of the dynamic axis
    opt_batch: int = 8  # TensorRT profile's optimal batch
    dynamic_batch: bool = True
    # dynamic height and width (the minimal-padding letterbox); None: on for ONNX, off for TensorRT and
    # Triton, whose engines are built for the square input
    dynamic_hw: bool | None = None
    simplify: bool = True
    nms: NmsSettings = field(default_factory=NmsSettings)  # recorded; applied in the graph by NMS forms
    calib_images: str | None = None  # int8: representative images
    calib_cache: str | None = None
    # int8 activations: "int8" symmetric (what TensorRT needs) or "uint8"; None: uint8 for ONNX (OpenVINO on an
    # AVX512-VNNI CPU lost 8 mAP50:95 points with int8 activations and none with uint8; ONNX Runtime's x86
    # kernels run uint8 fastest), int8 for TensorRT and Triton
    int8_activations: Literal["int8", "uint8"] | None = None
    # int8: what stays float (export.precision.select_nodes selectors); None: DEFAULT_FLOAT_INT8
    int8_keep_float: tuple[str, ...] | None = None
    # int8: op types quantized; None: every type ONNX Runtime can quantize (before issue 23)
    int8_op_types: tuple[str, ...] | None = DEFAULT_INT8_OPS
    # int8: op types whose outputs stay float (no Q/DQ pair); (): every output quantized (before this default)
    int8_float_outputs: tuple[str, ...] = DEFAULT_FLOAT_OUTPUTS
    open_vocab: bool = False  # keep the vocabulary an input (and export the text encoder)
    capacity: int = 80  # vocabulary slots of an open-vocabulary export
    workspace_gib: float = 4.0
    cache_dir: str | None = None  # TensorRT engine cache
    tolerance: Tolerance | None = DEFAULT_TOLERANCE  # the self-check's bounds; None skips it (warning)

    @property
    def form(self) -> OutputForm:
        return self.output_form or ("trt_nms" if self.engine == "trt" else "raw")

    @property
    def activations(self) -> Literal["int8", "uint8"]:
        return self.int8_activations or ("uint8" if self.engine == "onnx" else "int8")

    @property
    def hw_dynamic(self) -> bool:
        return self.engine == "onnx" if self.dynamic_hw is None else self.dynamic_hw


def onnx_path_for(output: Path, engine: Engine) -> Path:
    """Where the ONNX model goes: ``output`` itself, beside the engine, or beside the repository."""
    if engine == "onnx":
        return output
    return output.with_suffix(".onnx") if engine == "trt" else output.parent / f"{output.name}.build.onnx"


def check_options(output: Path, options: ExportOptions) -> None:
    """Everything that can be refused before any export work, refused with the reason."""
    from sdk.atomic import check_can_create

    if options.engine != "onnx" and options.int8_activations == "uint8":
        raise ValueError(f"--engine {options.engine} needs symmetric int8 activations (--int8-activations int8)")
    if options.engine == "onnx" and output.suffix.lower() != ".onnx":
        raise ValueError(f"--output {output}: expected a .onnx path for --engine onnx")
    if options.engine == "trt" and output.suffix.lower() not in (".engine", ".plan"):
        raise ValueError(f"--output {output}: expected a .engine or .plan path for --engine trt")
    folder = output if options.engine == "triton" else output.parent
    if options.engine != "triton" and not folder.is_dir():
        raise ValueError(f"--output {output}: folder {folder} does not exist")
    check_can_create(folder)
    if options.engine == "trt":
        from .tensorrt import import_tensorrt

        import_tensorrt()  # a clear message before minutes of work
    if options.precision == "int8" and not options.calib_images:
        raise ValueError("--precision int8 needs --calib-images DIR (representative images of your data)")
    if options.hw_dynamic and options.engine != "onnx":
        raise ValueError(f"dynamic height and width are for --engine onnx; --engine {options.engine} builds for "
                         f"the square {options.imgsz}x{options.imgsz} input")
    if options.open_vocab and (options.precision != "fp32" or options.form != "raw"):
        raise ValueError("--open-vocab exports fp32 and the raw output form only")


def export_artifact(model: YoloWorld, vocabulary: Vocabulary | None, output: str | os.PathLike,
                    options: ExportOptions = ExportOptions(), text_embeds: np.ndarray | None = None,
                    source_sha256: str = "", log: Any = print) -> Manifest:
    """Export ``model`` with ``vocabulary`` folded in (``text_embeds`` ``(P, D)``: its model texts'
    embeddings; default: encoded by the model) to ``output`` (see the module docstring). Open-vocabulary
    exports take no vocabulary. Returns the artifact's manifest."""
    from sdk.atomic import removed_on_failure

    output = Path(output)
    check_options(output, options)
    onnx_path = onnx_path_for(output, options.engine)
    reference = onnx_path.with_name(onnx_path.stem + ".fp32.onnx")
    created = [onnx_path, reference, onnx_path.with_name(onnx_path.stem + ".raw.onnx")]
    created += [Path(f"{p}.json") for p in created]
    created += [output, output.with_suffix(".timing.cache"), onnx_path.with_name(onnx_path.stem + ".text_encoder.onnx")]
    with removed_on_failure(*created):
        manifest = _export_onnx_form(model, vocabulary, onnx_path, reference, options, text_embeds, source_sha256, log)
        if options.engine == "trt":
            from .tensorrt import build_engine

            max_batch = options.max_batch if options.dynamic_batch else 1
            build_engine(onnx_path, output, 1, min(options.opt_batch, max_batch), max_batch,
                         workspace_gib=options.workspace_gib, timing_cache=output.with_suffix(".timing.cache"),
                         cache_dir=Path(options.cache_dir) if options.cache_dir else None)
            manifest = read_manifest(output)
        elif options.engine == "triton":
            from .triton import write_triton_repository

            model_dir = write_triton_repository(onnx_path, output, max_batch=manifest.max_batch)
            onnx_path.unlink()  # the repository holds its own copy
            Path(f"{onnx_path}.json").unlink(missing_ok=True)
            log(f"Triton model repository: {model_dir} (serve with: tritonserver --model-repository {output})")
    return manifest


def _export_onnx_form(model: YoloWorld, vocabulary: Vocabulary | None, onnx_path: Path, reference: Path,
                      options: ExportOptions, text_embeds: np.ndarray | None, source_sha256: str, log: Any
                      ) -> Manifest:
    from .onnx_export import export_onnx

    common: dict[str, Any] = dict(imgsz=options.imgsz, opset=options.opset, dynamic_batch=options.dynamic_batch,
                                  max_batch=options.max_batch, simplify=options.simplify, source_sha256=source_sha256,
                                  dynamic_hw=options.hw_dynamic,
                                  nms=options.nms, tolerance=options.tolerance, log=log)
    if options.open_vocab:
        from .open_vocab import export_open_vocab

        return export_open_vocab(model, onnx_path, capacity=options.capacity, **common)
    if vocabulary is None:
        raise ExportError("a fixed-vocabulary export needs a vocabulary (or options.open_vocab)")
    if text_embeds is None:
        from sdk.backends.torch import encode_texts

        text_embeds = vocabulary.embeddings(lambda texts: encode_texts(model, None, texts))
    if options.precision == "fp32":
        return export_onnx(model, vocabulary, text_embeds, onnx_path, output_form=options.form, **common)
    export_onnx(model, vocabulary, text_embeds, reference, output_form="raw", **common)
    return convert_precision(reference, onnx_path, options, log)


def convert_precision(reference: Path, dst: Path, options: ExportOptions, log: Any = print) -> Manifest:
    """fp16 / int8 ``dst`` from the fp32 raw ``reference``; NMS (if any) appended after conversion; the
    agreement with fp32 on the calibration images (or generated ones) logged and recorded."""
    import onnx

    from sdk.images import expand_sources, load

    from .agreement import agreement
    from .nms_graph import append_nms
    from .onnx_export import save_onnx
    from .precision import convert_fp16, copy_manifest
    from .quantize import quantize_int8
    from .verify import check_images

    form = options.form
    raw = dst if form == "raw" else dst.with_name(dst.stem + ".raw.onnx")
    if options.precision == "fp16":
        convert_fp16(reference, raw)
        extra: dict[str, Any] = {}
    else:
        keep = DEFAULT_FLOAT_INT8 if options.int8_keep_float is None else options.int8_keep_float
        info = quantize_int8(reference, raw, options.calib_images, options.imgsz, cache=options.calib_cache,
                             activations=options.activations, op_types=options.int8_op_types,
                             float_outputs=options.int8_float_outputs, keep_float=keep)
        extra = {"calibration": {k: v for k, v in (info or {}).items() if isinstance(v, (int, float, str))}}
    copy_manifest(reference, raw, options.precision, extra)
    if options.calib_images:
        images = [load(s, i)[0] for i, s in enumerate(expand_sources(options.calib_images)[:32])]
    else:
        images = [(img.transpose(1, 2, 0)[..., ::-1] * 255).astype("uint8") for img in check_images(options.imgsz)]
    report = agreement(reference, raw, images, options.imgsz, conf=options.nms.conf, iou=options.nms.iou)
    log(f"{options.precision} vs fp32 on {len(images)} images: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
    if form == "raw":
        return read_manifest(raw)
    manifest = read_manifest(raw)
    proto = append_nms(onnx.load(str(raw)), options.nms, form)
    manifest = dataclasses.replace(manifest, output_form=form, output_names=tuple(o.name for o in proto.graph.output))
    save_onnx(proto, manifest, dst)
    raw.unlink()
    Path(f"{raw}.json").unlink(missing_ok=True)
    return manifest


__all__ = ["Engine", "ExportOptions", "Precision", "check_options", "convert_precision", "export_artifact",
           "onnx_path_for"]
