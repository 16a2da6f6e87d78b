"""ONNX Runtime backend: runs what ``yoloworld-export`` wrote; reads everything from its manifest.

Open-vocabulary artifacts (``manifest.open_vocabulary``) take the vocabulary as inputs: prompts are
tokenised by :mod:`sdk.tokenizer` and embedded by the exported text encoder (``extra["text_encoder"]``,
beside the artifact), then padded to ``vocab_capacity`` with a mask. No torch anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import VocabularyError, YoloWorldError
from ..manifest import Manifest, read_manifest
from .base import ClosingBackend, RuntimeOptions

_PROVIDERS = {"cuda": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
              "cpu": ("CPUExecutionProvider",)}
_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


class OnnxRuntimeBackend(ClosingBackend):
    """``infer(images) -> {output name: array}`` on an exported model (fixed or open vocabulary)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", options: RuntimeOptions | None = None) -> None:
        import onnxruntime as ort  # imported on open: deployment installs only

        options = options or RuntimeOptions()
        self.manifest: Manifest = read_manifest(path)
        self.open_vocabulary = self.manifest.open_vocabulary
        self.output_form = self.manifest.output_form
        self.precision = self.manifest.precision
        self.stored_vocabulary = None
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
        self.path = Path(path)
        # open vocabulary: text session and tokenizer on first use, embeddings cached per prompt
        self.capacity = self.manifest.vocab_capacity if self.open_vocabulary else 0
        self.text_session = None
        self.tokenizer = None
        self._embeddings: dict[str, np.ndarray] = {}
        self._text_feed: dict[str, np.ndarray] | None = None

    def _open_session(self, path: str | os.PathLike, providers: list[str] | None = None):
        try:
            return self._ort.InferenceSession(str(path), self._options, providers=providers or self._providers)
        except Exception as e:  # ORT raises several unrelated types for bad files
            raise YoloWorldError(f"{path}: ONNX Runtime cannot load it: {e}") from None

    def _beside(self, key: str) -> Path:
        name = self.manifest.extra.get(key)
        path = self.path.parent / str(name)
        if not name or not path.is_file():
            raise YoloWorldError(f"{self.path}: its {key.replace('_', ' ')} file {str(path)!r} is missing; keep "
                                 f"the files yoloworld-export wrote together")
        return path

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 ``(N, D)`` from the exported text encoder (open vocabulary only)."""
        if not self.open_vocabulary:
            raise YoloWorldError("this exported model has its vocabulary folded in "
                                 f"({self.manifest.class_names}); re-export it for other classes")
        missing = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if missing:
            if self.text_session is None:
                from ..tokenizer import load_tokenizer

                self.tokenizer = load_tokenizer(str(self._beside("tokenizer_vocab")),
                                                int(self.manifest.extra.get("context_length", 77)))
                # dynamic token counts: no TensorRT engine per prompt length for a rarely-run graph
                self.text_session = self._open_session(
                    self._beside("text_encoder"), [p for p in self._providers if p != "TensorrtExecutionProvider"])
            for start in range(0, len(missing), 256):
                chunk = missing[start:start + 256]
                ids = self.tokenizer.batch(chunk)
                emb = self.text_session.run(None, {self.text_session.get_inputs()[0].name: ids})[0]
                self._embeddings.update(zip(chunk, np.asarray(emb, np.float32), strict=True))
        d = int(self.manifest.extra.get("embed_dim", 0))
        if not texts:
            return np.zeros((0, d), np.float32)
        return np.stack([self._embeddings[t] for t in texts])

    def set_text(self, text_embeds: np.ndarray) -> None:
        """Pad the vocabulary's ``(T, D)`` embeddings to the capacity; the mask marks the T in use."""
        if not self.open_vocabulary:
            raise YoloWorldError("this exported model has a fixed vocabulary")
        text_embeds = np.asarray(text_embeds, np.float32)
        n, cap = text_embeds.shape[0], self.capacity
        if n > cap:
            raise VocabularyError(f"the vocabulary needs {n} text slots but {self.path.name} was exported with "
                                  f"a vocabulary capacity of {cap}; use at most {cap} prompts or re-export "
                                  f"with a larger capacity")
        inputs = {i.name: i for i in self.session.get_inputs()}
        emb = np.zeros((cap, text_embeds.shape[1]), np.float32)
        emb[:n] = text_embeds
        mask = np.zeros(cap, bool if inputs["text_mask"].type == "tensor(bool)" else np.float32)
        mask[:n] = 1
        self._text_feed = {"text_embeds": emb, "text_mask": mask}

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        b = images.shape[0]
        if not self.manifest.dynamic_batch and b != 1:
            raise YoloWorldError(f"this model was exported with a static batch of 1; got a batch of {b} "
                                 f"(use batch_size=1 or re-export without --static-batch)")
        feed = {self.manifest.input_name: images}
        if self.open_vocabulary:
            if self._text_feed is None:
                raise YoloWorldError("no vocabulary set (call set_text / Detector.set_classes)")
            feed.update(self._text_feed)
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
