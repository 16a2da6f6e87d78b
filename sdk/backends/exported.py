"""What every runtime of ``yoloworld-export`` artifacts shares: the manifest, the files beside the
artifact, and the open vocabulary (prompts -> tokens -> the exported text encoder -> padded embeddings
with a mask). A runtime backend supplies only ``_run_text(ids)`` and ``_infer(images)``. No torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VocabularyError, YoloWorldError
from ..manifest import Manifest
from .base import BackendBase

_TEXT_CHUNK = 256  # prompts per text-encoder call


class ExportedBackend(BackendBase):
    """Base of the ONNX Runtime and OpenVINO backends (see :class:`sdk.backends.base.Backend`)."""

    #: dtype the runtime's ``text_mask`` input takes (bool or float32), set by the subclass
    _mask_dtype: type = np.float32
    manifest: Manifest  # always set by _read

    def _read(self, path: str | os.PathLike) -> Manifest:
        manifest = self._read_manifest(path)
        self.capacity = manifest.vocab_capacity if self.open_vocabulary else 0
        self.tokenizer: Any = None
        self._embeddings: dict[str, np.ndarray] = {}
        self._text_feed: dict[str, np.ndarray] | None = None
        return manifest


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
            raise self.folded()
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
            raise self.folded()
        text_embeds = np.asarray(text_embeds, np.float32)
        n, cap = text_embeds.shape[0], self.capacity
        if n > cap:
            raise VocabularyError(f"the vocabulary needs {n} text slots but {self.path.name} was exported with "
                                  f"a vocabulary capacity of {cap}; use at most {cap} prompts or re-export "
                                  f"with a larger capacity")
        emb = np.zeros((cap, text_embeds.shape[1]), np.float32)
        emb[:n] = text_embeds
        mask: np.ndarray = np.zeros(cap, self._mask_dtype)
        mask[:n] = 1
        self._text_feed = {"text_embeds": emb, "text_mask": mask}

    def _feed(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of one ``infer`` call (``images`` already checked by ``check_input``)."""
        feed = {self.manifest.input_name: images}
        if self.open_vocabulary:
            if self._text_feed is None:
                raise YoloWorldError("no vocabulary set (call set_text / Detector.set_classes)")
            feed.update(self._text_feed)
        return feed
