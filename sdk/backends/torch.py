"""PyTorch backend: the only runtime path that imports torch (and ``sdk.model``), on open.

CPU performance (``benchmarks/torch_cpu_batch.py`` -> ``benchmarks/results/torch_cpu_batch.json``,
the demo model, 2 cores): batching is not what costs. Per image, batch 8 computes less than batch 1 (one
thread: 21-24 against 28-33 ms) and post-processing takes 0.4-1 ms either way. What made batch 8 look
3x slower than batch 1 is PyTorch's intra-op threads on cores shared with other processes: every
operator is an OpenMP parallel region whose threads wait for each other, so while another process
holds a core each of the hundreds of regions in a forward waits for a time slice, and per-image times
swing from 45 ms to 2.7 s, either way between batch sizes (one such run: batch 1 109 ms, batch 8 325
ms). Where the cores are shared, pass ``RuntimeOptions(intra_op_threads=1)`` (label and bench:
``--threads 1``): 20-33 ms, steady. On the CPU the network runs channels-last (NHWC), the layout
oneDNN's convolutions use, so no layer's input is reordered: with both threads, batch 1 24-32 -> 20-22
ms and batch 8 18-20 -> 11-13 ms per image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VocabularyError, YoloWorldError
from .base import BackendBase, BackendForm, RuntimeOptions


class TorchBackend(BackendBase):
    """Runs :class:`sdk.model.YoloWorld` from an official or own checkpoint; ``options.half``: float16
    network (outputs come back as float32 numpy)."""

    name = "torch"
    open_vocabulary = True

    output_form: BackendForm = "head"
    model: Any  # the YoloWorld while open, None once closed

    def __init__(self, path: str | os.PathLike, device: str = "cpu", options: RuntimeOptions | None = None) -> None:
        import torch

        from ..model.checkpoint import load_checkpoint_with_meta

        half = options is not None and options.half
        if options is not None and options.intra_op_threads:
            torch.set_num_threads(options.intra_op_threads)  # torch's pool is per process
        self._torch = torch
        self.path = Path(path)
        self.device = torch.device(device)
        self.model, self.meta = load_checkpoint_with_meta(path, self.device)
        # NHWC on the CPU: oneDNN's native layout (see the module docstring); CUDA keeps NCHW
        self._memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model = self.model.to(memory_format=self._memory_format)
        self.stored_vocabulary = self.meta.get("vocabulary")
        # what training recorded (own checkpoints since the facts were stored; older ones and official
        # releases: None, and the Detector falls back to the official 640 and the first prompts)
        self.stored_imgsz: int | None = self.meta.get("imgsz")
        self.stored_class_names: list[str] | None = self.meta.get("class_names")
        self.dtype = torch.float16 if half else torch.float32
        self.precision = "fp16" if half else "fp32"
        if half and self.device.type == "cpu":
            warnings.warn("half=True on the CPU: PyTorch's float16 CPU kernels are many times slower than "
                          "float32; float16 is meant for CUDA", stacklevel=4)
        if half:
            # the text encoder stays float32 (a round trip through float16 would change its weights,
            # its embeddings and their cache key); embeddings are cast when set
            for name, child in self.model.named_children():
                if name != "text_encoder":
                    child.half()
        self._text: Any = None

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.model, self.meta.get("text_embeddings"), texts)

    def set_text(self, text_embeds: np.ndarray) -> None:
        self._text = self._torch.from_numpy(np.ascontiguousarray(text_embeds)).to(self.device, self.dtype)

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        if self._text is None:
            raise YoloWorldError("no vocabulary set (call set_text / Detector.set_classes)")
        with torch.inference_mode():
            # cast after the copy: float32 crosses to the GPU, the cast runs there
            x = torch.from_numpy(images).to(self.device).to(self.dtype)
            out = self.model(x.contiguous(memory_format=self._memory_format), self._text)
        # (B, C, H, W) C-ordered numpy, whatever layout the network computed in
        res = {f"cls_logits_{i}": _numpy(t) for i, t in enumerate(out.cls_logits)}
        res.update({f"box_dists_{i}": _numpy(t) for i, t in enumerate(out.box_dists)})
        return res

    def close(self) -> None:
        self.model = None


def _numpy(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.float().cpu().numpy())


def encode_texts(model: Any, stored: dict[str, Any] | None, texts: list[str]) -> np.ndarray:
    """L2-normalised ``(N, D)`` float32: stored embeddings first (prompt-tuned rows, or every row of a
    model trained without its text encoder), the model's text encoder for everything else."""
    stored = stored or {}
    missing = [t for t in texts if t not in stored]
    if missing and model.text_encoder is None:
        raise VocabularyError(
            f"this checkpoint has no text encoder (fixed-vocabulary fine-tuning), so it only knows its "
            f"own prompts: {sorted(stored)[:20]}; unknown: {missing[:5]}")
    encoded = dict(zip(missing, model.encode_text(missing).cpu().numpy(), strict=True)) if missing else {}
    return np.stack([np.asarray(stored[t], np.float32) if t in stored else encoded[t] for t in texts])
