"""A Triton Inference Server model repository for an exported model (ONNX or TensorRT plan).

``write_triton_repository(artifact, repo)`` writes::

    repo/<model_name>/config.pbtxt          platform, batching, inputs/outputs from the manifest
    repo/<model_name>/manifest.json         the artifact's manifest (pre/post-processing, class names)
    repo/<model_name>/<version>/model.onnx  or model.plan (a TensorRT engine)

Triton adds the batch axis itself (``max_batch_size`` > 0), so ``dims`` leave it out: input ``images``
``[3, H, W]``; raw outputs ``scores [A, C]`` and ``boxes [A, 4]`` (A anchors over the strides); NMS forms
``num_dets [1]`` int32, ``det_boxes [K, 4]``, ``det_scores [K]``, ``det_classes [K]`` int32 with K =
``nms.max_det``. A static-batch export gets ``max_batch_size: 0`` and the batch axis of 1 in ``dims``.
Clients letterbox with the manifest's settings (``sdk.preprocess``) and decode with ``sdk.postprocess``.

A plan only loads in a Triton whose TensorRT version built it (see ``export.tensorrt``): build the engine
with the TensorRT of the Triton release that serves it (or inside its container).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from sdk.atomic import atomic_path, atomic_write_text
from sdk.errors import YoloWorldError
from sdk.manifest import Manifest, read_manifest

PLATFORMS = {"onnx": "onnxruntime_onnx", "plan": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "plan": "model.plan"}  # Triton's default file names
MANIFEST_FILE = "manifest.json"
_PLAN_SUFFIXES = (".engine", ".plan", ".trt")

# numpy dtype names (engine sidecars) and ONNX TensorProto element types -> Triton data types
_NP_TO_TRITON = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                 "bool": "TYPE_BOOL"}
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 6: "TYPE_INT32",
                   7: "TYPE_INT64", 3: "TYPE_INT8", 2: "TYPE_UINT8", 9: "TYPE_BOOL"}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # without the batch axis


def num_anchors(imgsz: tuple[int, int], strides: Iterable[int]) -> int:
    h, w = imgsz
    return sum((h // s) * (w // s) for s in strides)


def tensor_specs(manifest: Manifest) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs (batch axis left out) as the manifest describes them."""
    h, w = manifest.imgsz
    inputs = [TensorSpec(manifest.input_name, "TYPE_FP32", (3, h, w))]
    if manifest.output_form == "raw":
        a, c = num_anchors(manifest.imgsz, manifest.strides), len(manifest.class_names)
        known = {"scores": TensorSpec("scores", "TYPE_FP32", (a, c)), "boxes": TensorSpec("boxes", "TYPE_FP32", (a, 4))}
    elif manifest.output_form in ("nms", "trt_nms"):
        k = manifest.nms.max_det
        known = {"num_dets": TensorSpec("num_dets", "TYPE_INT32", (1,)),
                 "det_boxes": TensorSpec("det_boxes", "TYPE_FP32", (k, 4)),
                 "det_scores": TensorSpec("det_scores", "TYPE_FP32", (k,)),
                 "det_classes": TensorSpec("det_classes", "TYPE_INT32", (k,))}
    else:
        raise YoloWorldError(f"unknown output form {manifest.output_form!r} in the manifest")
    unknown = [n for n in manifest.output_names if n not in known]
    if unknown:
        raise YoloWorldError(f"the manifest's outputs {list(manifest.output_names)} do not fit its output form "
                             f"{manifest.output_form!r} (unknown: {unknown})")
    return inputs, [known[n] for n in manifest.output_names]


def _artifact_io(artifact: Path, kind: str, manifest: Manifest) -> dict[str, tuple[str, list[int]]] | None:
    """name -> (Triton type, shape with -1 for dynamic axes) read from the artifact itself, if possible:
    the ONNX graph, or the ``io`` an engine's sidecar records."""
    if kind == "plan":
        io = manifest.extra.get("io")
        if not isinstance(io, dict):
            return None
        return {n: (_NP_TO_TRITON.get(str(v.get("dtype")), ""), [int(d) for d in v.get("shape", [])])
                for n, v in io.items() if isinstance(v, dict)}
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(artifact), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    out = {}
    for v in list(model.graph.input) + list(model.graph.output):
        if v.name in init:
            continue
        t = v.type.tensor_type
        out[v.name] = (_ONNX_TO_TRITON.get(t.elem_type, ""),
                       [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim])
    return out


def _reconcile(specs: list[TensorSpec], actual: dict[str, tuple[str, list[int]]] | None, batched: bool,
               artifact: Path) -> list[TensorSpec]:
    """The artifact's own types win over the defaults; its static dims must agree with the manifest's."""
    if actual is None:
        return specs
    out = []
    for s in specs:
        if s.name not in actual:
            raise YoloWorldError(f"{artifact} has no tensor {s.name!r} (it has {sorted(actual)}); the manifest does "
                                 "not describe this file")
        dtype, shape = actual[s.name]
        want = ((-1,) if batched else (1,)) + s.dims
        if len(shape) != len(want) or any(a > 0 and b > 0 and a != b for a, b in zip(shape, want, strict=True)):
            raise YoloWorldError(f"{artifact}: tensor {s.name!r} has shape {shape}, the manifest implies "
                                 f"{list(want)}")
        out.append(dataclasses.replace(s, data_type=dtype or s.data_type))
    return out


