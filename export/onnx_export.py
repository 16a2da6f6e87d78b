"""Fold, export to ONNX, simplify, describe, verify against PyTorch with ONNX Runtime."""

from __future__ import annotations

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
from sdk.errors import YoloWorldError
from sdk.manifest import MANIFEST_KEY, Manifest, NmsSettings, file_sha256, write_sidecar
from sdk.model import YoloWorld
from sdk.preprocess import preprocess
from sdk.vocabulary import Vocabulary

from .deploy import DeployModel

# ONNX Runtime (CPU, fp32) vs PyTorch on the same input: summation order only.
SCORE_ATOL = 1e-4
BOX_ATOL_PX = 1e-2


class ExportError(YoloWorldError):
    """The export failed or its self-check disagreed with PyTorch."""


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


def check_images(imgsz: int, count: int = 4) -> np.ndarray:
    """Real-looking letterboxed inputs (shapes on a textured background, varied aspect ratios)."""
    import cv2

    rs = np.random.RandomState(0)
    images = []
    for i in range(count):
        h, w = (imgsz, imgsz) if i == 0 else (int(imgsz * rs.uniform(0.4, 1.2)), int(imgsz * rs.uniform(0.4, 1.2)))
        img = cv2.GaussianBlur(rs.randint(60, 200, (h, w, 3)).astype(np.uint8), (9, 9), 0)
        for _ in range(4):
            c = tuple(int(v) for v in rs.randint(0, 255, 3))
            x, y, r = int(rs.randint(0, w)), int(rs.randint(0, h)), int(rs.randint(8, max(9, min(h, w) // 4)))
            cv2.circle(img, (x, y), r, c, -1) if rs.rand() < 0.5 else cv2.rectangle(img, (x, y), (x + r, y + r), c, -1)
        images.append(img)
    return preprocess(images, imgsz)[0]


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


def build_deploy_model(model: YoloWorld, vocab: Vocabulary, text_embeds: np.ndarray, imgsz: int) -> DeployModel:
    folded = model.fold_text_embeddings(torch.from_numpy(text_embeds), fuse_bn=True)
    cols, ncols = class_columns(vocab)
    return DeployModel(folded, imgsz, model.config.reg_max, cols, ncols).eval()


def export_onnx(model: YoloWorld, vocab: Vocabulary, text_embeds: np.ndarray, path: str | os.PathLike,
                imgsz: int = 640, opset: int = 17, dynamic_batch: bool = True, max_batch: int = 32,
                simplify: bool = True, source_sha256: str = "", nms: NmsSettings | None = None,
                verify_batches: tuple[int, ...] = (1, 2), log: Any = print, output_form: str = "raw") -> Manifest:
    """Write ``path`` and its ``.json`` sidecar atomically; check it with the ONNX checker and ONNX
    Runtime against PyTorch at ``verify_batches``.

    ``output_form``: ``"raw"`` (``scores``, ``boxes``), or NMS in the graph with ``nms``'s settings
    (``export.nms_graph``): ``"nms"`` (standard ONNX ops; verified against the host NMS on the same
    raw tensors) or ``"trt_nms"`` (TensorRT's EfficientNMS plugin; ONNX Runtime cannot run it, so only
    the raw graph under it is verified)."""
    import onnx

    if output_form not in ("raw", "nms", "trt_nms"):
        raise ExportError(f"output_form must be 'raw', 'nms' or 'trt_nms', got {output_form!r}")
    if imgsz % 32:
        raise ExportError(f"imgsz must be a multiple of 32, got {imgsz}")
    path = Path(path)
    t0 = time.perf_counter()
    deploy = build_deploy_model(model.float().cpu().eval(), vocab, text_embeds, imgsz)
    log(f"folded {len(vocab.model_texts())} text embeddings into the head ({time.perf_counter() - t0:.1f} s)")
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation chatter
            torch.onnx.export(deploy, (dummy,), str(raw_path), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=["scores", "boxes"],
                              dynamic_axes={n: {0: "batch"} for n in ("images", "scores", "boxes")}
                              if dynamic_batch else None, do_constant_folding=True)
        proto = onnx.load(str(raw_path))
    log(f"exported ONNX opset {opset} ({len(proto.graph.node)} nodes, {time.perf_counter() - t0:.1f} s)")
    proto = simplify_and_check(proto, simplify, log)
    nms = nms or NmsSettings()
    raw_proto = proto
    if output_form != "raw":
        from .nms_graph import append_nms

        proto = append_nms(raw_proto, nms, output_form)
        log(f"appended {output_form} (conf {nms.conf}, iou {nms.iou}, max_det {nms.max_det}, "
            f"agnostic {nms.agnostic}): {len(proto.graph.node)} nodes")
    manifest = Manifest(
        class_names=vocab.names, prompts=[list(p) for p in vocab.prompts], prompt_merge=vocab.merge,
        embedding_sha256=embedding_sha256(text_embeds), imgsz=(imgsz, imgsz), output_form=output_form,
        output_names=tuple(o.name for o in proto.graph.output), nms=nms, dynamic_batch=dynamic_batch,
        max_batch=max_batch if dynamic_batch else 1,
        source_checkpoint_sha256=source_sha256, model=model.config.to_dict(),
        versions={"yoloworld_sdk": sdk.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                  "opset": str(opset)},
        extra={"pad_prompt": vocab.pad_prompt})
    del proto.metadata_props[:]
    proto.metadata_props.add(key=MANIFEST_KEY, value=manifest.to_json())
    proto.producer_name = "yoloworld-sdk"
    onnx.checker.check_model(proto)
    from sdk.atomic import atomic_path

    batches = verify_batches if dynamic_batch else (1,)
    with atomic_path(path) as tmp_path:
        if output_form == "nms":
            from .nms_graph import verify_nms_onnx

            onnx.save(proto, str(tmp_path))
            report = verify_nms_onnx(proto, deploy, imgsz, batches, nms)
            diffs = {bs: (ds, db) for bs, (ds, db, _) in report.items()}
        else:  # raw, or trt_nms: ONNX Runtime runs the raw graph under the plugin node
            onnx.save(raw_proto, str(tmp_path))
            diffs = verify_onnx(tmp_path, deploy, imgsz, batches)
            report = {}
            if output_form == "trt_nms":
                onnx.save(proto, str(tmp_path))
    write_sidecar(manifest, path)
    for bs, (ds, db) in diffs.items():
        log(f"check batch {bs}: ONNX Runtime vs PyTorch max |d score| {ds:.2e}, max |d box| {db:.2e} px")
        if bs in report:
            log(f"check batch {bs}: in-graph NMS == host NMS, detections per image {report[bs][2]}")
    if output_form == "trt_nms":
        log("EfficientNMS_TRT not run: ONNX Runtime cannot execute the TensorRT plugin; verified the raw "
            "graph under it only (the NMS itself is checked when a TensorRT engine is built)")
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.name}.json in "
        f"{time.perf_counter() - t0:.1f} s")
    return manifest


def verify_onnx(path: str | os.PathLike, deploy: DeployModel, imgsz: int, batches: tuple[int, ...]
                ) -> dict[int, tuple[float, float]]:
    """Max |score| and |box| differences ONNX Runtime (CPU) vs PyTorch per batch size; raises
    :class:`ExportError` beyond ``SCORE_ATOL`` / ``BOX_ATOL_PX``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = check_images(imgsz, max(batches))
    out = {}
    for bs in batches:
        x = images[:bs]
        scores, boxes = session.run(["scores", "boxes"], {"images": x})
        with torch.no_grad():
            ref_s, ref_b = (t.numpy() for t in deploy(torch.from_numpy(x)))
        ds, db = float(np.abs(scores - ref_s).max()), float(np.abs(boxes - ref_b).max())
        out[bs] = (ds, db)
        if not (ds <= SCORE_ATOL and db <= BOX_ATOL_PX):
            raise ExportError(f"ONNX Runtime disagrees with PyTorch at batch {bs}: max |d score| {ds:.3g} "
                              f"(tolerance {SCORE_ATOL}), max |d box| {db:.3g} px (tolerance {BOX_ATOL_PX})")
    return out


__all__ = ["ExportError", "build_deploy_model", "check_images", "class_columns", "embedding_sha256",
           "export_onnx", "file_sha256", "verify_onnx"]
