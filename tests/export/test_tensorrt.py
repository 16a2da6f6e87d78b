"""TensorRT engines: cache keys, missing TensorRT / GPU, compatibility checks and the builder's logic
(against a stand-in ``tensorrt`` module with the documented API) run everywhere; the real build and
run against ONNX Runtime need TensorRT, cuda-python and an NVIDIA GPU (markers ``tensorrt``, ``gpu``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import pickle
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import trt_fake
from onnx import TensorProto, helper
from parity import TRT_FP32_BOX_ATOL, TRT_FP32_SCORE_ATOL

import export.tensorrt as trt_mod
import sdk.backends.trt_env as trt_env
from export.tensorrt import (
    EngineBuildError,
    EngineIncompatible,
    GpuInfo,
    TensorRTUnavailable,
    build_engine,
    check_engine_compatible,
    current_gpu,
    engine_cache_key,
    file_sha256,
    make_profile,
)
from sdk.backends.tensorrt import TensorRTBackend
from sdk.errors import YoloWorldError
from sdk.manifest import Manifest, NmsSettings, read_manifest, sidecar_path, write_sidecar

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
IMGSZ = 160


# ---------------------------------------------------------------------------------------------
# Cache key


def _key(**kw):
    args = dict(onnx_sha256="a" * 64, gpu_name=H100.name, compute_capability="9.0", trt_version="10.8.0.43",
                precision="fp32", profile=make_profile(1, 8, 32, (640, 640)))
    args.update(kw)
    return engine_cache_key(**args)


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64}, {"gpu_name": "NVIDIA A100-SXM4-80GB"}, {"compute_capability": "8.0"},
    {"trt_version": "10.9.0.34"}, {"precision": "fp16"}, {"profile": make_profile(1, 8, 16, (640, 640))},
    {"profile": make_profile(1, 4, 32, (640, 640))}, {"profile": make_profile(2, 8, 32, (640, 640))},
    {"profile": make_profile(1, 8, 32, (640, 320))},
])
def test_cache_key_changes_with_each_component(change):
    assert _key(**change) != _key()


def test_cache_key_is_stable_and_normalised():
    assert _key() == _key() and len(_key()) == 32 and int(_key(), 16) >= 0
    assert _key(compute_capability=(9, 0)) == _key(compute_capability="9.0")
    profile = make_profile(1, 8, 32, (640, 640))
    as_tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in profile.items()}
    assert _key(profile=as_tuples) == _key(profile=profile)
    assert profile == {"input": "images", "min": [1, 3, 640, 640], "opt": [8, 3, 640, 640],
                       "max": [32, 3, 640, 640]}


# ---------------------------------------------------------------------------------------------
# No TensorRT, no GPU


def test_missing_tensorrt_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(TensorRTUnavailable) as err:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    msg = str(err.value)
    assert "TensorRT (or a CUDA GPU) is not available here" in msg and "tensorrt" in msg
    assert "--engine onnx" in msg and "ONNX Runtime" in msg and "NVIDIA GPU" in msg
    assert isinstance(err.value, YoloWorldError)
    assert list(tmp_path.iterdir()) == []
    again = pickle.loads(pickle.dumps(err.value))
    assert str(again) == msg
    with pytest.raises(TensorRTUnavailable):
        check_engine_compatible(Manifest([], [], "first", "", (640, 640),
                                         extra={"tensorrt": "10.8", "gpu": dataclasses.asdict(H100)}))


def test_missing_gpu_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", trt_fake.fake_tensorrt("10.8.0.43"))
    monkeypatch.setattr(trt_env, "_GPU_PROBES", (lambda d: None, lambda d: None))
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU 0 found") as err:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
    assert "--engine onnx" in str(err.value)


def test_gpu_probes_in_order(monkeypatch):
    seen = []

    def probe(result):
        return lambda d: seen.append(d) or result

    monkeypatch.setattr(trt_env, "_GPU_PROBES", (probe(None), probe(H100), probe(GpuInfo("other", "8.0"))))
    assert current_gpu() == H100 and seen == [0, 0]


def test_this_machine_without_gpu(monkeypatch):
    """The real probes (cuda-python, nvidia-smi) find nothing on a CPU-only machine."""
    found = [p(0) for p in trt_env._GPU_PROBES]
    if any(found):
        pytest.skip(f"this machine has a GPU: {next(f for f in found if f)}")
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU"):
        current_gpu()


def test_nvidia_smi_probe(monkeypatch):
    asked = []

    def run(cmd, **kw):
        asked.append(cmd)
        return SimpleNamespace(stdout="NVIDIA L4, 8.9\n")

    monkeypatch.setattr(trt_env.shutil, "which", lambda exe: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(trt_env.subprocess, "run", run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert trt_env._probe_nvidia_smi(1) == GpuInfo("NVIDIA L4", "8.9")
    assert asked[-1][-1] == "--id=1" and "--query-gpu=name,compute_cap" in asked[-1]
    assert trt_env._probe_nvidia_smi(2) is None  # only two devices visible
    monkeypatch.setattr(trt_env.subprocess, "run", lambda cmd, **kw: SimpleNamespace(stdout="garbage"))
    assert trt_env._probe_nvidia_smi(0) is None


# ---------------------------------------------------------------------------------------------
# Compatibility of a built engine


def _engine_manifest(trt_version="10.8.0.43", gpu=H100) -> Manifest:
    return Manifest(["a"], [["a"]], "first", "0" * 64, (640, 640),
                    extra={"tensorrt": trt_version, "gpu": dataclasses.asdict(gpu), "precision": "fp32"})


def _env(trt_version="10.8.0.43", gpu=H100):
    return {"tensorrt": trt_version, "gpu": dataclasses.asdict(gpu)}


def test_compatible_engine_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_engine_compatible(_engine_manifest(), current=_env())


def test_other_tensorrt_version_is_an_error():
    with pytest.raises(EngineIncompatible) as err:
        check_engine_compatible(_engine_manifest("10.3.0.26"), current=_env("10.8.0.43"))
    msg = str(err.value)
    assert "TensorRT 10.3.0.26" in msg and "TensorRT 10.8.0.43" in msg
    assert "yoloworld-export --engine trt" in msg and "build_engine" in msg
    assert isinstance(err.value, YoloWorldError)


def test_other_gpu_architecture_is_an_error():
    a100 = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
    with pytest.raises(EngineIncompatible) as err:
        check_engine_compatible(_engine_manifest(gpu=a100), current=_env(gpu=H100))
    msg = str(err.value)
    assert "NVIDIA A100-SXM4-80GB (compute capability 8.0)" in msg
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0)" in msg and "yoloworld-export --engine trt" in msg
    with pytest.raises(EngineIncompatible, match="TensorRT 10.3.*; it was built for"):  # both problems named
        check_engine_compatible(_engine_manifest("10.3", gpu=a100), current=_env())


def test_other_gpu_model_same_architecture_warns():
    h100_pcie = GpuInfo("NVIDIA H100 PCIe", "9.0")
    with pytest.warns(UserWarning, match="same architecture"):
        check_engine_compatible(_engine_manifest(gpu=h100_pcie), current=_env())


def test_not_an_engine_manifest(tmp_path):
    with pytest.raises(EngineIncompatible, match="does not describe a TensorRT engine"):
        check_engine_compatible(Manifest(["a"], [["a"]], "first", "", (640, 640)), current=_env())
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    write_sidecar(_engine_manifest("9.0"), engine)
    for source in (engine, sidecar_path(engine), str(engine)):
        with pytest.raises(EngineIncompatible, match=r"m\.engine cannot run here"):
            check_engine_compatible(source, current=_env())


# ---------------------------------------------------------------------------------------------
# The builder against a stand-in tensorrt module with the documented Python API


def _tiny_onnx(path: Path, manifest: Manifest, salt: float = 0.0) -> Path:
    """A small valid ONNX (images -> scores, boxes) with ``manifest`` as its sidecar."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in manifest.output_names]
    nodes = [helper.make_node("Sigmoid", ["images"], [manifest.output_names[0]]),
             helper.make_node("Mul", ["images", "k"], [manifest.output_names[1]])]
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [1.0 + salt])
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [images], outs, [k])), str(path))
    write_sidecar(manifest, path)
    return path


