"""TensorRT backend logic against stand-ins: a ``tensorrt`` module whose engine runs the exported ONNX
on ONNX Runtime, and a :class:`sdk.backends.cuda.CudaApi` on host memory. Checks buffers allocated
once, batch split / pad within the profile, CUDA graph capture and replay, data-dependent outputs,
compatibility errors, and detections equal to the ONNX Runtime backend. The real engine on a GPU is
``tests/export/test_tensorrt.py``'s job (markers ``tensorrt``, ``gpu``)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import trt_fake
from parity import SAME_RUNTIME_BOX_ATOL, SAME_RUNTIME_SCORE_ATOL, assert_same_detection_lists

import sdk.backends.tensorrt as backend_mod
import sdk.backends.trt_env as trt_env
from sdk import Detector, RuntimeOptions, YoloWorldError
from sdk.backends.tensorrt import EngineProfileError, TensorRTBackend
from sdk.backends.trt_env import EngineIncompatible, GpuInfo, TensorRTUnavailable
from sdk.manifest import read_manifest, write_sidecar

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
TRT_VERSION = trt_fake.VERSION
CLASSES = ["person", "red car", "a dog"]


def make_engine(onnx_path: Path, engine_path: Path, trt_version=TRT_VERSION, gpu=H100) -> Path:
    """A stand-in engine file (names its ONNX) with the sidecar build_engine would write."""
    trt_fake.engine_for(onnx_path, engine_path)
    m = read_manifest(onnx_path)
    write_sidecar(dataclasses.replace(m, extra={**m.extra, "tensorrt": trt_version,
                                                "gpu": dataclasses.asdict(gpu)}), engine_path)
    return engine_path


@pytest.fixture(scope="module")
def exported(tiny_exports):
    """The shared tiny exports (conftest): raw and nms forms."""
    return tiny_exports.paths


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setattr(trt_env, "_GPU_PROBES", (lambda d: H100,))
    return types.SimpleNamespace(cuda=trt_fake.FakeCuda())


def open_backend(env, engine, **kw):
    profile = kw.pop("profile", (1, 4, 4))
    env.trt = trt_fake.fake_tensorrt(TRT_VERSION, cuda=env.cuda, profile=profile,
                                     dynamic_outputs=kw.pop("dynamic_outputs", ()))
    return TensorRTBackend(engine, "cuda", RuntimeOptions(**kw), trt=env.trt, cuda=env.cuda)


@pytest.mark.parametrize("form", ["raw", "nms"])
def test_detections_equal_onnxruntime_with_split_and_pad(env, exported, images, tmp_path, monkeypatch, form):
    engine = make_engine(exported[form], tmp_path / "m.engine")
    be = open_backend(env, engine, profile=(2, 4, 4))
    import sdk.detector

    opener = sdk.detector.open_backend
    monkeypatch.setattr(sdk.detector, "open_backend", lambda w, *a: be if w == engine else opener(w, *a))
    sources = (images * 8)[:8]
    got = Detector(engine, conf=0.05).predict(sources, batch_size=5)  # 8 images: 5 (= 4 + 1), 3
    ref = Detector(exported[form], backend="onnxruntime", conf=0.05).predict(sources, batch_size=5)
    assert ref[0].data["speed_ms"] and ref[0].data["backend"] == "onnxruntime" and got[0].data["backend"] == "tensorrt"
    assert sum(len(r) for r in ref) > 10
    # each side more than 10 detections (an engine path returning nothing fails); batches split and padded
    assert_same_detection_lists(got, ref, conf=0.05, minimum=11, box_atol=SAME_RUNTIME_BOX_ATOL,
                                score_atol=SAME_RUNTIME_SCORE_ATOL)
    # 5 -> 4 + 1 padded to the profile's minimum of 2; 3 fits
    assert [c[1] for c in env.trt.rec.calls if c[0] == "execute"] == [4, 2, 3]
    # buffers were allocated once, for the largest batch
    raw = read_manifest(exported[form])
    mallocs = [c[1] for c in env.cuda.log if c[0] == "malloc"]
    assert len(mallocs) == 1 + len(raw.output_names) and mallocs[0] == 4 * 3 * 160 * 160 * 4
    assert be.min_batch == 2 and be.max_batch == 4 and be.item_shape == (3, 160, 160)


def test_cuda_graph_captured_once_per_batch_size_and_replayed(env, exported, images, tmp_path):
    from sdk.preprocess import preprocess

    engine = make_engine(exported["raw"], tmp_path / "m.engine")
    batch, _ = preprocess(images[:3], 160)
    plain = open_backend(env, engine).infer(batch)
    env.cuda.log.clear()
    be = open_backend(env, engine, cuda_graphs=True)
    first = be.infer(batch)
    second = be.infer(batch[::-1].copy())
    third = be.infer(batch[:2])
    steps = [c[0] for c in env.cuda.log if c[0] in ("capture", "launch")]
    assert steps == ["capture", "launch", "capture"]  # b=3 captured, replayed; b=2 captured
    for name in plain:
        np.testing.assert_array_equal(first[name], plain[name])
        np.testing.assert_array_equal(second[name], plain[name][::-1])  # the replay read the new input
        np.testing.assert_array_equal(third[name], plain[name][:2])


def test_data_dependent_outputs_use_an_allocator_and_turn_graphs_off(env, exported, images, tmp_path):
    from sdk.preprocess import preprocess

    engine = make_engine(exported["nms"], tmp_path / "m.engine")
    batch, _ = preprocess(images[:3], 160)
    ref = open_backend(env, engine).infer(batch)
    assert (ref["num_dets"] > 0).all()  # detections in every image: equal padding alone would not compare much
    with pytest.warns(UserWarning, match=r"CUDA graphs off: outputs \['det_boxes'\] have data-dependent"):
        be = open_backend(env, engine, cuda_graphs=True, dynamic_outputs=("det_boxes",))
    for _ in range(2):  # the second call reuses the allocator's buffer
        got = be.infer(batch)
        assert set(got) == set(ref)
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name])
    assert not any(c[0] == "capture" for c in env.cuda.log)
    be.close()
    assert env.cuda.mem == {} and env.cuda.pinned == []


def test_failed_output_allocation_is_named(env, exported, tmp_path, monkeypatch):
    be = open_backend(env, make_engine(exported["nms"], tmp_path / "m.engine"), dynamic_outputs=("det_boxes",))

    def out_of_memory(nbytes):
        raise YoloWorldError(f"CUDA cudaMalloc({nbytes}) failed: out of memory")

    monkeypatch.setattr(env.cuda, "malloc", out_of_memory)  # the allocator's first request fails
    with pytest.raises(YoloWorldError, match=r"no device memory for output 'det_boxes': CUDA cudaMalloc\(\d+\) "
                                             r"failed: out of memory"):
        be.infer(np.zeros((1, 3, 160, 160), np.float32))


def test_profile_errors_without_splitting(env, exported, tmp_path):
    engine = make_engine(exported["raw"], tmp_path / "m.engine")
    be = open_backend(env, engine, profile=(2, 4, 4), split_batches=False)
    for b in (1, 5):
        with pytest.raises(EngineProfileError, match=rf"allows a batch of 2 to 4; asked for {b}.*--batch {b}"):
            be.infer(np.zeros((b, 3, 160, 160), np.float32))
    assert be.infer(np.zeros((3, 3, 160, 160), np.float32))["scores"].shape[0] == 3
    with pytest.raises(YoloWorldError, match=r"takes 160x160 inputs only .*; got 320x320"):
        be.infer(np.zeros((1, 3, 320, 320), np.float32))


def test_close_frees_everything(env, exported, tmp_path):
    be = open_backend(env, make_engine(exported["raw"], tmp_path / "m.engine"), cuda_graphs=True)
    be.infer(np.zeros((2, 3, 160, 160), np.float32))
    assert env.cuda.mem and env.cuda.pinned
    be.close()
    assert env.cuda.mem == {} and env.cuda.pinned == [] and ("stream_destroy",) in env.cuda.log
    be.close()  # twice is harmless


def test_engine_of_another_tensorrt_or_gpu_is_refused_before_deserialising(env, exported, tmp_path):
    engine = make_engine(exported["raw"], tmp_path / "old.engine", trt_version="10.3.0.26")
    with pytest.raises(EngineIncompatible, match=rf"TensorRT 10.3.0.26 and this machine has TensorRT {TRT_VERSION}"
                                                 r".*yoloworld-export --engine trt"):
        open_backend(env, engine)
    assert not [c for c in env.trt.rec.calls if c[0] == "deserialize_cuda_engine"]
    a100 = make_engine(exported["raw"], tmp_path / "a100.engine", gpu=GpuInfo("NVIDIA A100", "8.0"))
    with pytest.raises(EngineIncompatible, match=r"built for NVIDIA A100 \(compute capability 8.0\)"):
        open_backend(env, a100)


def test_undeserialisable_engine_and_bad_paths(env, exported, tmp_path):
    engine = make_engine(exported["raw"], tmp_path / "m.engine")
    engine.write_bytes(b"garbage")
    with pytest.raises(EngineIncompatible, match=r"cannot deserialise it .*rebuild it on this machine"):
        open_backend(env, engine)
    with pytest.raises(YoloWorldError, match="no such engine file"):
        open_backend(env, tmp_path / "missing.engine")
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"PLAN{}")
    with pytest.raises(YoloWorldError, match=r"bare.engine: not an exported YOLO-World model .*bare.engine.json"):
        open_backend(env, bare)
    with pytest.raises(YoloWorldError, match="runs on a CUDA GPU; device 'cpu' cannot run it"):
        TensorRTBackend(engine, "cpu", trt=env.trt, cuda=env.cuda)


def test_missing_tensorrt_names_the_way_out(exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = make_engine(exported["raw"], tmp_path / "m.engine")
    with pytest.raises(TensorRTUnavailable, match=r"tensorrt Python package cannot be imported.*--engine onnx"):
        Detector(engine)


def test_backend_uses_the_tensorrt_10_api():
    """Names are checked against real TensorRT 10/11 bindings in tests/test_tensorrt_api.py; here: the
    backend is on the tensor-address API, not the binding API that TensorRT 10 removed."""
    source = inspect.getsource(backend_mod)
    assert {"set_input_shape", "set_tensor_address", "execute_async_v3"} <= set(re.findall(r"\.(\w+)\(", source))
    assert "execute_v2" not in source and "get_binding" not in source


def test_cuda_python_calls_match_the_installed_bindings():
    """Every ``self.rt.<function>(...)`` in CudaPython exists in cuda-python's runtime bindings and
    accepts that many arguments; every enum member read exists (the fake CudaApi cannot tell)."""
    import ast

    rt = pytest.importorskip("cuda.bindings.runtime")
    import sdk.backends.cuda as cuda_mod

    calls, members = {}, set()
    for node in ast.walk(ast.parse(inspect.getsource(cuda_mod.CudaPython))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Attribute) and base.attr == "rt":
                calls[node.func.attr] = len(node.args)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "rt":
            members.add((node.value.attr, node.attr))
    assert {"cudaMemcpyAsync", "cudaStreamBeginCapture", "cudaGraphInstantiate", "cudaGraphLaunch"} <= set(calls)
    for name, nargs in calls.items():
        inspect.signature(getattr(rt, name)).bind(*[None] * nargs)  # TypeError if the arity is wrong
    assert members == {("cudaMemcpyKind", "cudaMemcpyHostToDevice"), ("cudaMemcpyKind", "cudaMemcpyDeviceToHost"),
                       ("cudaStreamCaptureMode", "cudaStreamCaptureModeThreadLocal")}
    for enum_name, member in members:
        getattr(getattr(rt, enum_name), member)


def test_open_cuda_on_this_machine_names_each_binding():
    """Without a GPU (or bindings), opening CUDA is one error naming what each binding said."""
    from sdk.backends.cuda import open_cuda
    from sdk.backends.trt_env import _probe_cuda_python

    if _probe_cuda_python(0) is not None:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(YoloWorldError, match=r"no CUDA binding for the TensorRT backend: cuda-python: .*; pycuda: "
                                             r".*Install cuda-python"):
        open_cuda(0)
