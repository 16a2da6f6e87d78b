"""One stand-in for the ``tensorrt`` module (TensorRT 10/11 Python API names) and one for the SDK's
:class:`sdk.backends.cuda.CudaApi`, shared by the builder's tests (tests/export/test_tensorrt.py) and the
runtime's (tests/sdk/test_tensorrt_backend.py). Only the API our code calls exists here, so a call to
anything else (precision flags, calibrators, the TensorRT 8 binding API) fails the test; every call that
matters is recorded in ``trt.rec.calls``. tests/test_tensorrt_api.py checks the names against real releases.

Engine files: ``build_serialized_network`` returns ``PLAN`` + JSON naming the parsed ONNX's hash; such an
engine deserialises to IO introspection only. :func:`engine_for` writes ``PLAN`` + JSON naming an ONNX
path; that engine executes, running its ONNX on ONNX Runtime and moving bytes through :class:`FakeCuda`."""

from __future__ import annotations

import enum
import hashlib
import json
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np

INPUT = "images"
VERSION = "10.13.0.35"


# --- the module shell and engine introspection ------------------------------------------------


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class Logger:
    WARNING = 2

    def __init__(self, severity):
        self.severity = severity


class IOutputAllocator:
    def __init__(self):
        pass


class FakeEngine:
    """``ICudaEngine``'s IO introspection: ``images`` in, ``names[1:]`` out, dtype names and shapes
    with the batch axis -1."""

    def __init__(self, names: list[str], dtypes: dict[str, str], item_shapes: dict[str, tuple[int, ...]]):
        self.names, self.dtypes, self.item_shapes = names, dtypes, item_shapes

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == INPUT else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_shape(self, name):
        return (-1, *self.item_shapes[name])


