"""TensorRT backend: runs an engine ``yoloworld-export --engine trt`` wrote, without torch.

TensorRT 10/11 tensor-address API. The engine is deserialised once, after its sidecar
(``<engine>.json``) has been checked against this machine's TensorRT version and GPU. Device buffers
and pinned host buffers are allocated once, for the profile's largest batch; each call copies the
batch in on one CUDA stream, runs ``execute_async_v3`` and copies only the rows in use back. A batch
larger than the profile's maximum is split, one smaller than its minimum padded (``split_batches``).
With ``cuda_graphs`` the first call of each batch size runs normally (TensorRT does its deferred
set-up then) and is captured into a CUDA graph that later calls of that size replay.

Outputs whose shape TensorRT knows only after running (the in-graph ``nms`` form may be such) get
their memory through an ``IOutputAllocator``; they rule out CUDA graphs.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import YoloWorldError
from ..manifest import Manifest
from .base import BackendBase, RuntimeOptions
from .cuda import CudaApi, open_cuda, stream_handle
from .trt_env import REBUILD_HINT, EngineIncompatible, check_engine_compatible, current_gpu, import_tensorrt


class EngineProfileError(YoloWorldError):
    """A batch the engine's optimization profile does not allow (with ``split_batches=False``)."""


def device_index(device: str) -> int:
    """``"cuda"`` -> 0, ``"cuda:1"`` -> 1; anything else is an error (engines run on NVIDIA GPUs only)."""
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return int(device[5:] or 0)
    raise YoloWorldError(f"a TensorRT engine runs on a CUDA GPU; device {device!r} cannot run it (use "
                         "device='cuda' or 'cuda:N', or the exported .onnx on CPU)")


