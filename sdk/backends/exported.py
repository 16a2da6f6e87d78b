"""What every runtime of ``yoloworld-export`` artifacts shares: the manifest, the files beside the
artifact, and the open vocabulary (prompts -> tokens -> the exported text encoder -> padded embeddings
with a mask). A runtime backend supplies only ``_run_text(ids)`` and ``_run(feed)``. No torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import VocabularyError, YoloWorldError
from ..manifest import Manifest, read_manifest
from .base import ClosingBackend

_TEXT_CHUNK = 256  # prompts per text-encoder call


class ExportedBackend(ClosingBackend):
    """Base of the ONNX Runtime and OpenVINO backends (see :class:`sdk.backends.base.Backend`)."""

    #: dtype the runtime's ``text_mask`` input takes (bool or float32), set by the subclass
    _mask_dtype: type = np.float32

    def _read(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(path)
        self.open_vocabulary = self.manifest.open_vocabulary
        self.output_form = self.manifest.output_form
        self.stored_vocabulary = None
        self.stored_imgsz, self.stored_class_names = None, None  # the manifest has both
        self.capacity = self.manifest.vocab_capacity if self.open_vocabulary else 0
        self.tokenizer = None
        self._embeddings: dict[str, np.ndarray] = {}
        self._text_feed: dict[str, np.ndarray] | None = None

    def _beside(self, key: str) -> Path:
        """A file the manifest names (``extra[key]``) in the artifact's folder."""
        name = self.manifest.extra.get(key)
        path = self.path.parent / str(name)
        if not name or not path.is_file():
            raise YoloWorldError(f"{self.path}: its {key.replace('_', ' ')} file {str(path)!r} is missing; keep "
                                 f"the files yoloworld-export wrote together")
        return path

    def _run_text(self, ids: np.ndarray) -> np.ndarray:
        """Token ids int64 ``(N, T)`` -> embeddings ``(N, D)`` from the exported text encoder."""
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 ``(N, D)`` from the exported text encoder (open vocabulary only);
        cached per prompt."""
        if not self.open_vocabulary:
            raise YoloWorldError("this exported model has its vocabulary folded in "
                                 f"({self.manifest.class_names}); re-export it for other classes")
        missing = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if missing and self.tokenizer is None:
            from ..tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(str(self._beside("tokenizer_vocab")),
                                            int(self.manifest.extra.get("context_length", 77)))
        for start in range(0, len(missing), _TEXT_CHUNK):
            chunk = missing[start:start + _TEXT_CHUNK]
            emb = self._run_text(self.tokenizer.batch(chunk))
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
        emb = np.zeros((cap, text_embeds.shape[1]), np.float32)
        emb[:n] = text_embeds
        mask = np.zeros(cap, self._mask_dtype)
        mask[:n] = 1
        self._text_feed = {"text_embeds": emb, "text_mask": mask}

    def _feed(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of one ``infer`` call, checked against what the artifact accepts."""
        b, (h, w) = images.shape[0], images.shape[2:]
        if not self.manifest.dynamic_batch and b != 1:
            raise YoloWorldError(f"this model was exported with a static batch of 1; got a batch of {b} "
                                 f"(use batch_size=1 or re-export without --static-batch)")
        if not self.manifest.dynamic_hw and (h, w) != tuple(self.manifest.imgsz):
            raise YoloWorldError(f"{self.path.name} takes {self.manifest.imgsz[0]}x{self.manifest.imgsz[1]} inputs "
                                 f"only (exported with a static shape); got {h}x{w}")
        feed = {self.manifest.input_name: images}
        if self.open_vocabulary:
            if self._text_feed is None:
                raise YoloWorldError("no vocabulary set (call set_text / Detector.set_classes)")
            feed.update(self._text_feed)
        return feed