def _raw_manifest(**kw) -> Manifest:
    base = dict(class_names=["a", "b"], prompts=[["a"], ["b"]], prompt_merge="first", embedding_sha256="0" * 64,
                imgsz=(IMGSZ, IMGSZ), extra={"pad_prompt": False})
    base.update(kw)
    return Manifest(**base)


@pytest.fixture
def fake_env(monkeypatch):
    """Installs a stand-in tensorrt (version / GPU switchable) and returns a namespace to steer it."""
    env = SimpleNamespace(gpu=H100)

    def install(**kw):
        env.trt = trt_fake.fake_tensorrt(kw.pop("version", "10.8.0.43"), imgsz=IMGSZ, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", env.trt)
        return env.trt

    env.install = install
    monkeypatch.setattr(trt_env, "_GPU_PROBES", (lambda d: env.gpu,))
    install()
    return env


def test_build_writes_engine_sidecar_and_timing_cache(fake_env, tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", _raw_manifest())
    engine = tmp_path / "out" / "m.engine"
    cache = tmp_path / "timing.cache"
    logs: list[str] = []
    assert build_engine(onnx_path, engine, 1, 2, 4, workspace_gib=2.0, timing_cache=cache, log=logs.append) == engine
    calls = fake_env.trt.rec.calls
    assert ("init_libnvinfer_plugins", "") in calls  # EfficientNMS_TRT needs the registered plugins
    assert ("create_network", 1 << 1) in calls  # STRONGLY_TYPED (1 in the stand-in enum)
    assert ("set_memory_pool_limit", fake_env.trt.MemoryPoolType.WORKSPACE, 2 << 30) in calls
    shapes = {"images": ((1, 3, IMGSZ, IMGSZ), (2, 3, IMGSZ, IMGSZ), (4, 3, IMGSZ, IMGSZ))}
    assert ("add_optimization_profile", shapes) in calls
    assert ("create_timing_cache", b"") in calls and cache.read_bytes() == b"TIMING:+1"
    assert engine.read_bytes().startswith(b"PLAN")
    assert not list(tmp_path.rglob("*.tmp"))

    onnx_manifest, side = read_manifest(onnx_path), read_manifest(engine)
    profile = make_profile(1, 2, 4, (IMGSZ, IMGSZ))
    key = engine_cache_key(file_sha256(onnx_path), H100.name, "9.0", "10.8.0.43", "fp32", profile)
    assert side.extra["tensorrt"] == "10.8.0.43" and side.extra["gpu"] == {"name": H100.name,
                                                                            "compute_capability": "9.0"}
    assert side.extra["profile"] == profile and side.extra["precision"] == "fp32"
    assert side.extra["onnx_sha256"] == file_sha256(onnx_path) and side.extra["cache_key"] == key
    assert side.extra["engine_sha256"] == file_sha256(engine) and side.extra["pad_prompt"] is False
    assert side.extra["io"]["images"] == {"mode": "input", "dtype": "float32", "shape": [-1, 3, IMGSZ, IMGSZ]}
    assert side.max_batch == 4 and side.versions["tensorrt"] == "10.8.0.43"
    assert dataclasses.replace(side, extra=onnx_manifest.extra, max_batch=onnx_manifest.max_batch,
                               versions=onnx_manifest.versions) == onnx_manifest
    check_engine_compatible(engine, current=_env())

    # the second build reads the timing cache it wrote
    build_engine(onnx_path, engine, 1, 2, 4, timing_cache=cache, log=logs.append)
    assert ("create_timing_cache", b"TIMING:+1") in fake_env.trt.rec.calls
    assert any("loaded the timing cache" in line for line in logs)


def test_foreign_timing_cache_starts_fresh(fake_env, tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", _raw_manifest())
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"FOREIGN-DEVICE")
    logs: list[str] = []
    build_engine(onnx_path, tmp_path / "m.engine", timing_cache=cache, log=logs.append)
    assert any("from another GPU or TensorRT version" in line for line in logs)
    assert ("set_timing_cache", b"", False) in fake_env.trt.rec.calls


def test_engine_cache_reuse_and_rebuild_reasons(fake_env, tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", _raw_manifest())
    cache_dir, engine = tmp_path / "cache", tmp_path / "m.engine"
    logs: list[str] = []

    def build(*batches, log_to=logs):
        log_to.clear()
        build_engine(onnx_path, engine, *batches, cache_dir=cache_dir, log=log_to.append)
        return "\n".join(log_to)

    assert "no cached engine in" in build(1, 2, 4) and fake_env.trt.rec.builds == 1
    first = engine.read_bytes()
    engine.unlink()
    sidecar_path(engine).unlink()
    assert "reusing the cached TensorRT engine" in build(1, 2, 4)
    assert fake_env.trt.rec.builds == 1 and engine.read_bytes() == first
    assert read_manifest(engine).extra["profile"] == make_profile(1, 2, 4, (IMGSZ, IMGSZ))

    log = build(1, 2, 8)
    assert "rebuilding because the profile (batch 1/2/4 at 3x160x160 -> 1/2/8 at 3x160x160)" in log
    assert fake_env.trt.rec.builds == 2

    fake_env.install(version="10.9.0.34")
    log = build(1, 2, 4)
    assert "TensorRT version (10.8.0.43 -> 10.9.0.34)" in log and "profile" not in log
    fake_env.gpu = GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
    log = build(1, 2, 4)
    assert "GPU (NVIDIA H100 80GB HBM3 -> NVIDIA A100-SXM4-80GB)" in log
    assert "compute capability (9.0 -> 8.0)" in log and "TensorRT version" not in log
    _tiny_onnx(onnx_path, _raw_manifest(), salt=1.0)  # a re-export
    assert "ONNX file (sha256" in build(1, 2, 4)
    assert "reusing" in build(1, 2, 4)
    builds = fake_env.trt.rec.builds

    key = read_manifest(engine).extra["cache_key"]
    (cache_dir / f"{key}.engine").write_bytes(b"PLAN truncated")
    assert "damaged or incomplete; rebuilding" in build(1, 2, 4) and fake_env.trt.rec.builds == builds + 1
    assert file_sha256(cache_dir / f"{key}.engine") == read_manifest(cache_dir / f"{key}.engine").extra["engine_sha256"]


def test_static_batch_onnx_gets_batch_one(fake_env, tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", _raw_manifest(dynamic_batch=False, max_batch=1))
    logs: list[str] = []
    build_engine(onnx_path, tmp_path / "m.engine", log=logs.append)
    assert any("static batch of 1" in line for line in logs)
    assert not [c for c in fake_env.trt.rec.calls if c[0] == "add_optimization_profile"]
    assert read_manifest(tmp_path / "m.engine").extra["profile"]["max"][0] == 1


def test_nms_form_outputs_are_checked(fake_env, tmp_path):
    names = ("num_dets", "det_boxes", "det_scores", "det_classes")
    manifest = _raw_manifest(output_form="trt_nms", output_names=names, nms=NmsSettings(max_det=100))
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names]
    node = helper.make_node("EfficientNMS_TRT", ["images", "images"], list(names), domain="TRT")
    proto = helper.make_model(helper.make_graph([node], "g", [images], outs),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("TRT", 1)])
    onnx.save(proto, str(tmp_path / "m.onnx"))
    write_sidecar(manifest, tmp_path / "m.onnx")
    logs: list[str] = []
    build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", log=logs.append)
    assert not any("warning" in line for line in logs)  # the plugin op passes the static check
    io = read_manifest(tmp_path / "m.engine").extra["io"]
    assert io["num_dets"]["dtype"] == "int32" and io["det_boxes"]["mode"] == "output"


def test_build_errors(fake_env, tmp_path):
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", _raw_manifest())
    with pytest.raises(YoloWorldError, match="1 <= min <= opt <= max"):
        build_engine(onnx_path, tmp_path / "m.engine", 4, 2, 8)
    with pytest.raises(YoloWorldError, match="workspace_gib"):
        build_engine(onnx_path, tmp_path / "m.engine", workspace_gib=0)
    with pytest.raises(YoloWorldError, match="no such ONNX file"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.engine")
    with pytest.raises(YoloWorldError, match="overwrite the ONNX"):
        build_engine(onnx_path, onnx_path)
    fake_env.install(parse_ok=False)
    with pytest.raises(EngineBuildError, match="UNSUPPORTED_NODE: no importer for Foo"):
        build_engine(onnx_path, tmp_path / "m.engine")
    fake_env.install(build_ok=False)
    with pytest.raises(EngineBuildError, match="workspace_gib"):
        build_engine(onnx_path, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_static_check_warns_about_unsupported_ops(fake_env, tmp_path):
    manifest = _raw_manifest()
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, IMGSZ, IMGSZ])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in manifest.output_names]
    nodes = [helper.make_node("Unique", ["images"], ["scores"]), helper.make_node("Relu", ["images"], ["boxes"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [images], outs)), str(tmp_path / "m.onnx"))
    write_sidecar(manifest, tmp_path / "m.onnx")
    logs: list[str] = []
    build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", log=logs.append)
    assert any("warning" in line and "Unique" in line for line in logs)  # warned; the parser decides


def test_builder_uses_strongly_typed_networks_only():
    """Names are checked against real TensorRT 10/11 bindings in tests/test_tensorrt_api.py; here: the
    precision comes from the ONNX (strongly typed), never from builder flags or an INT8 calibrator."""
    source = inspect.getsource(trt_mod._build) + inspect.getsource(trt_mod._load_timing_cache)
    assert {"create_network", "parse_from_file", "set_memory_pool_limit", "set_shape",
            "build_serialized_network", "create_timing_cache"} <= set(re.findall(r"\.(\w+)\(", source))
    assert "STRONGLY_TYPED" in source
    assert "set_flag" not in source and "int8_calibrator" not in source and "FP16" not in source


# ---------------------------------------------------------------------------------------------
# Real TensorRT on a GPU (skipped before any fixture is built when TensorRT or cuda-python is missing)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


needs_tensorrt = pytest.mark.skipif(not (_installed("tensorrt") and _installed("cuda")),
                                    reason="needs TensorRT, cuda-python and an NVIDIA GPU")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            pytest.skip("cuda-python is not installed")
    return cudart


def _export(tiny_checkpoints, path, form="raw"):
    from export.onnx_export import export_onnx
    from sdk.backends.torch import encode_texts
    from sdk.model import load_checkpoint
    from sdk.vocabulary import Vocabulary

    model = load_checkpoint(tiny_checkpoints["v2"])
    vocab = Vocabulary.from_any(["person", "red car", "a dog"])
    emb = vocab.embeddings(lambda t: encode_texts(model, None, t))
    kw = {} if form == "raw" else {"output_form": form}
    if kw and "output_form" not in inspect.signature(export_onnx).parameters:
        pytest.skip("export_onnx has no output_form yet")
    export_onnx(model, vocab, emb, path, imgsz=IMGSZ, nms=NmsSettings(conf=0.1, iou=0.6, max_det=100),
                log=lambda *_: None, **kw)
    return path


def _ort(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": images}), strict=True))


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_tensorrt_build_and_run_matches_onnxruntime(tiny_checkpoints, tmp_path):
    pytest.importorskip("tensorrt")
    _cudart()
    from export.onnx_export import check_images

    onnx_path = _export(tiny_checkpoints, tmp_path / "m.onnx")
    engine, cache_dir, timing = tmp_path / "m.engine", tmp_path / "engines", tmp_path / "timing.cache"
    logs: list[str] = []
    build_engine(onnx_path, engine, 1, 2, 4, workspace_gib=1.0, timing_cache=timing, cache_dir=cache_dir,
                 log=logs.append)
    assert timing.stat().st_size > 0 and len(list(cache_dir.glob("*.engine"))) == 1
    side = read_manifest(engine)
    check_engine_compatible(side)
    assert side.extra["profile"]["max"] == [4, 3, IMGSZ, IMGSZ] and side.extra["precision"] == "fp32"

    images = check_images(IMGSZ, 3)
    run = TensorRTBackend(engine).infer  # the SDK's runtime: pinned buffers, one stream
    for batch in (1, 3):
        got, ref = run(images[:batch]), _ort(onnx_path, images[:batch])
        assert got["scores"].shape == ref["scores"].shape == (batch, 525, 3)
        np.testing.assert_allclose(got["scores"], ref["scores"], atol=TRT_FP32_SCORE_ATOL)
        np.testing.assert_allclose(got["boxes"], ref["boxes"], atol=TRT_FP32_BOX_ATOL)

    logs.clear()
    build_engine(onnx_path, tmp_path / "again.engine", 1, 2, 4, cache_dir=cache_dir, log=logs.append)
    assert any("reusing the cached TensorRT engine" in line for line in logs)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_tensorrt_nms_forms(tiny_checkpoints, tmp_path):
    pytest.importorskip("tensorrt")
    _cudart()
    pytest.importorskip("export.nms_graph")
    from export.onnx_export import check_images

    images = check_images(IMGSZ, 2)
    onnx_nms = _export(tiny_checkpoints, tmp_path / "nms.onnx", "nms")
    ref = _ort(onnx_nms, images)
    for form in ("nms", "trt_nms"):
        path = onnx_nms if form == "nms" else _export(tiny_checkpoints, tmp_path / "trt_nms.onnx", "trt_nms")
        engine = build_engine(path, tmp_path / f"{form}.engine", 1, 2, 2, workspace_gib=1.0, log=lambda *_: None)
        got = TensorRTBackend(engine).infer(images)
        for b in range(2):
            n_ref, n_got = int(ref["num_dets"][b, 0]), int(got["num_dets"][b, 0])
            sure = ref["det_scores"][b, :n_ref] > 0.1 + 2e-3  # clear of the conf threshold
            assert abs(n_got - n_ref) <= int((~sure).sum()), (form, b, n_got, n_ref)
            m = int(sure.sum())
            # not a comparison of empty slices: the random model finds dozens per check image
            assert m > 0 and n_got > 0, (form, b, n_got, n_ref)
            np.testing.assert_allclose(got["det_scores"][b, :m], ref["det_scores"][b, :m], atol=TRT_FP32_SCORE_ATOL)
            np.testing.assert_allclose(got["det_boxes"][b, :m], ref["det_boxes"][b, :m], atol=TRT_FP32_BOX_ATOL)
            np.testing.assert_array_equal(got["det_classes"][b, :m], ref["det_classes"][b, :m])
