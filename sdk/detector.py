"""``Detector``: images in, ``Detections`` out, on any backend, with shared numpy pre/post-processing."""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from .backends.base import RuntimeOptions
from .detections import Detections
from .errors import ImageError, VocabularyError
from .images import ImageSource, expand_sources, iter_frames, load
from .manifest import Manifest
from .postprocess import STRIDES, decode_head_outputs, postprocess_image, unpack_nms_outputs
from .preprocess import letterbox, preprocess, rect_shape, to_network_input
from .vocabulary import ClassesLike, PromptMerge, Vocabulary

BackendName = Literal["onnxruntime", "openvino", "tensorrt", "torch"]
BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino", "tensorrt", "torch")


def default_backend(weights: str | os.PathLike, device: str) -> str:
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
                 backend: str | None = None):  # -> a Backend
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
            different shapes run as separate batches, so batching never changes a result. None: on for
            exports with dynamic height and width, off otherwise (the official square pipeline).
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
        check_detector_settings(imgsz, conf, iou, max_det)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.agnostic = agnostic
        self.backend = open_backend(weights, device, runtime, backend)
        manifest = self.backend.manifest
        self.imgsz, self.imgsz_from = resolve_imgsz(imgsz, weights, manifest, self.backend.stored_imgsz)
        dynamic = manifest is None or manifest.dynamic_hw
        if rect and not dynamic:
            raise ValueError(f"rect=True needs an artifact exported with dynamic height and width; {weights} takes "
                             f"{manifest.imgsz[0]}x{manifest.imgsz[1]} only (re-export it without --static-shape)")
        self.rect = bool(rect) if rect is not None else manifest is not None and manifest.dynamic_hw
        # an exported open-vocabulary artifact: prompts go through its text encoder, scores come back
        # padded to its vocabulary capacity
        self._capacity = manifest.vocab_capacity if manifest is not None and manifest.open_vocabulary else 0
        if manifest is not None and not manifest.open_vocabulary:
            # an exported artifact: the vocabulary comes from its manifest
            fixed = Vocabulary.from_any(manifest.prompts, manifest.prompt_merge,  # type: ignore[arg-type]
                                        labels=manifest.class_names)
            given = Vocabulary.from_any(classes).names if classes is not None else None
            if given is not None and given not in (fixed.names, [p[0] for p in fixed.prompts]):
                raise VocabularyError(f"{weights} has its vocabulary folded in: {fixed.names}; "
                                      f"re-export it with yoloworld-export for other classes")
            self.vocabulary = fixed
            return
        if classes is None:
            stored = self.backend.stored_vocabulary
            if not stored:
                raise VocabularyError(f"{weights} stores no vocabulary; pass classes=[...] or a "
                                      f"class-text JSON")
            # the dataset's category names ride along as the class names the results report
            classes = Vocabulary.from_any(stored, labels=self.backend.stored_class_names)
        self.vocabulary: Vocabulary
        self.set_classes(classes, prompt_merge, pad_prompt)

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.names

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
        old = getattr(self, "vocabulary", None)
        merge = prompt_merge or (old.merge if old else "first")
        pad = pad_prompt if pad_prompt is not None else (old.pad_prompt if old else False)
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
        conf = self.conf if conf is None else conf
        iou = self.iou if iou is None else iou
        max_det = self.max_det if max_det is None else max_det
        _check_thresholds(conf, iou, max_det)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sources = expand_sources(images)
        results: list[Detections] = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            results.extend(self._predict_batch(chunk, start, conf, iou, max_det, skip_bad))
        return results

    __call__ = predict

    def predict_stream(self, source: ImageSource | Iterable[ImageSource] | int, batch_size: int | None = None,
                       conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                       prefetch: int = 8, with_frames: bool = False
                       ) -> Iterator[Detections] | Iterator[tuple[np.ndarray, Detections]]:
        """Yield one result per frame while reading: a video file, a camera index, an image folder,
        or any iterable of paths / BGR arrays. A reader thread decodes and letterboxes ahead of
        inference (``prefetch`` frames); results equal :meth:`predict` on the same frames.
        ``with_frames``: yield ``(frame, result)``, the frame as decoded (BGR uint8), e.g. to draw on.
        ``batch_size`` None: 1, or an OpenVINO throughput-mode backend's requests in flight."""
        batch_size = batch_size or getattr(self.backend, "preferred_batch", 1)
        conf = self.conf if conf is None else conf
        iou = self.iou if iou is None else iou
        max_det = self.max_det if max_det is None else max_det
        _check_thresholds(conf, iou, max_det)
        frames: queue.Queue = queue.Queue(maxsize=max(prefetch, batch_size))
        done = object()
        stop = threading.Event()

        def reader() -> None:
            try:
                for image, name in iter_frames(source):
                    t = time.perf_counter()
                    shape = rect_shape(*image.shape[:2], self.imgsz) if self.rect else None
                    item = (letterbox(image, self.imgsz, shape=shape), name, t, image if with_frames else None)
                    while not stop.is_set():
                        try:
                            frames.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except Exception as e:  # surfaced in the consumer, with its message
                frames.put(e)
            frames.put(done)

        thread = threading.Thread(target=reader, daemon=True, name="yoloworld-reader")
        thread.start()
        try:
            finished = False
            while not finished:
                batch: list = []
                while len(batch) < batch_size:
                    item = frames.get()
                    if item is done:
                        finished = True
                        break
                    if isinstance(item, Exception):
                        raise item
                    batch.append(item)
                if batch:
                    results = self._run_letterboxed(batch, conf, iou, max_det)
                    if with_frames:
                        yield from zip([frame for *_, frame in batch], results, strict=True)
                    else:
                        yield from results
        finally:
            stop.set()

    def _run_letterboxed(self, batch: list, conf: float, iou: float, max_det: int) -> list[Detections]:
        """``predict_stream``'s items ``((letterboxed, info), name, t_read, frame)``, one network call per
        input shape, results in order."""
        results: list[Detections] = [None] * len(batch)  # type: ignore[list-item]
        for idx in _groups([lb.shape for (lb, _), _, _, _ in batch]):
            part = [batch[i] for i in idx]
            got = self._run(to_network_input(np.stack([lb for (lb, _), _, _, _ in part])),
                            [info for (_, info), _, _, _ in part], [name for _, name, _, _ in part],
                            conf, iou, max_det, t_start=min(t for _, _, t, _ in part))
            for i, result in zip(idx, got, strict=True):
                results[i] = result
        return results

    def _predict_batch(self, chunk: list, start: int, conf: float, iou: float, max_det: int,
                       skip_bad: bool = False) -> list[Detections]:
        t0 = time.perf_counter()
        loaded, failed = [], {}
        for i, item in enumerate(chunk):
            try:
                loaded.append(load(item, start + i))
            except ImageError as e:
                if not skip_bad:
                    raise
                failed[i] = Detections.empty(source=item if isinstance(item, str) else f"array#{start + i}",
                                             error=str(e))
        good: list[Detections] = [None] * len(loaded)  # type: ignore[list-item]
        shapes = [rect_shape(*img.shape[:2], self.imgsz) if self.rect else None for img, _ in loaded]
        for idx in _groups(shapes):  # images that need different input shapes run as separate batches
            batch, infos = preprocess([loaded[i][0] for i in idx], self.imgsz, rect=self.rect)
            got = self._run(batch, infos, [loaded[i][1] for i in idx], conf, iou, max_det, t_start=t0)
            for i, result in zip(idx, got, strict=True):
                good[i] = result
            t0 = time.perf_counter()
        it = iter(good)
        return [failed[i] if i in failed else next(it) for i in range(len(chunk))]

    def _run(self, batch: np.ndarray, infos: list, sources: list[str], conf: float, iou: float, max_det: int,
             t_start: float) -> list[Detections]:
        """Inference + post-processing of a preprocessed batch; per-stage timings per image
        (``preprocess`` counts from ``t_start``: reading and letterboxing)."""
        t0 = t_start
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        t2 = time.perf_counter()
        per_image = self._postprocess(raw, infos, conf, iou, max_det)
        t3 = time.perf_counter()
        n = len(sources)
        speed = {"preprocess": (t1 - t0) * 1e3 / n, "inference": (t2 - t1) * 1e3 / n,
                 "postprocess": (t3 - t2) * 1e3 / n}
        names = np.asarray(self.vocabulary.names)
        ran = {"backend": self.backend.name, "precision": self.backend.precision}
        return [Detections(xyxy, score, cls, names[cls], {"source": source, "image_hw": info.orig_hw,
                                                           "speed_ms": dict(speed), **ran})
                for (xyxy, score, cls), source, info in zip(per_image, sources, infos, strict=True)]

    def _postprocess(self, raw: dict[str, np.ndarray], infos: list, conf: float, iou: float, max_det: int
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image (xyxy, score, class) from what the backend returned, by its ``output_form``."""
        form = self.backend.output_form
        if form in ("nms", "trt_nms"):  # end-to-end artifact: NMS ran in the graph
            return [unpack_nms_outputs(raw, b, info, conf, max_det) for b, info in enumerate(infos)]
        if form == "raw":  # an export: decoded, one column per model text
            scores, boxes = raw["scores"], raw["boxes"]
            if self._capacity:  # open vocabulary: the vocabulary's columns, then merged per class
                scores = self.vocabulary.reduce_scores(scores[..., :len(self.vocabulary.model_texts())])
        else:  # a checkpoint's head outputs
            n = len(STRIDES)
            scores, boxes = decode_head_outputs([raw[f"cls_logits_{i}"] for i in range(n)],
                                                [raw[f"box_dists_{i}"] for i in range(n)])
            scores = self.vocabulary.reduce_scores(scores)
        return [postprocess_image(scores[b], boxes[b], info, conf, iou, max_det, self.agnostic)
                for b, info in enumerate(infos)]


def _groups(keys: list) -> list[list[int]]:
    """Indices grouped by equal key, groups in order of first appearance."""
    out: dict = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return list(out.values())


def check_detector_settings(imgsz: int | None, conf: float, iou: float, max_det: int) -> None:
    """``ValueError`` naming the first of ``Detector``'s size and threshold settings out of range
    (``imgsz`` None: the model's own size)."""
    if imgsz is not None and (imgsz <= 0 or imgsz % 32):
        raise ValueError(f"imgsz must be a positive multiple of 32, got {imgsz}")
    _check_thresholds(conf, iou, max_det)


#: Input size of official releases (every official config) and of own checkpoints that predate the record.
OFFICIAL_IMGSZ = 640


def resolve_imgsz(imgsz: int | None, weights: str | os.PathLike, manifest: Manifest | None,
                  stored: int | None) -> tuple[int, str]:
    """(input size, where it came from): an explicit ``imgsz`` wins where the model can run it; else an
    export's own size, a checkpoint's training size, or the official 640."""
    if manifest is not None:
        native = manifest.imgsz[0]
        if imgsz is None or imgsz == native:
            return native, "exported at"
        if manifest.dynamic_hw and imgsz < native:
            return imgsz, "option"
        raise ValueError(f"{weights} was exported at {native}x{native}"
                         + (" (inputs up to that size)" if manifest.dynamic_hw else " (that size only)")
                         + f"; imgsz {imgsz} needs a re-export with --imgsz {imgsz}")
    if imgsz is not None:
        return imgsz, "option"
    if stored is not None:
        return int(stored), "trained at"
    return OFFICIAL_IMGSZ, "official default"


def _check_thresholds(conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= conf < 1.0:
        raise ValueError(f"conf must be in [0, 1), got {conf}")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
