"""Triton model repository: config.pbtxt fields against the manifest, files, errors."""

from __future__ import annotations

import dataclasses
import re

import onnx
import pytest

from export.onnx_export import export_onnx
from export.triton import num_anchors, read_repository_manifest, write_triton_repository
from sdk.backends.torch import encode_texts
from sdk.errors import YoloWorldError
from sdk.manifest import Manifest, NmsSettings, read_manifest, write_sidecar
from sdk.model import load_checkpoint
from sdk.vocabulary import Vocabulary

CLASSES = ["person", "red car", "a dog"]
IMGSZ = 160


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format -> {field: [values]} (messages as dicts; lists flattened into repeats)."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', text)
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok.startswith('"'):
            return tok[1:-1]
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                return tok  # enum

    def message(end):
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "[":
                pos += 1
                while tokens[pos] != "]":
                    out.setdefault(key, []).append(value())
                    if tokens[pos] == ",":
                        pos += 1
                pos += 1
            else:
                out.setdefault(key, []).append(value())
        pos += 1
        return out

    return message(None)


def one(cfg: dict, key: str):
    (v,) = cfg[key]
    return v


@pytest.fixture(scope="module")
def raw_onnx(tiny_checkpoints, tmp_path_factory):
    path = tmp_path_factory.mktemp("triton") / "model.onnx"
    model = load_checkpoint(tiny_checkpoints["efficient"])
    vocab = Vocabulary.from_any(CLASSES)
    emb = vocab.embeddings(lambda t: encode_texts(model, None, t))
    export_onnx(model, vocab, emb, path, imgsz=IMGSZ, max_batch=16, log=lambda *_: None)
    return path


