"""OpenVINO backend: the CPU fast path for what ``yoloworld-export`` wrote (the same ``.onnx`` files).

Precision: an fp32 or fp16 artifact runs in bfloat16 where the CPU executes it natively (AMX or
AVX512-BF16, OpenVINO's ``BF16`` capability), else in float32; ``RuntimeOptions(precision=...)``
overrides. An int8 (Q/DQ) artifact runs its quantized layers in int8 as exported.

An input shape seen twice gets its own compiled model (static shapes run 15-20 % faster than the
dynamic compile on the CPU), up to ``_STATIC_SHAPES`` of them; other shapes run on the dynamic one.
With a cache folder (``RuntimeOptions.cache_dir``, default ``$YOLOWORLD_CACHE_DIR/openvino`` or
``~/.cache/yoloworld-sdk/openvino``) a restart loads compiled models instead of compiling them.

Modes: ``latency`` (default) runs a batch as one request; ``throughput`` runs each image of a batch as
its own request, several in flight (``num_requests``, default what OpenVINO finds optimal).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import YoloWorldError
from .base import RuntimeOptions
from .exported import ExportedBackend

_STATIC_SHAPES = 16  # static compiled models kept per artifact, one per input shape
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def cache_folder(options: RuntimeOptions) -> str | None:
    """Where compiled models are cached: ``options.cache_dir`` ("" or "off": nowhere), else
    ``$YOLOWORLD_CACHE_DIR/openvino``, else ``~/.cache/yoloworld-sdk/openvino``."""
    if options.cache_dir is not None:
        return None if options.cache_dir in ("", "off") else options.cache_dir
    root = os.environ.get("YOLOWORLD_CACHE_DIR")
    if root == "off":
        return None
    return str(Path(root) / "openvino") if root else str(Path.home() / ".cache" / "yoloworld-sdk" / "openvino")


@functools.lru_cache(maxsize=1)
def shared_core():
    """One OpenVINO Core per process, never freed: when the last Core goes, OpenVINO unloads its CPU
    plugin while the plugin's idle TBB worker threads live on, and the process crashed later, at random
    (seen in the test suite, beside PyTorch training)."""
    import openvino as ov

    return ov.Core()


def _isa_cap() -> str:
    """oneDNN's ISA cap (``ONEDNN_MAX_CPU_ISA``, which OpenVINO's CPU plugin obeys), "" when unset."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return "" if cap in ("ALL", "DEFAULT") else cap


def native_bf16(core, device: str = "CPU") -> bool:
    """True where OpenVINO runs bfloat16 natively on ``device`` (AMX, AVX512-BF16) and no ISA cap
    below that is set."""
    cap = _isa_cap()
    if cap and not any(k in cap for k in ("BF16", "AMX", "AVX10", "FP16")):
        return False
    try:
        return "BF16" in core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False


def native_int8() -> bool:
    """True where the CPU has int8 dot products (VNNI or AMX; from /proc/cpuinfo, assumed elsewhere) and
    no ISA cap below them is set. Without them OpenVINO's int8 kernels lose most of the accuracy of a
    symmetric (Q/DQ) int8 model: the demo model fell from mAP50:95 0.93 to 0.23 under AVX2."""
    cap = _isa_cap()
    if cap and not any(k in cap for k in ("VNNI", "BF16", "AMX", "AVX10", "FP16")):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), None)
    return flags is None or bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"})


