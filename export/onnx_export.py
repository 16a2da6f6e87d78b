"""Fold, export to ONNX, simplify, describe, verify against PyTorch with ONNX Runtime."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sdk
from sdk.manifest import Manifest, NmsSettings, OutputForm, file_sha256
from sdk.model import YoloWorld
from sdk.vocabulary import Vocabulary

from .artifact import save_onnx
from .deploy import DeployModel
from .verify import DEFAULT_TOLERANCE, Agreement, ExportError, Tolerance, check_images, compare_raw, require, skipped

VERIFIED_ON = "ONNX Runtime (CPUExecutionProvider, float32) vs PyTorch (float32) on generated check images"


def class_columns(vocab: Vocabulary) -> tuple[list[list[int]], int]:
    """Model text columns per class for ``vocab`` (see ``DeployModel``), and the column count."""
    if vocab.merge == "max":
        cols, start = [], 0
        for p in vocab.prompts:
            cols.append(list(range(start, start + len(p))))
            start += len(p)
    else:
        cols = [[i] for i in range(len(vocab))]
    return cols, len(vocab.model_texts())


def embedding_sha256(emb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(emb, dtype=np.float32).tobytes()).hexdigest()


def simplify_and_check(proto: Any, simplify: bool, log: Any = print) -> Any:
    """onnxslim (a failure keeps the valid original), then refuse ops deployments choke on."""
    if simplify:
        try:
            import onnxslim

            proto = onnxslim.slim(proto)
            log(f"simplified with onnxslim ({len(proto.graph.node)} nodes)")
        except Exception as e:  # a failed simplification keeps the valid original
            log(f"onnxslim failed, keeping the unsimplified graph: {e}")
    bad = sorted({n.op_type for n in proto.graph.node if n.op_type in ("Einsum", "ATen")})
    if bad:
        raise ExportError(f"the graph contains unsupported ops {bad}")
    return proto


def build_deploy_model(model: YoloWorld, vocab: Vocabulary, text_embeds: np.ndarray, imgsz: int,
                       dynamic_hw: bool = False) -> DeployModel:
    folded = model.fold_text_embeddings(torch.from_numpy(text_embeds), fuse_bn=True)
    cols, ncols = class_columns(vocab)
    return DeployModel(folded, imgsz, model.config.reg_max, cols, ncols, dynamic_hw).eval()


def export_onnx(model: YoloWorld, vocab: Vocabulary, text_embeds: np.ndarray, path: str | os.PathLike,
                imgsz: int = 640, opset: int = 17, dynamic_batch: bool = True, max_batch: int = 32,
                simplify: bool = True, source_sha256: str = "", nms: NmsSettings | None = None,
                verify_batches: tuple[int, ...] = (1, 2), log: Any = print, output_form: OutputForm = "raw",
                tolerance: Tolerance | None = DEFAULT_TOLERANCE, dynamic_hw: bool = False) -> Manifest:
    """Check the graph with ONNX Runtime against PyTorch at ``verify_batches`` under ``tolerance``
    (``None``: skip, with a warning), then write ``path`` and its ``.json`` sidecar atomically. The
    manifest records the measured differences (``extra["verification"]``).

    ``output_form``: ``"raw"`` (``scores``, ``boxes``), or NMS in the graph with ``nms``'s settings
    (``export.nms_graph``): ``"nms"`` (standard ONNX ops; verified against the host NMS on the same
    raw tensors) or ``"trt_nms"`` (TensorRT's EfficientNMS plugin; ONNX Runtime cannot run it, so only
    the raw graph under it is verified).

    ``dynamic_hw``: height and width are dynamic too (any multiples of 32 up to ``imgsz``, for the
    minimal-padding letterbox); the self-check then also runs a non-square input."""
    import onnx

    if output_form not in ("raw", "nms", "trt_nms"):
        raise ExportError(f"output_form must be 'raw', 'nms' or 'trt_nms', got {output_form!r}")
    if imgsz % 32:
        raise ExportError(f"imgsz must be a multiple of 32, got {imgsz}")
    path = Path(path)
    t0 = time.perf_counter()
    deploy = build_deploy_model(model.float().cpu().eval(), vocab, text_embeds, imgsz, dynamic_hw)
    log(f"folded {len(vocab.model_texts())} text embeddings into the head ({time.perf_counter() - t0:.1f} s)")
    raw_proto = simplify_and_check(trace_deploy(deploy, imgsz, opset, dynamic_batch, log, dynamic_hw), simplify, log)
    nms = nms or NmsSettings()
    proto = raw_proto
    if output_form != "raw":
        from .nms_graph import append_nms

        proto = append_nms(raw_proto, nms, output_form)
        log(f"appended {output_form} (conf {nms.conf}, iou {nms.iou}, max_det {nms.max_det}, "
            f"agnostic {nms.agnostic}): {len(proto.graph.node)} nodes")
    batches = verify_batches if dynamic_batch else (1,)
    verification = verify_export(proto if output_form == "nms" else raw_proto, deploy, imgsz, batches, nms,
                                 tolerance, log)
    if dynamic_hw and tolerance is not None:
        for bs, agreement in verify_onnx(raw_proto, deploy, imgsz, (2,), tolerance, rect=True).items():
            shape = "x".join(map(str, check_images(imgsz, bs, rect=True).shape[2:]))
            log(f"check batch {bs} at {shape}: ONNX Runtime vs PyTorch {agreement.summary()}")
            verification[f"rect_batch_{bs}"] = {**agreement.to_dict(), "hw": shape}
    if output_form == "trt_nms":
        log("EfficientNMS_TRT not run: ONNX Runtime cannot execute the TensorRT plugin; verified the raw "
            "graph under it only (the NMS itself is checked when a TensorRT engine is built)")
    manifest = Manifest(
        class_names=vocab.names, prompts=[list(p) for p in vocab.prompts], prompt_merge=vocab.merge,
        embedding_sha256=embedding_sha256(text_embeds), imgsz=(imgsz, imgsz), output_form=output_form,
        output_names=tuple(o.name for o in proto.graph.output), nms=nms, dynamic_batch=dynamic_batch,
        max_batch=max_batch if dynamic_batch else 1, dynamic_hw=dynamic_hw,
        source_checkpoint_sha256=source_sha256, model=model.config.to_dict(),
        versions={"yoloworld_sdk": sdk.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                  "opset": str(opset)},
        extra={"pad_prompt": vocab.pad_prompt, "verification": verification})
    save_onnx(proto, manifest, path)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.name}.json in "
        f"{time.perf_counter() - t0:.1f} s")
    return manifest


def trace_to_onnx(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], dynamic_axes: dict[str, dict[int, str]] | None, opset: int) -> Any:
    """``torch.onnx.export`` with the TorchScript tracer (constant folding on, no grad) -> an
    ``onnx.ModelProto``: the one place every exporter traces through."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation chatter
            torch.onnx.export(module, inputs, str(raw_path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        return onnx.load(str(raw_path))


def image_axes(dynamic_batch: bool, dynamic_hw: bool, outputs: tuple[str, ...]) -> dict[str, dict[int, str]] | None:
    """``dynamic_axes`` for ``images`` ``(B, 3, H, W)`` and per-anchor outputs ``(B, A, ...)``."""
    if not dynamic_batch and not dynamic_hw:
        return None
    batch = {0: "batch"} if dynamic_batch else {}
    axes = {"images": {**batch, **({2: "height", 3: "width"} if dynamic_hw else {})}}
    axes.update({n: {**batch, **({1: "anchors"} if dynamic_hw else {})} for n in outputs})
    return axes


def trace_deploy(deploy: DeployModel, imgsz: int, opset: int, dynamic_batch: bool, log: Any = print,
                 dynamic_hw: bool = False) -> Any:
    """The fixed-vocabulary graph: input ``images``, outputs ``scores``, ``boxes`` (batch axis dynamic if
    ``dynamic_batch``; height, width and anchors if ``dynamic_hw``)."""
    t0 = time.perf_counter()
    axes = image_axes(dynamic_batch, dynamic_hw, ("scores", "boxes"))
    proto = trace_to_onnx(deploy, (torch.zeros(1, 3, imgsz, imgsz),), ["images"], ["scores", "boxes"], axes, opset)
    log(f"exported ONNX opset {opset} ({len(proto.graph.node)} nodes, {time.perf_counter() - t0:.1f} s)")
    return proto


def verify_export(proto: Any, deploy: DeployModel, imgsz: int, batches: tuple[int, ...], nms: NmsSettings,
                  tolerance: Tolerance | None, log: Any = print) -> dict[str, Any]:
    """The self-check of a raw or ``nms``-form graph (see :func:`verify_onnx`,
    ``export.nms_graph.verify_nms_onnx``), logged; returns the manifest's record of it."""
    if tolerance is None:
        return skipped(log)
    record: dict[str, Any] = {"compared": VERIFIED_ON, "tolerance": dataclasses.asdict(tolerance)}
    if any(o.name == "num_dets" for o in proto.graph.output):
        from .nms_graph import verify_nms_onnx

        for bs, (agreement, counts) in verify_nms_onnx(proto, deploy, imgsz, batches, nms, tolerance).items():
            log(f"check batch {bs}: ONNX Runtime vs PyTorch {agreement.summary()}")
            log(f"check batch {bs}: in-graph NMS == host NMS, detections per image {counts}")
            record[f"batch_{bs}"] = {**agreement.to_dict(), "detections": counts}
    else:
        for bs, agreement in verify_onnx(proto, deploy, imgsz, batches, tolerance).items():
            log(f"check batch {bs}: ONNX Runtime vs PyTorch {agreement.summary()}")
            record[f"batch_{bs}"] = agreement.to_dict()
    return record


def verify_onnx(model: Any, deploy: DeployModel, imgsz: int, batches: tuple[int, ...],
                tolerance: Tolerance = DEFAULT_TOLERANCE, rect: bool = False) -> dict[int, Agreement]:
    """ONNX Runtime (CPU) on ``model`` (a path or an ``onnx.ModelProto`` of the raw form) vs PyTorch's
    ``deploy`` per batch size on :func:`check_images` (``rect``: their minimal-padding, non-square
    form); raises :class:`ExportError` beyond ``tolerance``."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    images = check_images(imgsz, max(batches), rect=rect)
    out = {}
    for bs in batches:
        x = images[:bs]
        scores, boxes = session.run(["scores", "boxes"], {"images": x})
        with torch.no_grad():
            ref_s, ref_b = (t.numpy() for t in deploy(torch.from_numpy(x)))
        out[bs] = require(compare_raw(scores, boxes, ref_s, ref_b, tolerance),
                          f"ONNX Runtime vs PyTorch at batch {bs} ({bs} generated check images)")
    return out


__all__ = ["ExportError", "Tolerance", "build_deploy_model", "check_images", "class_columns", "embedding_sha256",
           "export_onnx", "file_sha256", "save_onnx", "trace_deploy", "trace_to_onnx", "verify_export", "verify_onnx"]
