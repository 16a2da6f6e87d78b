"""Writing an ONNX artifact: its manifest into ``metadata_props`` and a ``.json`` sidecar, atomically.

A leaf module (onnx and ``sdk`` only, no torch): the exporters, the precision conversions and the
NMS appending all save through :func:`save_onnx`.
"""

from __future__ import annotations

import os
from typing import Any

from sdk.manifest import MANIFEST_KEY, Manifest, write_sidecar


def save_onnx(proto: Any, manifest: Manifest, path: str | os.PathLike) -> None:
    """``manifest`` into ``proto``'s metadata, the ONNX checker, then ``path`` and its sidecar, atomically."""
    import onnx

    from sdk.atomic import atomic_path

    del proto.metadata_props[:]
    proto.metadata_props.add(key=MANIFEST_KEY, value=manifest.to_json())
    proto.producer_name = "yoloworld-sdk"
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    write_sidecar(manifest, path)


__all__ = ["save_onnx"]