def test_raw_onnx_repository(raw_onnx, tmp_path):
    manifest = read_manifest(raw_onnx)
    model_dir = write_triton_repository(raw_onnx, tmp_path / "repo", max_batch=16, preferred_batch=(4, 8, 16, 32),
                                        max_queue_delay_us=1500, instances=2)
    assert model_dir == tmp_path / "repo" / "yoloworld"
    assert (model_dir / "1" / "model.onnx").read_bytes() == raw_onnx.read_bytes()
    assert read_repository_manifest(model_dir) == manifest
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert one(cfg, "name") == "yoloworld"
    assert one(cfg, "platform") == "onnxruntime_onnx"
    assert one(cfg, "default_model_filename") == "model.onnx"
    assert one(cfg, "max_batch_size") == 16
    a = num_anchors(manifest.imgsz, manifest.strides)
    assert a == 20 * 20 + 10 * 10 + 5 * 5
    (inp,) = cfg["input"]
    assert inp == {"name": ["images"], "data_type": ["TYPE_FP32"], "dims": [3, IMGSZ, IMGSZ]}
    assert cfg["output"] == [{"name": ["scores"], "data_type": ["TYPE_FP32"], "dims": [a, len(CLASSES)]},
                             {"name": ["boxes"], "data_type": ["TYPE_FP32"], "dims": [a, 4]}]
    batching = one(cfg, "dynamic_batching")
    assert batching == {"preferred_batch_size": [4, 8, 16], "max_queue_delay_microseconds": [1500]}  # 32 > 16
    assert one(cfg, "instance_group") == {"count": [2], "kind": ["KIND_GPU"]}
    # the config's dims are the ONNX's own (batch axis left out)
    proto = onnx.load(str(raw_onnx))
    dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim][1:] for o in proto.graph.output}
    assert dims == {o["name"][0]: o["dims"] for o in cfg["output"]}
    assert not list(model_dir.parent.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_cpu_instances_version_and_name(raw_onnx, tmp_path):
    model_dir = write_triton_repository(raw_onnx, tmp_path, model_name="yw-s_640", max_batch=4, device="cpu",
                                        version=3, preferred_batch=())
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert one(cfg, "name") == "yw-s_640" and (model_dir / "3" / "model.onnx").is_file()
    assert one(cfg, "instance_group") == {"count": [1], "kind": ["KIND_CPU"]}
    assert one(cfg, "dynamic_batching") == {"max_queue_delay_microseconds": [2000]}


def _nms_manifest(**kw) -> Manifest:
    base = dict(class_names=["a", "b"], prompts=[["a"], ["b"]], prompt_merge="first", embedding_sha256="0" * 64,
                imgsz=(320, 320), output_form="nms", nms=NmsSettings(conf=0.3, iou=0.6, max_det=100),
                max_batch=8, output_names=("num_dets", "det_boxes", "det_scores", "det_classes"))
    base.update(kw)
    return Manifest(**base)


@pytest.mark.parametrize("form", ["nms", "trt_nms"])
def test_nms_plan_repository(tmp_path, form):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really a plan")
    manifest = _nms_manifest(output_form=form)
    write_sidecar(manifest, engine)
    model_dir = write_triton_repository(engine, tmp_path / "repo", model_name="det", max_batch=8)
    assert (model_dir / "1" / "model.plan").read_bytes() == b"not really a plan"
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert one(cfg, "platform") == "tensorrt_plan" and one(cfg, "default_model_filename") == "model.plan"
    assert one(cfg, "max_batch_size") == 8
    assert cfg["input"] == [{"name": ["images"], "data_type": ["TYPE_FP32"], "dims": [3, 320, 320]}]
    k = manifest.nms.max_det
    assert cfg["output"] == [
        {"name": ["num_dets"], "data_type": ["TYPE_INT32"], "dims": [1]},
        {"name": ["det_boxes"], "data_type": ["TYPE_FP32"], "dims": [k, 4]},
        {"name": ["det_scores"], "data_type": ["TYPE_FP32"], "dims": [k]},
        {"name": ["det_classes"], "data_type": ["TYPE_INT32"], "dims": [k]},
    ]
    assert one(cfg, "dynamic_batching") == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": [2000]}
    assert one(cfg, "instance_group") == {"count": [1], "kind": ["KIND_GPU"]}
    assert read_repository_manifest(model_dir) == manifest


def test_plan_types_come_from_the_engine_sidecar(tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"x")
    io = {"images": {"mode": "input", "dtype": "float16", "shape": [-1, 3, 320, 320]},
          "num_dets": {"mode": "output", "dtype": "int32", "shape": [-1, 1]},
          "det_boxes": {"mode": "output", "dtype": "float16", "shape": [-1, 100, 4]},
          "det_scores": {"mode": "output", "dtype": "float16", "shape": [-1, -1]},
          "det_classes": {"mode": "output", "dtype": "int32", "shape": [-1, 100]}}
    write_sidecar(_nms_manifest(extra={"tensorrt": "10.8.0", "io": io}), engine)
    cfg = parse_pbtxt((write_triton_repository(engine, tmp_path / "r", max_batch=8) / "config.pbtxt").read_text())
    types = {t["name"][0]: t["data_type"][0] for t in cfg["input"] + cfg["output"]}
    assert types == {"images": "TYPE_FP16", "num_dets": "TYPE_INT32", "det_boxes": "TYPE_FP16",
                     "det_scores": "TYPE_FP16", "det_classes": "TYPE_INT32"}
    io["det_boxes"]["shape"] = [-1, 50, 4]  # disagrees with max_det 100
    write_sidecar(_nms_manifest(extra={"io": io}), engine)
    with pytest.raises(YoloWorldError, match="det_boxes"):
        write_triton_repository(engine, tmp_path / "r2", max_batch=8)


def test_static_batch_has_no_batching(tmp_path):
    engine = tmp_path / "static.engine"
    engine.write_bytes(b"x")
    write_sidecar(_nms_manifest(dynamic_batch=False, max_batch=1), engine)
    cfg = parse_pbtxt((write_triton_repository(engine, tmp_path / "r") / "config.pbtxt").read_text())
    assert one(cfg, "max_batch_size") == 0 and "dynamic_batching" not in cfg
    assert cfg["input"][0]["dims"] == [1, 3, 320, 320] and cfg["output"][0]["dims"] == [1, 1]


def test_errors(raw_onnx, tmp_path):
    with pytest.raises(YoloWorldError, match="supports batches 1..16"):
        write_triton_repository(raw_onnx, tmp_path, max_batch=32)
    with pytest.raises(YoloWorldError, match="GPU only"):
        plan = tmp_path / "m.engine"
        plan.write_bytes(b"x")
        write_sidecar(_nms_manifest(), plan)
        write_triton_repository(plan, tmp_path, max_batch=8, device="cpu")
    with pytest.raises(YoloWorldError, match="looks like 'onnx'"):
        write_triton_repository(raw_onnx, tmp_path, max_batch=8, kind="plan")
    with pytest.raises(YoloWorldError, match="model name"):
        write_triton_repository(raw_onnx, tmp_path, model_name="../x", max_batch=8)
    with pytest.raises(YoloWorldError, match="no such file"):
        write_triton_repository(tmp_path / "missing.onnx", tmp_path)
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"x")
    write_sidecar(dataclasses.replace(_nms_manifest(), output_names=("scores", "boxes")), bad)
    with pytest.raises(YoloWorldError, match="do not fit"):
        write_triton_repository(bad, tmp_path, max_batch=8)
    assert not (tmp_path / "yoloworld").exists()  # nothing written on errors


def test_nms_onnx_repository_reads_types_from_the_graph(raw_onnx, tmp_path):
    nms_graph = pytest.importorskip("export.nms_graph")
    settings = NmsSettings(conf=0.2, iou=0.5, max_det=50)
    proto = nms_graph.append_onnx_nms(onnx.load(str(raw_onnx)), settings)
    path = tmp_path / "nms.onnx"
    onnx.save(proto, str(path))
    manifest = dataclasses.replace(read_manifest(raw_onnx), output_form="nms", nms=settings,
                                   output_names=tuple(o.name for o in proto.graph.output))
    write_sidecar(manifest, path)
    cfg = parse_pbtxt((write_triton_repository(path, tmp_path / "r", max_batch=8) / "config.pbtxt").read_text())
    assert {o["name"][0]: (o["data_type"][0], o["dims"]) for o in cfg["output"]} == {
        "num_dets": ("TYPE_INT32", [1]), "det_boxes": ("TYPE_FP32", [50, 4]), "det_scores": ("TYPE_FP32", [50]),
        "det_classes": ("TYPE_INT32", [50])}
