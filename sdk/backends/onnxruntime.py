"""ONNX Runtime backend: runs what ``yoloworld-export`` wrote; reads everything from its manifest.

Open-vocabulary artifacts (``manifest.open_vocabulary``) take the vocabulary as inputs: prompts are
tokenised by :mod:`sdk.tokenizer` and embedded by the exported text encoder (``extra["text_encoder"]``,
beside the artifact), then padded to ``vocab_capacity`` with a mask. No torch anywhere.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import YoloWorldError
from .base import RuntimeOptions
from .exported import ExportedBackend

_PROVIDERS = {"cuda": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
              "cpu": ("CPUExecutionProvider",)}
_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


class OnnxRuntimeBackend(ExportedBackend):
    """``infer(images) -> {output name: array}`` on an exported model (fixed or open vocabulary)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", options: RuntimeOptions | None = None) -> None:
        import onnxruntime as ort  # imported on open: deployment installs only

        options = options or RuntimeOptions()
        self._read(path)
        available = ort.get_available_providers()
        wanted = options.providers or _PROVIDERS["cuda" if device.startswith("cuda") else "cpu"]
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise YoloWorldError(f"none of the ONNX Runtime providers {list(wanted)} is available here "
                                 f"(available: {available})")
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.intra_op_threads:
            session_options.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads:
            session_options.inter_op_num_threads = options.inter_op_threads
        self._ort, self._options, self._providers = ort, session_options, chosen
        self.session = self._open_session(path)
        self.providers = self.session.get_providers()  # what ONNX Runtime actually took
        # on a GPU provider, binding host arrays copies each input once to the device and each output once back
        on_gpu = bool(_GPU_PROVIDERS & set(self.providers))
        self.io_binding = on_gpu if options.io_binding is None else options.io_binding
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.open_vocabulary:
            mask = {i.name: i for i in self.session.get_inputs()}["text_mask"]
            self._mask_dtype = bool if mask.type == "tensor(bool)" else np.float32
        self.text_session: Any = None  # opened on first use

    def _open_session(self, path: str | os.PathLike, providers: list[str] | None = None):
        try:
            return self._ort.InferenceSession(str(path), self._options, providers=providers or self._providers)
        except Exception as e:  # ORT raises several unrelated types for bad files
            raise YoloWorldError(f"{path}: ONNX Runtime cannot load it: {e}") from None

    def _run_text(self, ids: np.ndarray) -> np.ndarray:
        if self.text_session is None:
            # dynamic token counts: no TensorRT engine per prompt length for a rarely-run graph
            self.text_session = self._open_session(
                self._beside("text_encoder"), [p for p in self._providers if p != "TensorrtExecutionProvider"])
        return self.text_session.run(None, {self.text_session.get_inputs()[0].name: ids})[0]

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        feed = self._feed(images)
        if not self.io_binding:
            return dict(zip(self.output_names, self.session.run(self.output_names, feed), strict=True))
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.output_names:
            binding.bind_output(name, "cpu")  # the provider writes host memory once, no device staging copy
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))

    def close(self) -> None:
        self.session = None
        self.text_session = None
