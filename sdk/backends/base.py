"""The backend protocol: move arrays in and out of one runtime, nothing else.

A backend takes the preprocessed batch (float32 ``(B, 3, H, W)``, RGB, [0, 1]) and returns raw outputs
as numpy, in the form its ``output_form`` names:

- ``"head"`` (checkpoints): per-level ``cls_logits_{i}`` ``(B, T, H_i, W_i)`` and ``box_dists_{i}``
  ``(B, 4R, H_i, W_i)``;
- ``"raw"`` (exports): decoded ``scores`` ``(B, A, T)`` and ``boxes`` ``(B, A, 4)``;
- ``"nms"`` / ``"trt_nms"`` (exports with NMS in the graph): ``num_dets``, ``det_boxes``, ``det_scores``,
  ``det_classes`` (``sdk.manifest.Manifest``).

Decoding, NMS and letterbox inversion are shared numpy code (``sdk.postprocess``). Every backend is
built as ``Backend(path, device, options)`` on :class:`BackendBase`, is a context manager, and frees its
runtime on ``close``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ..errors import VocabularyError, YoloWorldError
from ..manifest import ComputePrecision, Manifest, read_manifest

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
    """What ``Detector`` needs of a runtime; every backend implements it on :class:`BackendBase`."""

    name: str
    #: What the network computes in.
    precision: ComputePrecision
    #: What ``infer`` returns (see the module docstring).
    output_form: BackendForm
    @property
    def manifest(self) -> Manifest | None:
        """An export's manifest (size, classes, output form); None for a checkpoint."""
    #: A checkpoint's stored vocabulary (one prompt list per class), else None.
    stored_vocabulary: list[list[str]] | None
    #: A checkpoint's training input size and class names (the dataset's category names), else None.
    stored_imgsz: int | None
    stored_class_names: list[str] | None
    #: True when the vocabulary is an input (``set_text``); False for vocabulary-folded artifacts.
    open_vocabulary: bool
    #: Images per ``infer`` call that keep this runtime busy (``predict_stream``'s default batch).
    preferred_batch: int

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


class BackendBase:
    """What every backend shares: the manifest of an export, the check of every input against what the
    model accepts, the timing of every call, the folded-vocabulary refusal and ``with`` closing.
    A backend sets ``name`` / ``precision`` / ``output_form`` (``_read_manifest`` does for exports) and
    implements ``_infer``; an open-vocabulary one also ``encode_text`` and ``set_text``."""

    name: str = "?"
    precision: ComputePrecision = "fp32"
    output_form: BackendForm = "raw"
    path: Path = Path("?")
    manifest: Manifest | None = None
    stored_vocabulary: list[list[str]] | None = None
    stored_imgsz: int | None = None
    stored_class_names: list[str] | None = None
    open_vocabulary: bool = False
    preferred_batch: int = 1
    #: True where ``infer`` takes any batch size whatever the export's batch (TensorRT splits and pads)
    splits_batches: bool = False
    #: ``infer`` calls so far, their total time and the last one's, in ms (input check included)
    calls: int = 0
    infer_ms_total: float = 0.0
    last_infer_ms: float = 0.0

    def _read_manifest(self, path: str | os.PathLike) -> Manifest:
        """Read an export's manifest and take its output form, precision and vocabulary kind."""
        self.path = Path(path)
        manifest = self.manifest = read_manifest(path)
        self.output_form = manifest.output_form
        self.precision = manifest.precision
        self.open_vocabulary = manifest.open_vocabulary
        return manifest

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for float32 ``(B, 3, H, W)`` ``images`` (see the module docstring), after checking
        them against what the model accepts."""
        t0 = time.perf_counter()
        self.check_input(images)
        out = self._infer(images)
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        self.calls += 1
        self.infer_ms_total += self.last_infer_ms
        return out

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check_input(self, images: np.ndarray) -> None:
        """``YoloWorldError`` saying what is wrong with a batch: not float32 ``(B, 3, H, W)`` with H and W
        multiples of 32; for an export, a batch or size it was not exported for."""
        if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 4 or images.shape[1] != 3:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise YoloWorldError(f"{self.path.name}: infer takes float32 (B, 3, H, W) images (sdk.preprocess); "
                                 f"got {got}")
        shape = images.shape
        b, h, w = shape[0], shape[2], shape[3]
        if b < 1 or h < 32 or w < 32 or h % 32 or w % 32:
            raise YoloWorldError(f"{self.path.name}: infer takes a batch of at least one image with height and "
                                 f"width multiples of 32; got {tuple(shape)}")
        m = self.manifest
        if m is None:
            return
        if not m.dynamic_batch and b != 1 and not self.splits_batches:
            raise YoloWorldError(f"{self.path.name} was exported with a static batch of 1; got a batch of {b} "
                                 f"(use batch_size=1 or re-export without --static-batch)")
        if not m.dynamic_hw and (h, w) != tuple(m.imgsz):
            raise YoloWorldError(f"{self.path.name} takes {m.imgsz[0]}x{m.imgsz[1]} inputs only (exported with a "
                                 f"static shape); got {h}x{w}")
        if m.dynamic_hw and (h > m.imgsz[0] or w > m.imgsz[1]):
            raise YoloWorldError(f"{self.path.name} takes inputs up to {m.imgsz[0]}x{m.imgsz[1]} (its export "
                                 f"size); got {h}x{w}")

    def folded(self) -> VocabularyError:
        """The error for asking a fixed-vocabulary artifact for another vocabulary."""
        names = self.manifest.class_names if self.manifest is not None else []
        return VocabularyError(f"{self.path.name} has its vocabulary folded in ({names}); re-export it with "
                               f"yoloworld-export for other classes")

    def encode_text(self, texts: list[str]) -> np.ndarray:
        raise self.folded()

    def set_text(self, text_embeds: np.ndarray) -> None:
        raise self.folded()

    def close(self) -> None:  # overridden by the backends that hold a runtime
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