def _infer_kind(artifact: Path, kind: str | None) -> str:
    suffix = artifact.suffix.lower()
    guessed = "onnx" if suffix == ".onnx" else "plan" if suffix in _PLAN_SUFFIXES else None
    if kind is None:
        if guessed is None:
            raise YoloWorldError(f"{artifact}: cannot tell ONNX from TensorRT plan by its suffix; pass kind='onnx' "
                                 "or kind='plan'")
        return guessed
    if kind not in PLATFORMS:
        raise YoloWorldError(f"kind must be 'onnx' or 'plan', got {kind!r}")
    if guessed is not None and guessed != kind:
        raise YoloWorldError(f"{artifact} looks like {guessed!r}, not {kind!r}")
    return kind


def render_config(name: str, platform: str, model_file: str, max_batch_size: int, inputs: list[TensorSpec],
                  outputs: list[TensorSpec], preferred_batch: list[int], max_queue_delay_us: int,
                  instances: int, instance_kind: str) -> str:
    """``config.pbtxt`` (protobuf text format of Triton's ModelConfig)."""

    def tensors(specs: list[TensorSpec]) -> str:
        items = [f'  {{\n    name: "{s.name}"\n    data_type: {s.data_type}\n'
                 f'    dims: [ {", ".join(str(d) for d in s.dims)} ]\n  }}' for s in specs]
        return "[\n" + ",\n".join(items) + "\n]"

    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch_size}",
             f'default_model_filename: "{model_file}"', f"input {tensors(inputs)}", f"output {tensors(outputs)}"]
    if max_batch_size > 0:
        batching = ["dynamic_batching {"]
        if preferred_batch:
            batching.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred_batch)} ]")
        batching += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
        lines.append("\n".join(batching))
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {instance_kind}\n  }}\n]")
    return "\n".join(lines) + "\n"


def write_triton_repository(artifact: str | os.PathLike, repo_dir: str | os.PathLike, model_name: str = "yoloworld",
                            max_batch: int = 32, preferred_batch: Iterable[int] = (4, 8, 16),
                            max_queue_delay_us: int = 2000, instances: int = 1, kind: str | None = None,
                            device: str = "gpu", version: int = 1) -> Path:
    """Write a Triton model repository entry for ``artifact`` (exported ``.onnx``, or a TensorRT engine
    ``.engine``/``.plan`` with its sidecar) and return the model folder ``repo_dir/model_name``.

    ``kind``: ``"onnx"`` (platform ``onnxruntime_onnx``) or ``"plan"`` (``tensorrt_plan``); by default
    from the suffix. ``max_batch`` may not exceed what the artifact supports (``manifest.max_batch``:
    the ONNX's claim, the engine's profile maximum); ``preferred_batch`` sizes above it are dropped.
    ``device``: ``"gpu"`` (KIND_GPU) or ``"cpu"`` (KIND_CPU, ONNX only). Every file is written atomically,
    ``config.pbtxt`` last, so a polling server never sees a half-written model.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise YoloWorldError(f"{artifact}: no such file")
    kind = _infer_kind(artifact, kind)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name) or model_name in (".", ".."):
        raise YoloWorldError(f"model name {model_name!r}: use letters, digits, '_', '-', '.'")
    if device not in ("gpu", "cpu"):
        raise YoloWorldError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if kind == "plan" and device == "cpu":
        raise YoloWorldError("a TensorRT plan runs on the GPU only; use device='gpu' or the ONNX with device='cpu'")
    if instances < 1 or version < 1 or max_queue_delay_us < 0:
        raise YoloWorldError(f"instances ({instances}) and version ({version}) must be >= 1, "
                             f"max_queue_delay_us ({max_queue_delay_us}) >= 0")
    manifest = read_manifest(artifact)
    if manifest.open_vocabulary:
        raise YoloWorldError(f"{artifact}: open-vocabulary exports are not supported here yet")
    batched = manifest.dynamic_batch
    if batched:
        if not 1 <= max_batch <= manifest.max_batch:
            raise YoloWorldError(f"max_batch {max_batch}: {artifact} supports batches 1..{manifest.max_batch}"
                                 + (" (its optimization profile)" if kind == "plan" else ""))
        preferred = sorted({int(b) for b in preferred_batch if 1 <= int(b) <= max_batch})
        max_batch_size = max_batch
    else:
        preferred, max_batch_size = [], 0

    inputs, outputs = tensor_specs(manifest)
    actual = _artifact_io(artifact, kind, manifest)
    inputs, outputs = _reconcile(inputs, actual, batched, artifact), _reconcile(outputs, actual, batched, artifact)
    if not batched:  # no batching in Triton: the model's batch axis of 1 is part of dims
        inputs = [dataclasses.replace(s, dims=(1, *s.dims)) for s in inputs]
        outputs = [dataclasses.replace(s, dims=(1, *s.dims)) for s in outputs]

    model_dir = Path(repo_dir) / model_name
    target = model_dir / str(version) / MODEL_FILES[kind]
    with atomic_path(target) as tmp:
        shutil.copyfile(artifact, tmp)
    atomic_write_text(model_dir / MANIFEST_FILE, manifest.to_json())
    text = render_config(model_name, PLATFORMS[kind], MODEL_FILES[kind], max_batch_size, inputs, outputs, preferred,
                         max_queue_delay_us, instances, "KIND_GPU" if device == "gpu" else "KIND_CPU")
    atomic_write_text(model_dir / "config.pbtxt", text)
    return model_dir


def read_repository_manifest(model_dir: str | os.PathLike) -> Manifest:
    """The manifest a client needs (class names, letterbox settings, output form) from a model folder."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise YoloWorldError(f"{model_dir}: no {MANIFEST_FILE}; write the repository with write_triton_repository")
    return Manifest.from_json(path.read_text(), source=str(path))


__all__ = ["MANIFEST_FILE", "MODEL_FILES", "PLATFORMS", "TensorSpec", "num_anchors", "read_repository_manifest",
           "render_config", "tensor_specs", "write_triton_repository"]