class TensorRTBackend(BackendBase):
    """``infer(images) -> {output name: array}`` on a TensorRT engine (fixed vocabulary)."""

    name = "tensorrt"
    manifest: Manifest

    def __init__(self, path: str | os.PathLike, device: str = "cuda", options: RuntimeOptions | None = None,
                 trt: Any = None, cuda: CudaApi | None = None) -> None:
        self.options = options or RuntimeOptions()
        index = device_index(device)
        if not Path(path).is_file():
            raise YoloWorldError(f"{path}: no such engine file")
        self._read_manifest(path)
        self.open_vocabulary = False  # engines are built from fixed-vocabulary exports only
        self.splits_batches = self.options.split_batches
        trt = trt or import_tensorrt()
        check_engine_compatible(self.manifest, {"tensorrt": str(trt.__version__),
                                                "gpu": dataclasses.asdict(current_gpu(index))})
        self.trt = trt
        self.cuda = cuda or open_cuda(index)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT (the trt_nms form) is a plugin
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineIncompatible(f"{self.path}: TensorRT {trt.__version__} cannot deserialise it (a damaged "
                                     f"file, or an engine of another TensorRT version or GPU); {REBUILD_HINT}")
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()
        self._describe_io()
        self._allocate()

    # ------------------------------------------------------------------------------------------
    # set-up

    def _describe_io(self) -> None:
        trt, engine, m = self.trt, self.engine, self.manifest
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [m.input_name] or sorted(self.outputs) != sorted(m.output_names):
            raise YoloWorldError(f"{self.path}: the engine's tensors (inputs {inputs}, outputs {self.outputs}) "
                                 f"differ from its sidecar's ({m.input_name!r}, {list(m.output_names)}); "
                                 f"{REBUILD_HINT}")
        self.input = m.input_name
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        shape = tuple(engine.get_tensor_shape(self.input))
        self.item_shape = tuple(int(d) for d in shape[1:])  # (3, H, W)
        if shape[0] < 0:  # dynamic batch: the first optimization profile bounds it
            low, _, high = engine.get_tensor_profile_shape(self.input, 0)
            self.min_batch, self.max_batch = int(low[0]), int(high[0])
        else:
            self.min_batch = self.max_batch = int(shape[0])

    def _allocate(self) -> None:
        """Device and pinned host buffers for the largest batch; outputs of unknown shape get an allocator."""
        cuda, ctx = self.cuda, self.context
        self.stream = cuda.stream_create()
        self._device: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._allocators: dict[str, Any] = {}
        self._graphs: dict[int, Any] = {}
        self._bound_batch = 0
        if not ctx.set_input_shape(self.input, (self.max_batch, *self.item_shape)):
            raise YoloWorldError(f"{self.path}: TensorRT rejects input shape {(self.max_batch, *self.item_shape)}")
        for name in (self.input, *self.outputs):
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                self._allocators[name] = _output_allocator(self.trt, cuda, self.dtypes[name])
                if not ctx.set_output_allocator(name, self._allocators[name]):
                    raise YoloWorldError(f"{self.path}: TensorRT refused an output allocator for {name!r}")
                continue
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self._device[name] = cuda.malloc(nbytes)
            self._host[name] = cuda.host_alloc(nbytes)
            if not ctx.set_tensor_address(name, self._device[name]):
                raise YoloWorldError(f"{self.path}: TensorRT refused the buffer of {name!r}")
        self.cuda_graphs = self.options.cuda_graphs
        if self.cuda_graphs and (self._allocators or not cuda.supports_graphs):
            why = (f"outputs {sorted(self._allocators)} have data-dependent shapes" if self._allocators
                   else f"{cuda.name} has no CUDA graph support here")
            warnings.warn(f"{self.path.name}: CUDA graphs off: {why}", stacklevel=3)
            self.cuda_graphs = False

    # ------------------------------------------------------------------------------------------
    # inference

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """float32 ``(B, 3, H, W)`` -> outputs with B rows, whatever the profile (split / padded)."""
        if tuple(images.shape[1:]) != self.item_shape:
            raise YoloWorldError(f"{self.path.name} takes (B, {', '.join(map(str, self.item_shape))}) inputs; "
                                 f"got {tuple(images.shape)}")
        b = images.shape[0]
        if not self.options.split_batches and not self.min_batch <= b <= self.max_batch:
            raise EngineProfileError(
                f"{self.path.name}'s optimization profile allows a batch of {self.min_batch} to {self.max_batch}; "
                f"asked for {b}. Use a batch_size in that range, let the backend split and pad "
                f"(RuntimeOptions(split_batches=True)), or rebuild the engine with --batch {b}")
        parts = []
        with self._lock:
            for start in range(0, b, self.max_batch):
                chunk = images[start:start + self.max_batch]
                n = len(chunk)
                if n < self.min_batch:  # the profile's floor: pad with blank images, drop their rows
                    chunk = np.concatenate([chunk, np.zeros((self.min_batch - n, *self.item_shape), chunk.dtype)])
                parts.append({k: v[:n] for k, v in self._run(chunk).items()})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.outputs}

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        cuda, ctx, stream = self.cuda, self.context, self.stream
        b = batch.shape[0]
        host_in = self._host[self.input]
        nbytes = self._nbytes(self.input, batch.shape)
        np.copyto(host_in[:nbytes].view(self.dtypes[self.input]).reshape(batch.shape), batch)
        cuda.htod_async(self._device[self.input], host_in, nbytes, stream)
        if b != self._bound_batch:
            if not ctx.set_input_shape(self.input, (b, *self.item_shape)):
                raise EngineProfileError(f"{self.path.name}: TensorRT rejects a batch of {b}")
            self._bound_batch = b
        graph = self._graphs.get(b) if self.cuda_graphs else None
        if graph is not None:
            cuda.launch(graph, stream)
        else:
            if not ctx.execute_async_v3(stream_handle(stream)):
                self._raise_allocation_error()
                raise YoloWorldError(f"{self.path.name}: TensorRT execution failed (see TensorRT's log above)")
            if self.cuda_graphs:  # after a normal run of this shape, TensorRT may be captured
                cuda.begin_capture(stream)
                ctx.execute_async_v3(stream_handle(stream))
                self._graphs[b] = cuda.end_capture(stream)
        shapes = {n: tuple(int(d) for d in ctx.get_tensor_shape(n)) for n in self.outputs
                  if n not in self._allocators}
        for name, shape in shapes.items():
            cuda.dtoh_async(self._host[name], self._device[name], self._nbytes(name, shape), stream)
        cuda.synchronize(stream)
        out = {n: self._from_host(n, s, self.dtypes[n]) for n, s in shapes.items()}
        self._raise_allocation_error()
        for name, alloc in self._allocators.items():  # shapes known only now
            nbytes = self._nbytes(name, alloc.shape)
            if name not in self._host or self._host[name].nbytes < nbytes:
                if name in self._host:
                    cuda.host_free(self._host[name])
                self._host[name] = cuda.host_alloc(nbytes)
            if nbytes:
                cuda.dtoh_async(self._host[name], alloc.ptr, nbytes, stream)
                cuda.synchronize(stream)
            out[name] = self._from_host(name, alloc.shape, alloc.dtype)
        return out

    def _nbytes(self, name: str, shape: tuple[int, ...]) -> int:
        return int(np.prod(shape)) * self.dtypes[name].itemsize

    def _from_host(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A copy of ``name``'s pinned host buffer as ``shape`` (the buffer is reused by the next call)."""
        return self._host[name][:int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape).copy()

    def _raise_allocation_error(self) -> None:
        for name, alloc in self._allocators.items():
            if alloc.error is not None:
                error, alloc.error = alloc.error, None
                raise YoloWorldError(f"{self.path.name}: no device memory for output {name!r}: {error}")

    def close(self) -> None:
        """Free graphs, buffers and the stream (also on garbage collection)."""
        cuda = getattr(self, "cuda", None)
        if cuda is None:
            return
        for graph in self._graphs.values():
            cuda.graph_destroy(graph)
        for ptr in self._device.values():
            cuda.free(ptr)
        for array in self._host.values():
            cuda.host_free(array)
        for alloc in self._allocators.values():
            alloc.free()
        cuda.stream_destroy(self.stream)
        self._graphs, self._device, self._host, self._allocators = {}, {}, {}, {}
        self.context = self.engine = None
        del self.cuda  # closed: close() again finds nothing to free

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass


def _output_allocator(trt: Any, cuda: CudaApi, dtype: np.dtype) -> Any:
    """A ``trt.IOutputAllocator`` for an output whose shape TensorRT knows only while running; the
    device buffer grows when asked and is reused. A failed allocation returns 0 (TensorRT's way to
    hear of it) and is raised after the run: exceptions must not cross TensorRT's C++ callback."""

    class Allocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.ptr, self.size, self.dtype = 0, 0, dtype
            self.shape: tuple[int, ...] = ()
            self.error: Exception | None = None

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            if size > self.size or not self.ptr:
                self.free()
                try:
                    self.ptr, self.size = cuda.malloc(max(size, 1)), size
                except Exception as e:
                    self.error = e
                    return 0
            return self.ptr

        def reallocate_output(self, tensor_name, memory, size, alignment):  # the name before TensorRT 10
            return self.reallocate_output_async(tensor_name, memory, size, alignment, None)

        def notify_shape(self, tensor_name, shape):
            self.shape = tuple(int(d) for d in shape)

        def free(self) -> None:
            if self.ptr:
                cuda.free(self.ptr)
            self.ptr, self.size = 0, 0

    return Allocator()
