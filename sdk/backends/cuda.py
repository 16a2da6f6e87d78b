"""The little CUDA the TensorRT backend needs, through cuda-python or pycuda (no torch).

Device buffers, pinned (page-locked) host buffers seen as numpy arrays, one stream, async copies,
and CUDA graph capture. :class:`CudaApi` is the protocol; :func:`open_cuda` picks cuda-python
(``cuda.bindings.runtime``, or the older ``cuda.cudart``) and falls back to pycuda.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from ..errors import YoloWorldError


class CudaApi(Protocol):
    """Pointers are ints; a stream and a graph are opaque handles; ``int(stream)`` is ``cudaStream_t``."""

    name: str
    supports_graphs: bool

    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def host_alloc(self, nbytes: int) -> np.ndarray:
        """Pinned host memory as a writable uint8 ``(nbytes,)`` array (async copies need it pinned)."""
    def host_free(self, array: np.ndarray) -> None: ...
    def stream_create(self) -> Any: ...
    def stream_destroy(self, stream: Any) -> None: ...
    def htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None: ...
    def dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None: ...
    def synchronize(self, stream: Any) -> None: ...
    def begin_capture(self, stream: Any) -> None: ...
    def end_capture(self, stream: Any) -> Any:
        """The instantiated graph of what was enqueued since :meth:`begin_capture`."""
    def launch(self, graph: Any, stream: Any) -> None: ...
    def graph_destroy(self, graph: Any) -> None: ...


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python; ImportError if neither
    return cudart


class CudaPython:
    """:class:`CudaApi` on cuda-python's runtime bindings."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self, device: int = 0) -> None:
        self.rt = _cudart()
        self._ok(self.rt.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._pinned: dict[int, int] = {}  # id(array) -> pointer
        self._h2d = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def _ok(self, result: Any, what: str) -> Any:
        parts: tuple[Any, ...] = result if isinstance(result, tuple) else (result,)
        err, rest = parts[0], list(parts[1:])
        if int(getattr(err, "value", err)) != 0:
            _, msg = self.rt.cudaGetErrorString(err)
            raise YoloWorldError(f"CUDA {what} failed: {msg.decode() if isinstance(msg, bytes) else msg}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def host_alloc(self, nbytes: int) -> np.ndarray:
        ptr = int(self._ok(self.rt.cudaMallocHost(max(nbytes, 1)), f"cudaMallocHost({nbytes})"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr))
        self._pinned[id(array)] = ptr
        return array

    def host_free(self, array: np.ndarray) -> None:
        ptr = self._pinned.pop(id(array), None)
        if ptr is not None:
            self.rt.cudaFreeHost(ptr)

    def stream_create(self) -> Any:
        return self._ok(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_destroy(self, stream: Any) -> None:
        self.rt.cudaStreamDestroy(stream)

    def htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes, self._h2d, stream), "host-to-device copy")

    def dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes, self._d2h, stream), "device-to-host copy")

    def synchronize(self, stream: Any) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: Any) -> Any:
        graph = self._ok(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        try:
            return self._ok(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            self.rt.cudaGraphDestroy(graph)  # the executable graph keeps what it needs

    def launch(self, graph: Any, stream: Any) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph, stream), "cudaGraphLaunch")

    def graph_destroy(self, graph: Any) -> None:
        self.rt.cudaGraphExecDestroy(graph)


class PyCuda:
    """:class:`CudaApi` on pycuda (its primary context on ``device``); no CUDA graphs."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as drv

        drv.init()
        self.drv = drv
        self.context = drv.Device(device).retain_primary_context()
        self.context.push()  # TensorRT uses the current context of this thread
        self._allocations: dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(nbytes, 1))
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocations.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def host_alloc(self, nbytes: int) -> np.ndarray:
        return self.drv.pagelocked_empty(max(nbytes, 1), np.uint8)

    def host_free(self, array: np.ndarray) -> None:
        free = getattr(getattr(array, "base", None), "free", None)
        if free is not None:
            free()

    def stream_create(self) -> Any:
        return self.drv.Stream()

    def stream_destroy(self, stream: Any) -> None:
        pass  # freed with the object

    def htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src[:nbytes], stream)

    def dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst[:nbytes], src, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def _no_graphs(self, *args: Any) -> Any:
        raise YoloWorldError("CUDA graphs need cuda-python (pip install cuda-python); pycuda is in use")

    begin_capture = end_capture = launch = graph_destroy = _no_graphs


def stream_handle(stream: Any) -> int:
    """The raw ``cudaStream_t`` TensorRT's ``execute_async_v3`` takes."""
    return int(stream.handle) if hasattr(stream, "handle") else int(stream)


def open_cuda(device: int = 0) -> CudaApi:
    """cuda-python if installed, else pycuda; :class:`YoloWorldError` naming both if neither works."""
    errors = []
    for cls in (CudaPython, PyCuda):
        try:
            return cls(device)
        except ImportError as e:
            errors.append(f"{cls.name}: not installed ({e})")
        except Exception as e:  # a driver without a GPU raises its own error types
            errors.append(f"{cls.name}: {e}")
    raise YoloWorldError("no CUDA binding for the TensorRT backend: " + "; ".join(errors) +
                         ". Install cuda-python (pip install yoloworld-sdk[gpu]) on a machine with an NVIDIA GPU")
