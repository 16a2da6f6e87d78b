"""Open-vocabulary export: the vocabulary stays an input, so classes change after export without torch.

Graph (``<stem>.onnx``)::

    images       float32 (B, 3, S, S)   RGB [0, 1], letterboxed (as every export)
    text_embeds  float32 (K, D)         L2-normalised prompt embeddings, one vocabulary for the batch
    text_mask    float32 (K,)           1 = slot in use, 0 = padding
    -> scores    float32 (B, A, K)      sigmoid; 0 exactly in padded slots
       boxes     float32 (B, A, 4)      xyxy input pixels

K is the fixed ``vocab_capacity``. Padded slots influence nothing: the VL-PAN's max-sigmoid attention
takes its max over the texts with padded slots set to -inf first; v1's image-pooling attention
updates every text on its own (a padded text changes no other) and feeds only the bottom-up path;
the contrastive head (given the input text, as ``YoloWorld.forward``) is per text; padded logits are
-inf, so their scores are 0. All of this is ``YoloWorld.forward(images, text, text_mask)`` itself: the
graph traces the model (its image side, BatchNorm fused into the convs), nothing of the neck is
rewritten here. The export checks the graph twice: the masked model (PyTorch) against the model on the
slots in use alone, and ONNX Runtime against PyTorch (random unit vectors in the padded slots).
``<stem>.text_encoder.onnx`` (token ids -> embeddings, see ``export.text_encoder``) and CLIP's BPE
vocabulary are written beside it, and the manifest names both (``extra["text_encoder"]``,
``extra["tokenizer_vocab"]``), relative to the artifact's folder.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import sdk
from sdk.atomic import removed_on_failure
from sdk.manifest import Manifest, NmsSettings
from sdk.model import YoloWorld
from sdk.model.folded import fuse_conv_bn
from sdk.tokenizer import VOCAB_FILE

from .deploy import DeployModel
from .onnx_export import VERIFIED_ON, file_sha256, image_axes, save_onnx, simplify_and_check, trace_to_onnx
from .text_encoder import export_text_encoder
from .verify import DEFAULT_TOLERANCE, Agreement, ExportError, Tolerance, check_images, compare_raw, require, skipped

TEXT_INPUTS = ("text_embeds", "text_mask")
# prompts the self-check encodes (with the checkpoint's own text encoder)
CHECK_PROMPTS = ("person", "red car", "a dog", "traffic light", "yellow star", "bus", "cat", "bicycle")


def image_side(model: YoloWorld, fuse_bn: bool = True) -> YoloWorld:
    """A copy of ``model`` without its text encoder (BatchNorm fused into the convs): what the detector
    graph holds; it runs ``YoloWorld.forward`` with a text mask."""
    clone = copy.deepcopy(model, memo={id(model.text_encoder): None})  # the text tower is not copied
    if fuse_bn:
        fuse_conv_bn(clone)
    return clone.eval()


class OpenVocabDeployModel(DeployModel):
    """``forward(images, text_embeds, text_mask) -> (scores (B, A, K), boxes (B, A, 4))``: the model's
    own forward with the text mask (``YoloWorld.forward``), then the deploy decoding."""

    def __init__(self, model: YoloWorld, imgsz: int, fuse_bn: bool = True, dynamic_hw: bool = False) -> None:
        super().__init__(image_side(model, fuse_bn), imgsz, model.config.reg_max, dynamic_hw=dynamic_hw)

    def forward(self, images: Tensor, text_embeds: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor]:
        valid = text_mask > 0.5 if text_mask.dtype != torch.bool else text_mask
        out = self.folded(images, text_embeds, valid)  # padded slots: logits -inf
        logits = torch.cat([t.flatten(2) for t in out.cls_logits], 2)  # (B, K, A)
        return logits.sigmoid().transpose(1, 2), self.decode_boxes(out.box_dists)  # (B, A, K), (B, A, 4)


def text_encoder_path(path: str | os.PathLike) -> Path:
    """``dir/model_ov.onnx`` -> ``dir/model_ov.text_encoder.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.text_encoder.onnx")


