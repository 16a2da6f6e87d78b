"""``yoloworld-serve``: a detector behind HTTP, with dynamic batching and a page for trying prompts; one
process (uvicorn) or Ray Serve replicas. Needs the ``[serve]`` extra (FastAPI, uvicorn).

>>> from serving import ServeSettings, build_app  # doctest: +SKIP
>>> app = build_app(ServeSettings("model.onnx"))  # doctest: +SKIP  (an ASGI app: uvicorn, Ray Serve)
"""

from __future__ import annotations

from typing import Any

from .settings import ServeSettings

__all__ = ["ServeSettings", "build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":  # imports FastAPI: ``yoloworld-serve`` without the extra says what to install
        from .app import build_app

        return build_app
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
