"""The manifest every exported artifact carries (ONNX ``metadata_props`` and a ``.json`` sidecar).

``sdk`` reads pre/post-processing, class names and the output form from it and never guesses.
Numpy-level: no torch, no onnx needed to read a sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .atomic import atomic_write_text
from .errors import YoloWorldError
from .vocabulary import PromptMerge

MANIFEST_KEY = "yoloworld"  # ONNX metadata_props key
FORMAT = "yoloworld-sdk-export"
FORMAT_VERSION = 2  # 2: dynamic_hw
OutputForm = Literal["raw", "nms", "trt_nms"]
Precision = Literal["fp32", "fp16", "int8"]  # what an artifact is exported in
ComputePrecision = Literal["fp32", "fp16", "bf16", "int8"]  # what a backend computes in


@dataclass(frozen=True)
class NmsSettings:
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    agnostic: bool = False
    pre_nms_topk: int = 30000  # host NMS only; in-graph NMS considers every candidate above conf


@dataclass(frozen=True)
class Manifest:
    """What an exported model expects and returns.

    Input ``images``: float32 ``(B, 3, H, W)`` (``H, W = imgsz`` or, with ``dynamic_hw``, any multiples
    of 32 up to it), RGB, ``pixel * scale`` (1/255), letterboxed with
    ``pad_value`` (the official keep-ratio resize + centred pad). Output forms: ``raw`` -> ``scores``
    ``(B, A, C)`` (sigmoid) and ``boxes`` ``(B, A, 4)`` xyxy input pixels; ``nms`` / ``trt_nms`` ->
    ``num_dets`` ``(B, 1)`` int32, ``det_boxes`` ``(B, K, 4)``, ``det_scores`` ``(B, K)``,
    ``det_classes`` ``(B, K)`` int32 (K = ``nms.max_det``).
    """

    class_names: list[str]
    prompts: list[list[str]]
    prompt_merge: PromptMerge
    embedding_sha256: str
    imgsz: tuple[int, int]
    output_form: OutputForm = "raw"
    nms: NmsSettings = field(default_factory=NmsSettings)
    dynamic_batch: bool = True
    max_batch: int = 32
    dynamic_hw: bool = False  # True: any input height and width, multiples of 32, up to imgsz (rect letterbox)
    precision: Precision = "fp32"
    strides: tuple[int, ...] = (8, 16, 32)
    pad_value: int = 114
    scale: float = 1 / 255
    channel_order: str = "RGB"
    input_name: str = "images"
    output_names: tuple[str, ...] = ("scores", "boxes")
    open_vocabulary: bool = False  # True: text embeddings are an input (``text_embeds``, ``text_mask``)
    vocab_capacity: int = 0
    source_checkpoint_sha256: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # architecture (YoloWorldConfig as a dict)
    versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. TensorRT engine details
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise YoloWorldError(f"{source}: manifest is not valid JSON: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise YoloWorldError(f"{source}: not a yoloworld-sdk export manifest (format "
                                 f"{data.get('format') if isinstance(data, dict) else None!r})")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise YoloWorldError(f"{source}: manifest version {data['format_version']} is newer than this "
                                 f"SDK reads ({FORMAT_VERSION}); upgrade yoloworld-sdk")
        try:
            data["nms"] = NmsSettings(**data.get("nms", {}))
            data["imgsz"] = tuple(data["imgsz"])
            data["strides"] = tuple(data.get("strides", (8, 16, 32)))
            data["output_names"] = tuple(data.get("output_names", ()))
            return cls(**data)
        except (TypeError, KeyError) as e:
            raise YoloWorldError(f"{source}: manifest has missing or unknown fields: {e}") from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB chunks; recorded for sources and artifacts."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{artifact}.json")


def write_sidecar(manifest: Manifest, artifact: str | os.PathLike) -> Path:
    return atomic_write_text(sidecar_path(artifact), manifest.to_json())


def read_manifest(artifact: str | os.PathLike) -> Manifest:
    """The sidecar if present, else (ONNX) the ``metadata_props`` entry."""
    path = Path(artifact)
    side = sidecar_path(path)
    if side.exists():
        return Manifest.from_json(side.read_text(), source=str(side))
    if path.suffix.lower() == ".onnx" and path.is_file():
        text = _onnx_metadata(path)
        if text is not None:
            return Manifest.from_json(text, source=str(path))
    raise YoloWorldError(f"{path}: not an exported YOLO-World model (no {side.name} and no "
                         f"'{MANIFEST_KEY}' metadata); export it with yoloworld-export")


def _onnx_metadata(path: Path) -> str | None:
    try:
        import onnx
    except ImportError:  # a deployment install: ONNX Runtime reads the metadata below
        pass
    else:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # any parse failure means "not a readable ONNX"
            raise YoloWorldError(f"{path}: not a readable ONNX file: {e}") from None
        return next((p.value for p in model.metadata_props if p.key == MANIFEST_KEY), None)
    import onnxruntime as ort  # deployment installs have this one

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise YoloWorldError(f"{path}: not a readable ONNX file: {e}") from None
    return session.get_modelmeta().custom_metadata_map.get(MANIFEST_KEY)