def fake_tensorrt(version: str = VERSION, *, cuda: FakeCuda | None = None, profile=(1, 4, 4), dynamic_outputs=(),
                  parse_ok: bool = True, build_ok: bool = True, imgsz: int = 160) -> types.ModuleType:
    """A ``tensorrt`` module: builder (network, parser, config, profiles, timing cache) and runtime
    (deserialise, execution context, output allocators). ``cuda`` backs executing engines; ``profile``
    is their (min, opt, max) batch; ``dynamic_outputs`` report a -1 batch until run; ``parse_ok`` /
    ``build_ok`` make the parser / the build fail; ``imgsz`` is the input size built engines report."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.rec = SimpleNamespace(calls=[], builds=0, outputs=[], onnx=b"", cuda=cuda, profile=profile,
                              dynamic_outputs=tuple(dynamic_outputs), parse_ok=parse_ok, build_ok=build_ok,
                              imgsz=imgsz, version=version)
    trt.Logger, trt.TensorIOMode, trt.IOutputAllocator = Logger, TensorIOMode, IOutputAllocator
    trt.NetworkDefinitionCreationFlag, trt.MemoryPoolType = NetworkDefinitionCreationFlag, MemoryPoolType
    trt.nptype = lambda dtype: np.dtype(dtype).type

    def init_libnvinfer_plugins(logger, namespace):
        trt.rec.calls.append(("init_libnvinfer_plugins", namespace))
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    trt.Builder = lambda logger: Builder(trt.rec)
    trt.OnnxParser = lambda network, logger: OnnxParser(trt.rec, network)
    trt.Runtime = lambda logger: Runtime(trt.rec)
    return trt


def engine_for(onnx_path: str | Path, engine_path: Path) -> Path:
    """An executable stand-in engine file: it names the ONNX that :class:`OrtEngine` runs."""
    engine_path.write_bytes(b"PLAN" + json.dumps({"onnx_path": str(onnx_path)}).encode())
    return engine_path


# --- the builder ---------------------------------------------------------------------------


class Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class Network:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs = flags, [], []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class OnnxParser:
    """Reads the input shape and output names from the ONNX's manifest, as the real parser's network has them."""

    def __init__(self, rec, network):
        self.rec, self.network = rec, network

    def parse_from_file(self, path):
        from sdk.manifest import read_manifest

        self.rec.calls.append(("parse_from_file", path))
        if not self.rec.parse_ok:
            return False
        m = read_manifest(path)
        self.network.inputs = [Tensor(INPUT, [-1 if m.dynamic_batch else 1, 3, *m.imgsz])]
        self.network.outputs = self.rec.outputs = list(m.output_names)
        self.rec.onnx = Path(path).read_bytes()
        return True

    @property
    def num_errors(self):
        return 0 if self.rec.parse_ok else 1

    def get_error(self, i):
        return "In node 3 (importFoo): UNSUPPORTED_NODE: no importer for Foo"


class TimingCache:
    def __init__(self, blob):
        self.blob = bytes(blob)

    def serialize(self):
        return memoryview(b"TIMING:" + self.blob[-8:] + b"+1")


class Config:
    def __init__(self, rec):
        self.rec, self.cache = rec, None

    def set_memory_pool_limit(self, pool, size):
        self.rec.calls.append(("set_memory_pool_limit", pool, size))

    def add_optimization_profile(self, profile):
        self.rec.calls.append(("add_optimization_profile", profile.shapes))
        return 0

    def create_timing_cache(self, blob):
        self.rec.calls.append(("create_timing_cache", bytes(blob)))
        return TimingCache(blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.rec.calls.append(("set_timing_cache", cache.blob, ignore_mismatch))
        if cache.blob.startswith(b"FOREIGN"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):  # TensorRT names its keywords so
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


class Builder:
    def __init__(self, rec):
        self.rec = rec
        rec.calls.append(("Builder",))

    def create_network(self, flags=0):
        self.rec.calls.append(("create_network", flags))
        return Network(flags)

    def create_builder_config(self):
        return Config(self.rec)

    def create_optimization_profile(self):
        return Profile()

    def build_serialized_network(self, network, config):
        self.rec.builds += 1
        if not self.rec.build_ok:
            return None
        payload = {"onnx": hashlib.sha256(self.rec.onnx).hexdigest(), "flags": network.flags,
                   "version": self.rec.version, "build": self.rec.builds}
        return memoryview(b"PLAN" + json.dumps(payload).encode())


# --- the runtime -----------------------------------------------------------------------------


class Runtime:
    def __init__(self, rec):
        self.rec = rec

    def deserialize_cuda_engine(self, blob):
        blob = bytes(blob)
        self.rec.calls.append(("deserialize_cuda_engine", blob[:4]))
        if not blob.startswith(b"PLAN"):
            return None
        payload = json.loads(blob[4:])
        if "onnx_path" in payload:
            return OrtEngine(self.rec, payload["onnx_path"])
        # a built engine, as build_engine reads it back: IO names, dtypes, shapes
        outputs = self.rec.outputs
        dtypes = {n: "int32" if n in ("num_dets", "det_classes") else "float32" for n in [INPUT, *outputs]}
        shapes = {n: (7,) for n in outputs}
        return FakeEngine([INPUT, *outputs], dtypes, {**shapes, INPUT: (3, self.rec.imgsz, self.rec.imgsz)})


class OrtEngine(FakeEngine):
    """Runs its ONNX on ONNX Runtime; IO names, dtypes and shapes from one probe run."""

    def __init__(self, rec, onnx_path):
        import onnxruntime as ort

        self.rec, self.profile = rec, rec.profile
        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        names = [INPUT] + [o.name for o in self.session.get_outputs()]
        probe = dict(zip(names[1:], self.session.run(None, {INPUT: np.zeros((1, *self.input_item), np.float32)}),
                         strict=True))
        super().__init__(names, {INPUT: "float32", **{n: v.dtype.name for n, v in probe.items()}},
                         {INPUT: self.input_item, **{n: v.shape[1:] for n, v in probe.items()}})

    @property
    def input_item(self):
        return tuple(self.session.get_inputs()[0].shape[1:])

    def get_tensor_profile_shape(self, name, index):
        return [(b, *self.input_item) for b in self.profile]

    def create_execution_context(self):
        return Context(self)


class Context:
    """``IExecutionContext``: shapes, addresses, output allocators; enqueued work runs on the host, or is
    recorded into the CUDA graph being captured."""

    def __init__(self, engine: OrtEngine):
        self.engine, self.shape, self.addresses, self.allocators = engine, None, {}, {}

    def set_input_shape(self, name, shape):
        low, high = self.engine.profile[0], self.engine.profile[2]
        if not low <= shape[0] <= high:
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name == INPUT:
            return self.shape
        if name in self.engine.rec.dynamic_outputs:
            return (-1, *self.engine.item_shapes[name])
        return (self.shape[0], *self.engine.item_shapes[name])

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def set_output_allocator(self, name, allocator):
        self.allocators[name] = allocator
        return True

    def _work(self, stream) -> bool:
        cuda = self.engine.rec.cuda
        self.engine.rec.calls.append(("execute", self.shape[0]))
        n = int(np.prod(self.shape)) * 4
        images = cuda.mem[self.addresses[INPUT]][:n].view(np.float32).reshape(self.shape)
        outs = self.engine.session.run(None, {INPUT: images})
        for name, value in zip(self.engine.names[1:], outs, strict=True):
            value = np.ascontiguousarray(value)
            if name in self.allocators:
                alloc = self.allocators[name]
                ptr = alloc.reallocate_output_async(name, 0, value.nbytes, 256, stream)
                if not ptr:  # TensorRT fails the enqueue when an allocator returns null
                    return False
                alloc.notify_shape(name, value.shape)
            else:
                ptr = self.addresses[name]
            cuda.mem[ptr][:value.nbytes] = value.view(np.uint8).ravel()
        return True

    def execute_async_v3(self, stream):
        cuda = self.engine.rec.cuda
        if cuda.capturing is not None:
            cuda.capturing.append(lambda: self._work(stream))
            return True
        return self._work(stream)


class FakeCuda:
    """``CudaApi`` on numpy: 'device' memory is a dict of byte arrays; graphs record enqueued work."""

    name, supports_graphs = "fake", True

    def __init__(self):
        self.mem: dict[int, np.ndarray] = {}
        self.pinned: list[int] = []
        self.next_ptr = 0x10000
        self.capturing: list | None = None
        self.log: list[tuple] = []

    def malloc(self, nbytes):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 0x1000
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        self.log.append(("malloc", nbytes))
        return ptr

    def free(self, ptr):
        del self.mem[ptr]

    def host_alloc(self, nbytes):
        array = np.zeros(nbytes, np.uint8)
        self.pinned.append(id(array))
        return array

    def host_free(self, array):
        self.pinned.remove(id(array))

    def stream_create(self):
        return 7

    def stream_destroy(self, stream):
        self.log.append(("stream_destroy",))

    def htod_async(self, dst, src, nbytes, stream):
        self.mem[dst][:nbytes] = src.view(np.uint8)[:nbytes]

    def dtoh_async(self, dst, src, nbytes, stream):
        dst.view(np.uint8)[:nbytes] = self.mem[src][:nbytes]

    def synchronize(self, stream):
        pass

    def begin_capture(self, stream):
        self.capturing = []
        self.log.append(("capture",))

    def end_capture(self, stream):
        graph, self.capturing = self.capturing, None
        return graph

    def launch(self, graph, stream):
        self.log.append(("launch",))
        for work in graph:
            work()

    def graph_destroy(self, graph):
        pass
