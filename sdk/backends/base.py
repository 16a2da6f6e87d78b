"""The backend protocol: move arrays in and out of one runtime, nothing else.

A backend takes the preprocessed batch (float32 ``(B, 3, H, W)``, RGB, [0, 1]) and returns raw outputs
as numpy, in the form its ``output_form`` names:

- ``"head"`` (checkpoints): per-level ``cls_logits_{i}`` ``(B, T, H_i, W_i)`` and ``box_dists_{i}``
  ``(B, 4R, H_i, W_i)``;
- ``"raw"`` (exports): decoded ``scores`` ``(B, A, T)`` and ``boxes`` ``(B, A, 4)``;
- ``"nms"`` / ``"trt_nms"`` (exports with NMS in the graph): ``num_dets``, ``det_boxes``, ``det_scores``,
  ``det_classes`` (``sdk.manifest.Manifest``).

Decoding, NMS and letterbox inversion are shared numpy code (``sdk.postprocess``). Every backend is
built as ``Backend(path, device, options)``, is a context manager, and frees its runtime on ``close``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from ..manifest import ComputePrecision, Manifest

BackendForm = Literal["head", "raw", "nms", "trt_nms"]


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model runs; each backend reads the fields that concern it.

    providers: ONNX Runtime execution providers in order of preference (default: TensorRT, CUDA, CPU
        where present for a ``cuda`` device, CPU for ``cpu``). intra_op_threads / inter_op_threads:
        ONNX Runtime thread pools (None: its defaults, one thread per core); intra_op_threads is also
        OpenVINO's thread count and PyTorch's (``torch.set_num_threads``: for the whole process).
        io_binding: bind inputs and outputs so each is copied once between host and GPU (None: on when a
        GPU provider runs).
        cuda_graphs: TensorRT, capture one CUDA graph per batch size and replay it. split_batches:
        TensorRT, split a batch larger than the engine's profile and pad one smaller than its minimum
        (False: such a batch is an error naming the profile). half: PyTorch checkpoints, run the
        network in float16 (for CUDA; torch's CPU float16 kernels are slow). The text encoder stays
        float32. An export's precision is fixed when it is exported, so exports refuse ``half``.
        precision: OpenVINO, what fp32/fp16 artifacts compute in: ``"fp32"``, ``"bf16"``, ``"fp16"``
        (None: bf16 where the CPU runs it natively, AMX or AVX512-BF16, else fp32). performance:
        OpenVINO, ``"latency"`` (one request per batch) or ``"throughput"`` (one request per image,
        ``num_requests`` in flight; None: OpenVINO's optimum). cache_dir: OpenVINO's compiled-model
        cache (None: ``$YOLOWORLD_CACHE_DIR/openvino`` or ``~/.cache/yoloworld-sdk/openvino``; ``"off"``: none).
    """

    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    io_binding: bool | None = None
    cuda_graphs: bool = False
    split_batches: bool = True
    half: bool = False
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    performance: Literal["latency", "throughput"] = "latency"
    num_requests: int | None = None
    cache_dir: str | None = None


class Backend(Protocol):
    name: str
    #: What the network computes in.
    precision: ComputePrecision
    #: What ``infer`` returns (see the module docstring).
    output_form: BackendForm
    #: An export's manifest (size, classes, output form); None for a checkpoint.
    manifest: Manifest | None
    #: A checkpoint's stored vocabulary (one prompt list per class), else None.
    stored_vocabulary: list[list[str]] | None
    #: A checkpoint's training input size and class names (the dataset's category names), else None.
    stored_imgsz: int | None
    stored_class_names: list[str] | None
    #: True when the vocabulary is an input (``set_text``); False for vocabulary-folded artifacts.
    open_vocabulary: bool

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 ``(N, D)`` text embeddings."""

    def set_text(self, text_embeds: np.ndarray) -> None:
        """Hold the vocabulary's embeddings ``(T, D)`` for the following ``infer`` calls."""

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for one batch (see the module docstring)."""

    def close(self) -> None:
        """Free the session / model."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class ClosingBackend:
    """``with backend: ...`` closes it on the way out (every backend derives from this)."""

    def close(self) -> None:  # overridden by the backends
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
