"""Loading and saving: official YOLO-World releases (mmyolo names) and this project's own format.

Official ``.pth`` files are ``{"meta": ..., "state_dict": ...}`` with plain tensors; they load with
``torch.load(weights_only=True)``, every key used and none missing. Own checkpoints are
``{"format": "yoloworld-sdk", "format_version": 1, "config": ..., "model": ..., "vocabulary": ...}``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_path
from ..errors import CheckpointError
from .config import NeckType, YoloWorldConfig
from .text_encoder import infer_text_config
from .yoloworld import YoloWorld

FORMAT = "yoloworld-sdk"
FORMAT_VERSION = 1

#: official prefix -> this implementation's prefix; names below the prefixes are identical.
PREFIXES = (
    ("backbone.image_model.", "backbone."),
    ("backbone.text_model.model.", "text_encoder."),
    ("neck.", "neck."),
    ("bbox_head.head_module.", "head."),
)
_DEEPEN_BY_BLOCKS = {1: 0.33, 2: 0.67, 3: 1.0}  # stage-1 block count -> official deepen_factor


def official_to_internal(key: str) -> str | None:
    for official, internal in PREFIXES:
        if key.startswith(official):
            return internal + key[len(official):]
    return None


def internal_to_official(key: str) -> str:
    for official, internal in PREFIXES:
        if key.startswith(internal):
            return official + key[len(internal):]
    raise KeyError(key)


def to_official_state_dict(model: YoloWorld) -> OrderedDict[str, Tensor]:
    """The model's weights under official key names (the inverse of the loader's mapping)."""
    return OrderedDict((internal_to_official(k), v) for k, v in model.state_dict().items())


def _read(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # neither a zip nor a pickle: ONNX, image, text...
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (an exported .onnx/.engine goes to "
                                  f"sdk.Detector directly)") from None
        raise CheckpointError(
            f"{path}: holds Python objects other than tensors and plain containers; refusing to "
            f"unpickle it (weights_only=True). Official releases and this SDK's files never do. "
            f"({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{str(e).splitlines()[0]}") from None


def _shape(sd: dict[str, Tensor], key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


def infer_config(sd: dict[str, Tensor]) -> YoloWorldConfig:
    """Architecture of an official state dict (official key names) from its weights alone."""
    bb, head = "backbone.image_model.", "bbox_head.head_module."
    if bb + "stem.conv.weight" not in sd or head + "cls_preds.0.2.weight" not in sd:
        some = ", ".join(list(sd)[:5])
        raise CheckpointError(f"not a YOLO-World checkpoint: no '{bb}stem.conv.weight' or "
                              f"'{head}cls_preds.0.2.weight' key (first keys: {some})")
    if any(".guide_convs." in k for k in sd) or head + "cls_contrasts.0.conv.weight" in sd:
        raise CheckpointError("reparameterized (vocabulary-folded) official checkpoints are not "
                              "supported; load the original checkpoint and fold with the exporter")
    widen = _shape(sd, bb + "stem.conv.weight")[0] / 64
    n1 = sum(1 for k in sd if k.startswith(bb + "stage1.1.blocks.") and k.endswith("conv1.conv.weight"))
    deepen = _DEEPEN_BY_BLOCKS.get(n1, n1 / 3)
    last = round(_shape(sd, bb + "stage4.0.conv.weight")[0] / widen)
    neck: NeckType
    if "neck.text_enhancer.projections.0.conv.weight" in sd:
        neck = "dual_vlpan"
    elif "neck.top_down_layers.0.attn_block.guide_fc.weight" in sd:
        neck = "vlpan"
    else:
        neck = "efficient"
    text_sd = {k[len("backbone.text_model.model."):]: v for k, v in sd.items()
               if k.startswith("backbone.text_model.model.")}
    cfg = YoloWorldConfig(
        deepen=deepen, widen=widen, last_stage_channels=last, neck=neck,
        head="bn" if head + "cls_contrasts.0.norm.weight" in sd else "l2",
        text_channels=_shape(sd, head + "cls_preds.0.2.weight")[0],
        reg_max=_shape(sd, head + "reg_preds.0.2.weight")[0] // 4,
        ipool_channels=sd.get("neck.text_enhancer.proj.weight", torch.empty(0, 256)).shape[1],
        ipool_heads=sd.get("neck.text_enhancer.proj.weight", torch.empty(0, 256)).shape[1] // 32,
        text_encoder=infer_text_config(text_sd) if text_sd else None,
    )
    cls_channels = _shape(sd, head + "cls_preds.0.0.conv.weight")[0]
    if cls_channels != cfg.feature_channels[0]:
        cfg = replace(cfg, cls_channels=cls_channels)
    return cfg


def load_official_state_dict(model: YoloWorld, sd: dict[str, Tensor], source: str = "state dict",
                             drop_neck_guides: bool = False) -> None:
    """Strictly load official-named weights: any missing, unexpected or mis-shaped key is an error.

    ``drop_neck_guides`` discards a VL-PAN checkpoint's ``attn_block.guide_fc``/``bias`` keys, which
    the efficient neck has no use for (fine-tuning an efficient-neck model from VL-PAN weights).
    """
    own = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in sd.items():
        if key.endswith("position_ids"):  # stored by transformers < 4.31; a constant arange
            continue
        if drop_neck_guides and (".attn_block.guide_fc." in key or key.endswith(".attn_block.bias")):
            continue
        internal = official_to_internal(key)
        if internal is None or internal not in own:
            unexpected.append(key)
        else:
            mapped[internal] = value
    missing = [internal_to_official(k) for k in own if k not in mapped]
    wrong = [f"{internal_to_official(k)}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in mapped.items() if v.shape != own[k].shape]
    if missing or unexpected or wrong:
        def show(items: list[str]) -> str:
            more = f"\n    ... {len(items) - 15} more" if len(items) > 15 else ""
            return "\n    ".join(items[:15]) + more
        parts = [f"{source} does not fit the {model.config.neck}/{model.config.head} model:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", wrong)):
            if items:
                parts.append(f"  {len(items)} {title}:\n    {show(items)}")
        raise CheckpointError("\n".join(parts))
    model.load_state_dict(mapped, strict=True)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> YoloWorld:
    """A model in eval mode from an official release ``.pth`` or this SDK's own checkpoint.

    The architecture (size, neck, head, text tower) is read from the file; nothing is guessed.
    """
    model, _ = load_checkpoint_with_meta(path, device)
    return model


def load_checkpoint_with_meta(path: str | os.PathLike, device: str | torch.device = "cpu"
                              ) -> tuple[YoloWorld, dict[str, Any]]:
    """Like :func:`load_checkpoint`; also returns the file's extra entries (vocabulary, train...)."""
    data = _read(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    if data.get("format") == FORMAT:
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {data['format_version']} is newer than "
                                  f"this SDK reads ({FORMAT_VERSION}); upgrade yoloworld-sdk")
        try:
            cfg = YoloWorldConfig.from_dict(data["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad 'config' entry: {e}") from None
        model = YoloWorld(cfg)
        try:
            model.load_state_dict(data["model"], strict=True)
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: weights do not fit its own config: {e}") from None
        meta = {k: v for k, v in data.items() if k not in ("model", "config")}
    else:
        sd = data.get("state_dict", data)
        if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: no tensor 'state_dict' found; keys: {list(data)[:8]}")
        try:
            cfg = infer_config(sd)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        model = YoloWorld(cfg)
        load_official_state_dict(model, sd, source=str(path))
        meta = {"format": "official", "meta": data.get("meta")}
    return model.to(device).eval(), meta


def stored_facts(path: str | os.PathLike) -> dict[str, Any]:
    """What an own checkpoint records about itself, read without building the model: ``vocabulary`` (one
    prompt list per class), ``imgsz`` (training size) and ``class_names``; each None where absent (official
    releases store none of them)."""
    data = _read(path)
    own = isinstance(data, dict) and data.get("format") == FORMAT
    return {k: data.get(k) if own else None for k in ("vocabulary", "imgsz", "class_names")}


def save_checkpoint(model: YoloWorld, path: str | os.PathLike, **extra: Any) -> Path:
    """Write this SDK's self-describing checkpoint atomically; ``extra`` entries ride along
    (e.g. ``vocabulary=[["person"], ...]``, ``train={...}``)."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(), "model": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def save_official_checkpoint(model: YoloWorld, path: str | os.PathLike) -> Path:
    """Write the weights the way official releases are laid out (``meta`` + ``state_dict``)."""
    data = {"meta": {"mmengine_version": "0.10.3", "note": "written by yoloworld-sdk"},
            "state_dict": to_official_state_dict(model)}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)