class OpenVinoBackend(ExportedBackend):
    """``infer(images) -> {output name: array}`` on an exported ``.onnx`` model, with OpenVINO."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", options: RuntimeOptions | None = None) -> None:
        import openvino as ov  # imported on open: the optional extra

        options = options or RuntimeOptions()
        self._read(path)
        self._core = shared_core()
        self.device = "CPU" if device.lower() == "cpu" else device.upper()
        if self.device not in self._core.available_devices:
            raise YoloWorldError(f"OpenVINO has no device {self.device!r} here (available: "
                                 f"{self._core.available_devices}); use device='cpu'")
        if options.precision not in (None, *_HINTS):
            raise ValueError(f"precision must be one of {sorted(_HINTS)} or None (automatic), "
                             f"got {options.precision!r}")
        native = native_bf16(self._core, self.device)
        compute = options.precision or ("bf16" if native else "fp32")
        if compute == "bf16" and not native:  # OpenVINO would silently run float32: say so, and report it
            warnings.warn(f"{self.device} has no native bfloat16 (AMX or AVX512-BF16): running float32", stacklevel=3)
            compute = "fp32"
        self.precision = "int8" if self.manifest.precision == "int8" else compute
        if self.precision == "int8" and not native_int8():
            warnings.warn("this CPU has no VNNI or AMX int8 instructions: OpenVINO's int8 kernels lose most of the "
                          "model's accuracy here; run the fp32 export, or this one on ONNX Runtime (the automatic "
                          "choice does)", stacklevel=3)
        self.mode = options.performance
        if self.mode not in ("latency", "throughput"):
            raise ValueError(f"performance must be 'latency' or 'throughput', got {self.mode!r}")
        self._config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": _HINTS[compute],
                                              "PERFORMANCE_HINT": self.mode.upper()}
        if options.intra_op_threads:
            self._config["INFERENCE_NUM_THREADS"] = int(options.intra_op_threads)
        if self.mode == "throughput" and options.num_requests:
            self._config["PERFORMANCE_HINT_NUM_REQUESTS"] = int(options.num_requests)
        cache = cache_folder(options)
        if cache:
            self._config["CACHE_DIR"] = cache  # per compile: the Core is shared
        try:
            self._model = self._core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with the parser's message
            raise YoloWorldError(f"{path}: OpenVINO cannot read it: {e}") from None
        inputs = {i.get_any_name(): i for i in self._model.inputs}
        if self.open_vocabulary and inputs["text_mask"].get_element_type() == ov.Type.boolean:
            self._mask_dtype = bool
        self.output_names = list(self.manifest.output_names)
        self._compiled: dict[tuple | str, object] = {}  # input shape (or "dynamic") -> compiled model
        self._seen: dict[tuple, int] = {}  # input shape -> calls
        self._int8 = self.manifest.precision == "int8"
        self._requests: dict[int, list] = {}  # throughput mode: id(compiled model) -> its infer requests
        self._text: Any = None  # the text encoder, compiled on first use
        self.num_requests = options.num_requests or 1
        if self.mode == "throughput":
            self.num_requests = options.num_requests or int(
                self._compile((1, 3, *self.manifest.imgsz)).get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.preferred_batch = self.num_requests  # what predict_stream gathers to keep the requests busy

    def _compile(self, shape: tuple[int, ...]):
        """The compiled model for images of ``shape``: a static one from the second time a shape is
        seen (up to ``_STATIC_SHAPES`` of them), else the dynamic one, so one-off shapes of a mixed
        collection cost no compilation each. int8 artifacts always compile static shapes (the least
        recently compiled is dropped): OpenVINO's dynamic-shape int8 kernels are far less accurate
        (measured on the demo model: scores 0.33 from fp32, static 0.03)."""
        self._seen[shape] = self._seen.get(shape, 0) + 1
        statics = [k for k in self._compiled if k != "dynamic"]
        if self._int8 and shape not in self._compiled and len(statics) >= _STATIC_SHAPES:
            self._requests.pop(id(self._compiled[statics[0]]), None)  # its id may be reused by the next compile
            del self._compiled[statics[0]]
        static = shape in self._compiled or self._int8 or (self._seen[shape] >= 2 and len(statics) < _STATIC_SHAPES)
        key = shape if static else "dynamic"
        if key not in self._compiled:
            model = self._model
            if key != "dynamic":
                model = self._model.clone()
                model.reshape({self.manifest.input_name: list(shape)})
            self._compiled[key] = self._core.compile_model(model, self.device, self._config)
        return self._compiled[key]

    def _named(self, compiled, result) -> dict[str, np.ndarray]:
        """OpenVINO's outputs by the manifest's names (an output tensor can carry several names)."""
        out = {}
        for port in compiled.outputs:
            name = next(n for n in self.output_names if n in port.get_names())
            out[name] = np.asarray(result[port])
        return out

    def _run_text(self, ids: np.ndarray) -> np.ndarray:
        if self._text is None:  # float32 always: the embeddings are compared and cached across runs
            self._text = self._core.compile_model(str(self._beside("text_encoder")), self.device,
                                                  {"INFERENCE_PRECISION_HINT": "f32"})
        return np.asarray(self._text.create_infer_request().infer({0: ids})[0])

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        feed = self._feed(np.ascontiguousarray(images))
        if self.mode == "latency" or images.shape[0] == 1:
            compiled = self._compile(images.shape)
            return self._named(compiled, compiled.create_infer_request().infer(feed))
        return self._infer_per_image(feed)

    def _infer_per_image(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Throughput mode: one request per image, ``num_requests`` in flight (round robin); outputs
        re-stacked in order. Plain ``start_async``/``wait``: no Python callback runs on OpenVINO's threads."""
        images = feed[self.manifest.input_name]
        compiled = self._compile((1, *images.shape[1:]))
        requests = self._requests.setdefault(id(compiled), [compiled.create_infer_request()
                                                             for _ in range(self.num_requests)])
        results: list = [None] * images.shape[0]
        pending: dict[int, int] = {}  # request slot -> image index

        def collect(slot: int) -> None:
            requests[slot].wait()
            out = {p: requests[slot].get_tensor(p).data.copy() for p in compiled.outputs}
            results[pending.pop(slot)] = self._named(compiled, out)

        for i in range(images.shape[0]):
            slot = i % len(requests)
            if slot in pending:
                collect(slot)
            requests[slot].start_async({**feed, self.manifest.input_name: images[i:i + 1]})
            pending[slot] = i
        for slot in list(pending):
            collect(slot)
        return {name: np.concatenate([r[name] for r in results]) for name in self.output_names}

    def close(self) -> None:
        self._requests = {}
        self._compiled = {}
        self._text = None
        self._model = None
