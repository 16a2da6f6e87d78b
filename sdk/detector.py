"""``Detector``: images in, ``Detections`` out, on any backend, with shared numpy pre/post-processing."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .backends.base import Backend, RuntimeOptions
from .background import in_background
from .detections import Detections
from .errors import ImageError, VocabularyError
from .facts import ModelFacts, resolve_imgsz, resolve_vocabulary
from .images import ImageSource, expand_sources, iter_frames, load
from .postprocess import postprocess
from .preprocess import LetterboxInfo, letterbox, rect_shape, to_network_input
from .settings import BACKENDS, BackendName, DetectorSettings
from .vocabulary import ClassesLike, PromptMerge, Vocabulary


def default_backend(weights: str | os.PathLike, device: str) -> BackendName:
    """The fastest correct backend here for ``weights``: a checkpoint -> torch; ``.engine``/``.plan`` ->
    tensorrt; ``.onnx`` -> openvino on a CPU when it is installed (for an int8 export: where the CPU has
    VNNI or AMX), else onnxruntime."""
    suffix = Path(weights).suffix.lower()
    if suffix in (".engine", ".plan"):
        return "tensorrt"
    if suffix != ".onnx":
        return "torch"
    if device == "cpu" and importlib.util.find_spec("openvino") is not None:
        from .backends.openvino import native_int8

        # OpenVINO's int8 kernels need int8 dot products (VNNI, AMX) to stay accurate
        return "openvino" if native_int8() or not _is_int8(weights) else "onnxruntime"
    return "onnxruntime"


def _is_int8(weights: str | os.PathLike) -> bool:
    from .errors import YoloWorldError
    from .manifest import read_manifest

    try:
        return read_manifest(weights).precision == "int8"
    except YoloWorldError:  # unreadable: the backend that opens it says why
        return False


def open_backend(weights: str | os.PathLike, device: str = "cpu", runtime: RuntimeOptions | None = None,
                 backend: BackendName | None = None) -> Backend:
    """Open ``weights`` on ``backend`` (None: :func:`default_backend`). Each backend module imports its
    runtime only when opened."""
    backend = backend or default_backend(weights, device)
    suffix = Path(weights).suffix.lower()
    kinds = {"onnxruntime": (".onnx",), "openvino": (".onnx",), "tensorrt": (".engine", ".plan")}
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)} or None (automatic), got {backend!r}")
    if backend in kinds and suffix not in kinds[backend]:
        raise ValueError(f"backend {backend!r} runs {' or '.join(kinds[backend])} files; got {weights}")
    if backend == "torch" and suffix in (".onnx", ".engine", ".plan"):
        raise ValueError(f"backend 'torch' runs checkpoints (.pth/.pt); {weights} is an export")
    if runtime is not None and runtime.half and backend != "torch":
        raise ValueError(f"RuntimeOptions(half=True) is for PyTorch checkpoints; {weights} runs in the precision "
                         f"it was exported with (yoloworld-export --precision fp16)")
    if backend == "onnxruntime":
        from .backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(weights, device, runtime)
    if backend == "openvino":
        from .backends.openvino import OpenVinoBackend

        return OpenVinoBackend(weights, device, runtime)
    if backend == "tensorrt":
        from .backends.tensorrt import TensorRTBackend

        return TensorRTBackend(weights, "cuda" if device == "cpu" else device, runtime)
    from .backends.torch import TorchBackend  # imports torch only here

    return TorchBackend(weights, device, runtime)


class Detector:
    """Open-vocabulary detector on a checkpoint (official ``.pth`` or this SDK's ``.pt``) or an export.

    Args:
        weights: checkpoint path, or an exported ``.onnx`` (OpenVINO or ONNX Runtime) or ``.engine``
            (TensorRT): a fixed-vocabulary export knows only its own classes; an open-vocabulary export
            takes any ``classes`` up to its capacity. Exports run torch-free.
        classes: class names, ``"a,b,c"``, a class-text JSON path (one prompt list per class), or a
            :class:`Vocabulary`. Defaults to the vocabulary stored in an own checkpoint.
        device: ``"cpu"`` or ``"cuda[:i]"`` (a TensorRT engine always runs on a GPU: ``"cpu"`` means ``cuda:0``).
        imgsz: network input size, a multiple of 32. None: the size the model knows, i.e. an export's
            (from its manifest) or the size an own checkpoint was trained at; 640 (official) for official
            releases and older checkpoints. An export with dynamic height and width also runs at any
            smaller size; a static one only at its own. ``detector.describe()`` says what was used.
        backend: ``"openvino"``, ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``; None picks the fastest
            correct one here (:func:`default_backend`). ``detector.backend.name`` / ``.precision`` say which
            ran and in which precision (also in every result's ``data``).
        rect: letterbox each image to the smallest multiple-of-32 input that holds it (a 1280x720 photo
            at 640 -> 384x640) instead of the square ``imgsz`` one; images of one batch that need
            different shapes run as separate batches, so batching never changes a result. None: off, the
            official square pipeline, for every file type, so a checkpoint and its export score the same
            (rect cost 2.0 mAP50:95 points on real photos, see benchmarks/README.md); True is faster.
        conf, iou, max_det: score threshold, NMS IoU threshold, detections kept per image.
        agnostic: class-agnostic NMS.
        prompt_merge: how several prompts per class combine: ``"first"`` (official), ``"mean"``
            or ``"max"``. pad_prompt: append the official demo's ``' '`` prompt (never reported).
        runtime: :class:`RuntimeOptions` (PyTorch float16; ONNX Runtime providers, threads, IO binding;
            TensorRT CUDA graphs and batch splitting).

    Example:
        >>> det = Detector("yolo_world_v2_s.pth", classes=["person", "bus"])  # doctest: +SKIP
        >>> results = det.predict("bus.jpg")  # doctest: +SKIP
        >>> results[0].xyxy, results[0].class_name  # doctest: +SKIP
    """

    def __init__(self, weights: str | os.PathLike, classes: ClassesLike | None = None,
                 device: str = "cpu", imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7,
                 max_det: int = 300, agnostic: bool = False, prompt_merge: PromptMerge = "first",
                 pad_prompt: bool = False, runtime: RuntimeOptions | None = None, backend: BackendName | None = None,
                 rect: bool | None = None) -> None:
        self.settings = DetectorSettings(device, imgsz, conf, iou, max_det, agnostic, prompt_merge, pad_prompt,
                                         backend, rect, runtime or RuntimeOptions())  # validated here
        self.backend: Backend = open_backend(weights, device, runtime, backend)
        b = self.backend
        manifest = b.manifest
        facts = ModelFacts(manifest, b.stored_vocabulary, b.stored_imgsz, b.stored_class_names)
        self.imgsz, self.imgsz_from = resolve_imgsz(imgsz, weights, facts)
        if rect and manifest is not None and not manifest.dynamic_hw:
            raise ValueError(f"rect=True needs an artifact exported with dynamic height and width; {weights} takes "
                             f"{manifest.imgsz[0]}x{manifest.imgsz[1]} only (re-export it without --static-shape)")
        self.rect = bool(rect)  # None -> square: rect is a measured accuracy cost, so it is opt-in
        # an exported open-vocabulary artifact: prompts go through its text encoder, scores come back
        # padded to its vocabulary capacity
        self._capacity = manifest.vocab_capacity if manifest is not None and manifest.open_vocabulary else 0
        self.vocabulary: Vocabulary = resolve_vocabulary(classes, weights, facts, prompt_merge, pad_prompt)
        if b.open_vocabulary:
            self.set_classes(self.vocabulary)

    @classmethod
    def from_settings(cls, weights: str | os.PathLike, classes: ClassesLike | None = None,
                      settings: DetectorSettings | None = None) -> Detector:
        """A detector on ``weights`` run as ``settings`` say (the command lines and labelling build it so)."""
        s = settings or DetectorSettings()
        return cls(weights, classes, device=s.device, imgsz=s.imgsz, conf=s.conf, iou=s.iou, max_det=s.max_det,
                   agnostic=s.agnostic, prompt_merge=s.prompt_merge, pad_prompt=s.pad_prompt, runtime=s.runtime,
                   backend=s.backend, rect=s.rect)

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.names

    conf = property(lambda self: self.settings.conf, doc="Default score threshold.")
    iou = property(lambda self: self.settings.iou, doc="Default NMS IoU threshold.")
    max_det = property(lambda self: self.settings.max_det, doc="Default detections kept per image.")
    agnostic = property(lambda self: self.settings.agnostic, doc="Class-agnostic NMS.")

    def ran_with(self) -> dict[str, object]:
        """What this detector runs with, for a results JSON: input size and where it came from, backend,
        precision, letterbox, number of classes."""
        return {"imgsz": self.imgsz, "imgsz_from": self.imgsz_from, "backend": self.backend.name,
                "precision": self.backend.precision, "letterbox": "rect" if self.rect else "square",
                "classes": len(self.class_names)}

    def describe(self) -> str:
        """:meth:`ran_with` as the one line every command prints, e.g. ``imgsz 256 (trained at), torch
        fp32, square letterbox, 4 classes``."""
        r = self.ran_with()
        return (f"imgsz {r['imgsz']} ({r['imgsz_from']}), {r['backend']} {r['precision']}, {r['letterbox']} "
                f"letterbox, {r['classes']} classes")

    def set_classes(self, classes: ClassesLike, prompt_merge: PromptMerge | None = None,
                    pad_prompt: bool | None = None) -> None:
        """Change the vocabulary without reloading the model (embeddings are cached per text)."""
        if not self.backend.open_vocabulary:
            raise VocabularyError(f"this model has its vocabulary folded in: {self.class_names}; re-export it "
                                  f"with yoloworld-export for other classes")
        old = getattr(self, "vocabulary", None)
        merge = prompt_merge or (old.merge if old else self.settings.prompt_merge)
        pad = pad_prompt if pad_prompt is not None else (old.pad_prompt if old else self.settings.pad_prompt)
        vocab = Vocabulary.from_any(classes, merge, pad)
        if self._capacity and len(vocab.model_texts()) > self._capacity:
            raise VocabularyError(
                f"{len(vocab)} classes need {len(vocab.model_texts())} text slots (prompt_merge={merge!r}, "
                f"pad_prompt={pad}) but this model was exported with a vocabulary capacity of "
                f"{self._capacity}; re-export it with a larger capacity")
        self.backend.set_text(vocab.embeddings(self.backend.encode_text))
        self.vocabulary = vocab

    def predict(self, images: ImageSource | Iterable[ImageSource], batch_size: int = 8,
                conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                skip_bad: bool = False) -> list[Detections]:
        """Detect in a path, a folder, a BGR array, or a list of them; one result per image, in order.

        Batching never changes a result: every image is letterboxed on its own (to ``imgsz``, or with
        ``rect`` to its own minimal shape; images of different shapes run as separate batches).
        An unreadable or invalid image raises :class:`ImageError` naming it; with ``skip_bad`` it
        gets an empty result whose ``data["error"]`` says why, and the others are returned.
        """
        settings = self.settings.with_thresholds(conf, iou, max_det)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sources = expand_sources(images)
        results: list[Detections] = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            results.extend(self._run([self._prepare(item, start + i, skip_bad) for i, item in enumerate(chunk)],
                                     settings))
        return results

    __call__ = predict

    def predict_stream(self, source: ImageSource | Iterable[ImageSource] | int, batch_size: int | None = None,
                       conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                       prefetch: int = 8, with_frames: bool = False
                       ) -> Iterator[Detections] | Iterator[tuple[np.ndarray, Detections]]:
        """Yield one result per frame while reading: a video file, a camera index, an image folder,
        or any iterable of paths / BGR arrays. A reader thread (:func:`~sdk.background.in_background`) decodes and
        letterboxes ahead of inference (``prefetch`` frames); results equal :meth:`predict` on the same frames.
        ``with_frames``: yield ``(frame, result)``, the frame as decoded (BGR uint8), e.g. to draw on.
        ``batch_size`` None: the backend's ``preferred_batch`` (1, or an OpenVINO throughput-mode
        backend's requests in flight)."""
        batch_size = batch_size or self.backend.preferred_batch
        settings = self.settings.with_thresholds(conf, iou, max_det)
        boxed = (self._letterbox(image, name, time.perf_counter(), keep_frame=with_frames)
                 for image, name in iter_frames(source))
        items = in_background(boxed, max(prefetch, batch_size), "yoloworld-reader")
        with contextlib.closing(items):
            while batch := list(itertools.islice(items, batch_size)):
                results = self._run(batch, settings)
                if with_frames:
                    yield from zip([it.frame for it in batch], results, strict=True)
                else:
                    yield from results

    def _prepare(self, item: str | np.ndarray, index: int, skip_bad: bool) -> Letterboxed | Detections:
        """One source read and letterboxed; with ``skip_bad`` an unreadable one becomes its error result."""
        t0 = time.perf_counter()
        try:
            image, name = load(item, index)
        except ImageError as e:
            if not skip_bad:
                raise
            return Detections.empty(source=item if isinstance(item, str) else f"array#{index}", error=str(e))
        return self._letterbox(image, name, t0)

    def _letterbox(self, image: np.ndarray, source: str, t_read: float, keep_frame: bool = False) -> Letterboxed:
        shape = rect_shape(image.shape[0], image.shape[1], self.imgsz) if self.rect else None
        boxed, info = letterbox(image, self.imgsz, shape=shape)
        return Letterboxed(boxed, info, source, (time.perf_counter() - t_read) * 1e3,
                           image if keep_frame else None)

    def _run(self, items: Iterable[Letterboxed | Detections], settings: DetectorSettings) -> list[Detections]:
        """The one batching path: error results stay in place, letterboxed images of one input shape run
        as one network call (so batching never changes a result); results in order."""
        items = list(items)
        out = {i: it for i, it in enumerate(items) if isinstance(it, Detections)}
        groups: dict[tuple[int, ...], list[tuple[int, Letterboxed]]] = {}
        for i, it in enumerate(items):
            if isinstance(it, Letterboxed):
                groups.setdefault(it.image.shape, []).append((i, it))
        for group in groups.values():
            for (i, _), result in zip(group, self._run_group([it for _, it in group], settings), strict=True):
                out[i] = result
        return [out[i] for i in range(len(items))]

    def _run_group(self, items: list[Letterboxed], settings: DetectorSettings) -> list[Detections]:
        """One network call on images of one shape and the shared post-processing; per-stage timings
        per image (``preprocess``: reading, letterboxing and the batch's conversion)."""
        t0 = time.perf_counter()
        batch = to_network_input(np.stack([it.image for it in items]))
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        t2 = time.perf_counter()
        found = postprocess(raw, self.backend.output_form, [it.info for it in items], settings.conf, settings.iou,
                            settings.max_det, settings.agnostic, self._class_scores)
        t3 = time.perf_counter()
        n = len(items)
        names = np.asarray(self.vocabulary.names)
        ran = {"backend": self.backend.name, "precision": self.backend.precision}
        return [Detections(d.xyxy, d.confidence, d.class_id, names[d.class_id], {
                    "source": it.source, "image_hw": it.info.orig_hw, **ran,
                    "speed_ms": {"preprocess": it.prep_ms + (t1 - t0) * 1e3 / n, "inference": (t2 - t1) * 1e3 / n,
                                 "postprocess": (t3 - t2) * 1e3 / n}})
                for it, d in zip(items, found, strict=True)]

    def _class_scores(self, scores: np.ndarray) -> np.ndarray:
        """The model's score columns ``(..., T)`` -> the vocabulary's classes ``(..., C)``: a folded
        export's are the classes already; otherwise the vocabulary's texts (an open-vocabulary export
        pads to its capacity), merged per class."""
        if self.backend.output_form == "raw" and not self._capacity:
            return scores
        return self.vocabulary.reduce_scores(scores[..., :len(self.vocabulary.model_texts())])


class Letterboxed(NamedTuple):
    """One image ready for the network: ``image`` letterboxed BGR uint8 ``(H, W, 3)``, its
    :class:`LetterboxInfo`, the source's name, the ms spent reading and letterboxing it, and the frame as
    decoded (``predict_stream(with_frames=True)``, else None)."""

    image: np.ndarray
    info: LetterboxInfo
    source: str
    prep_ms: float
    frame: np.ndarray | None = None
