"""The backend protocol: move arrays in and out of one runtime, nothing else.

A backend takes the preprocessed batch (float32 ``(B, 3, S, S)``, RGB, [0, 1]) and returns raw head
outputs as numpy: either per-level ``cls_logits_{i}`` ``(B, T, H_i, W_i)`` and ``box_dists_{i}``
``(B, 4R, H_i, W_i)``, or decoded ``scores`` ``(B, A, T)`` and ``boxes`` ``(B, A, 4)``. Decoding,
NMS and letterbox inversion are shared numpy code (``sdk.postprocess``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model runs; each backend reads the fields that concern it.

    providers: ONNX Runtime execution providers in order of preference (default: TensorRT, CUDA, CPU
        where present for a ``cuda`` device, CPU for ``cpu``). intra_op_threads / inter_op_threads:
        ONNX Runtime thread pools (None: its defaults, one thread per core). io_binding: bind inputs and
        outputs so each is copied once between host and GPU (None: on when a GPU provider runs).
        cuda_graphs: TensorRT, capture one CUDA graph per batch size and replay it. split_batches:
        TensorRT, split a batch larger than the engine's profile and pad one smaller than its minimum
        (False: such a batch is an error naming the profile). half: PyTorch checkpoints, run the
        network in float16 (for CUDA; torch's CPU float16 kernels are slow). The text encoder stays
        float32. An export's precision is fixed when it is exported, so exports refuse ``half``.
    """

    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    io_binding: bool | None = None
    cuda_graphs: bool = False
    split_batches: bool = True
    half: bool = False


class Backend(Protocol):
    name: str
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
