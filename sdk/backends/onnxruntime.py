"""ONNX Runtime backend: runs what ``yoloworld-export`` wrote; reads everything from its manifest."""

from __future__ import annotations

import os

import numpy as np

from ..errors import YoloWorldError
from ..manifest import Manifest, read_manifest

_PROVIDERS = {"cuda": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
              "cpu": ["CPUExecutionProvider"]}


class OnnxRuntimeBackend:
    """``infer(images) -> {output name: array}`` on an exported model (fixed vocabulary)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort  # imported on open: deployment installs only

        self.manifest: Manifest = read_manifest(path)
        self.open_vocabulary = self.manifest.open_vocabulary
        available = ort.get_available_providers()
        wanted = providers or _PROVIDERS["cuda" if device.startswith("cuda") else "cpu"]
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise YoloWorldError(f"none of the ONNX Runtime providers {wanted} is available here "
                                 f"(available: {available})")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as e:  # ORT raises several unrelated types for bad files
            raise YoloWorldError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def encode_text(self, texts: list[str]) -> np.ndarray:
        raise YoloWorldError("this exported model has its vocabulary folded in "
                             f"({self.manifest.class_names}); re-export it for other classes")

    def set_text(self, text_embeds: np.ndarray) -> None:
        raise YoloWorldError("this exported model has a fixed vocabulary")

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        b = images.shape[0]
        if not self.manifest.dynamic_batch and b != 1:
            raise YoloWorldError(f"this model was exported with a static batch of 1; got a batch of {b} "
                                 f"(use batch_size=1 or re-export without --static-batch)")
        outs = self.session.run(self.output_names, {self.manifest.input_name: images})
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self.session = None