def check_texts(model: YoloWorld, capacity: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Self-check vocabularies ``(text_embeds (K, D), text_mask (K,))``: a few real prompts with the
    padded slots filled with random unit vectors (they must not matter), and every slot in use."""
    rs = np.random.RandomState(0)
    d = model.config.text_channels
    real = model.encode_text(list(CHECK_PROMPTS)).cpu().numpy()
    noise = rs.randn(capacity, d).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    n = min(3, capacity)
    partial = noise.copy()
    partial[:n] = real[:n]
    full = np.concatenate([real, noise])[:capacity]
    mask = np.zeros(capacity, np.float32)
    mask[:n] = 1
    return [(partial, mask), (full, np.ones(capacity, np.float32))]


def check_against_model(model: YoloWorld, deploy: OpenVocabDeployModel, images: np.ndarray,
                        texts: list[tuple[np.ndarray, np.ndarray]], tolerance: Tolerance = DEFAULT_TOLERANCE
                        ) -> list[Agreement]:
    """The masked wrapper (PyTorch) vs ``model(images, text_embeds[mask])`` decoded, over the slots in
    use, per vocabulary; raises :class:`ExportError` beyond ``tolerance`` (BatchNorm fusion and the
    MatMul form only change the rounding)."""
    from sdk.postprocess import decode_head_outputs

    x = torch.from_numpy(images)
    out = []
    with torch.no_grad():
        for v, (emb, mask) in enumerate(texts):
            used = mask > 0.5
            head = model(x, torch.from_numpy(emb[used]))
            ref_s, ref_b = decode_head_outputs([t.numpy() for t in head.cls_logits],
                                               [t.numpy() for t in head.box_dists])
            scores, boxes = (t.numpy() for t in deploy(x, torch.from_numpy(emb), torch.from_numpy(mask)))
            out.append(require(compare_raw(scores[..., used], boxes, ref_s, ref_b, tolerance),
                               f"the open-vocabulary graph (PyTorch) vs the model on the slots in use "
                               f"(vocabulary {v}, {len(images)} generated check images)"))
    return out


def verify_open_vocab(path: str | os.PathLike, deploy: OpenVocabDeployModel, imgsz: int,
                      texts: list[tuple[np.ndarray, np.ndarray]], batches: tuple[int, ...],
                      tolerance: Tolerance = DEFAULT_TOLERANCE, rect: bool = False
                      ) -> dict[tuple[int, int], Agreement]:
    """ONNX Runtime (CPU) vs PyTorch per (vocabulary, batch) on :func:`check_images` (``rect``: their
    non-square form); raises :class:`ExportError` beyond ``tolerance`` or if a padded slot scores above 0."""
    import onnxruntime as ort

    images = check_images(imgsz, max(batches), rect=rect)
    refs = {}
    with torch.no_grad():  # every PyTorch reference before ORT's threads start spinning
        for v, (emb, mask) in enumerate(texts):
            for bs in batches:
                refs[v, bs] = [t.numpy() for t in deploy(torch.from_numpy(images[:bs]), torch.from_numpy(emb),
                                                         torch.from_numpy(mask))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = {}
    for (v, bs), (ref_s, ref_b) in refs.items():
        emb, mask = texts[v]
        scores, boxes = session.run(["scores", "boxes"], {"images": images[:bs], "text_embeds": emb,
                                                          "text_mask": mask})
        out[v, bs] = require(compare_raw(scores, boxes, ref_s, ref_b, tolerance),
                             f"ONNX Runtime vs PyTorch (vocabulary {v}, batch {bs}, generated check images)")
        if np.any(scores[..., mask < 0.5] != 0):
            raise ExportError("a padded vocabulary slot has a non-zero score")
    return out


def export_open_vocab(model: YoloWorld, path: str | os.PathLike, capacity: int, imgsz: int = 640,
                      opset: int = 17, dynamic_batch: bool = True, max_batch: int = 32, fuse_bn: bool = True,
                      simplify: bool = True, source_sha256: str = "", nms: NmsSettings | None = None,
                      verify_batches: tuple[int, ...] = (1, 2), log: Any = print,
                      tolerance: Tolerance | None = DEFAULT_TOLERANCE, dynamic_hw: bool = False) -> Manifest:
    """Write the open-vocabulary detector ``path`` (see the module docstring) with its ``.json``
    sidecar, ``<stem>.text_encoder.onnx`` and the BPE vocabulary beside it, atomically; check both
    graphs against PyTorch with ONNX Runtime under ``tolerance`` (``None``: skip, with a warning) and
    record the measured differences in the manifest. A failed export leaves none of the files.
    ``dynamic_hw``: any input height and width (multiples of 32), checked on a non-square input too."""
    if imgsz % 32:
        raise ExportError(f"imgsz must be a multiple of 32, got {imgsz}")
    if capacity < 1:
        raise ExportError(f"capacity must be at least 1, got {capacity}")
    if model.text_encoder is None:
        raise ExportError("this checkpoint has no text encoder (fixed-vocabulary fine-tuning), so it cannot "
                          "encode new prompts; export it with a fixed vocabulary instead")
    path = Path(path)
    te_path = text_encoder_path(path)
    t0 = time.perf_counter()
    model = model.float().cpu().eval()
    with removed_on_failure(te_path, path.parent / VOCAB_FILE):
        text_check = export_text_encoder(model.text_encoder, te_path, opset=opset, simplify=simplify, log=log,
                                         tolerance=tolerance)
        deploy = OpenVocabDeployModel(model, imgsz, fuse_bn, dynamic_hw).eval()
        proto = _trace(deploy, imgsz, capacity, model.config.text_channels, opset, dynamic_batch, dynamic_hw)
        log(f"exported the open-vocabulary detector, ONNX opset {opset}, capacity {capacity} "
            f"({len(proto.graph.node)} nodes, {time.perf_counter() - t0:.1f} s)")
        proto = simplify_and_check(proto, simplify, log)
        verification = _verify(proto, model, deploy, imgsz, capacity, verify_batches if dynamic_batch else (1,),
                               tolerance, log, dynamic_hw)
        if text_check is not None:
            verification["text_encoder_max_abs_diff"] = text_check
        manifest = _manifest(model, te_path, capacity, imgsz, opset, dynamic_batch, max_batch, source_sha256, nms,
                             verification)
        manifest = dataclasses.replace(manifest, dynamic_hw=dynamic_hw)
        save_onnx(proto, manifest, path)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), {path.name}.json, {te_path.name} and {VOCAB_FILE} "
        f"in {time.perf_counter() - t0:.1f} s")
    return manifest


def _trace(deploy: OpenVocabDeployModel, imgsz: int, capacity: int, dim: int, opset: int, dynamic_batch: bool,
           dynamic_hw: bool = False) -> Any:
    dummy = (torch.zeros(1, 3, imgsz, imgsz), torch.zeros(capacity, dim), torch.ones(capacity))
    names_out = ["scores", "boxes"]
    axes = image_axes(dynamic_batch, dynamic_hw, tuple(names_out))
    return trace_to_onnx(deploy, dummy, ["images", *TEXT_INPUTS], names_out, axes, opset)


def _verify(proto: Any, model: YoloWorld, deploy: OpenVocabDeployModel, imgsz: int, capacity: int,
            batches: tuple[int, ...], tolerance: Tolerance | None, log: Any, rect: bool = False) -> dict[str, Any]:
    """Both checks (masked graph vs the model, ONNX Runtime vs PyTorch), logged; the manifest record."""
    if tolerance is None:
        return skipped(log)
    texts = check_texts(model, capacity)
    (masked,) = check_against_model(model, deploy, check_images(imgsz, 2), texts[:1], tolerance)
    log(f"check: masked graph (PyTorch) vs the model on the slots in use: {masked.summary()}")
    record: dict[str, Any] = {"compared": VERIFIED_ON, "tolerance": dataclasses.asdict(tolerance),
                              "masked_vs_model": masked.to_dict()}
    with tempfile.TemporaryDirectory() as tmp:  # ONNX Runtime loads it from a file: the graph may be large
        onnx_path = Path(tmp) / "check.onnx"
        import onnx

        onnx.save(proto, str(onnx_path))
        for (v, bs), agreement in verify_open_vocab(onnx_path, deploy, imgsz, texts, batches, tolerance).items():
            log(f"check vocabulary {v} batch {bs}: ONNX Runtime vs PyTorch {agreement.summary()}")
            record[f"vocabulary_{v}_batch_{bs}"] = agreement.to_dict()
        if rect:
            for (v, bs), agreement in verify_open_vocab(onnx_path, deploy, imgsz, texts[:1], (2,), tolerance,
                                                        rect=True).items():
                log(f"check vocabulary {v} batch {bs}, non-square: ONNX Runtime vs PyTorch {agreement.summary()}")
                record[f"rect_vocabulary_{v}_batch_{bs}"] = agreement.to_dict()
    return record


def _manifest(model: YoloWorld, te_path: Path, capacity: int, imgsz: int, opset: int, dynamic_batch: bool,
              max_batch: int, source_sha256: str, nms: NmsSettings | None, verification: dict[str, Any]
              ) -> Manifest:
    import onnx

    return Manifest(
        class_names=[], prompts=[], prompt_merge="first", embedding_sha256="", imgsz=(imgsz, imgsz),
        output_form="raw", nms=nms or NmsSettings(), dynamic_batch=dynamic_batch,
        max_batch=max_batch if dynamic_batch else 1, open_vocabulary=True, vocab_capacity=capacity,
        source_checkpoint_sha256=source_sha256, model=model.config.to_dict(),
        versions={"yoloworld_sdk": sdk.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                  "opset": str(opset)},
        extra={"text_encoder": te_path.name, "tokenizer_vocab": VOCAB_FILE,
               "text_encoder_sha256": file_sha256(te_path), "text_inputs": list(TEXT_INPUTS),
               "text_mask": "float32 (capacity,): 1 = slot in use, 0 = padding",
               "embed_dim": model.config.text_channels, "context_length": model.text_encoder.config.context_length,
               "verification": verification})


__all__ = ["CHECK_PROMPTS", "TEXT_INPUTS", "OpenVocabDeployModel", "check_against_model", "check_texts",
           "export_open_vocab", "image_side", "text_encoder_path", "verify_open_vocab"]
