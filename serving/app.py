"""The FastAPI app: ``POST /v1/detect``, ``GET /v1/model``, ``GET /healthz``, the page at ``/`` and the
OpenAPI page at ``/docs``. The same app runs under uvicorn (``yoloworld-serve``) and as a Ray Serve
deployment (``yoloworld-serve --ray``).

Every refused request is a 4xx with ``{"error": "what was wrong", "field": name or null}``; an
unexpected failure is a 500 with the same shape, and the server stays up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request  # module-level: FastAPI resolves the routes' annotations here
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from sdk import __version__

from .forms import ClientError, parse_form, read_body
from .service import DetectService
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("yoloworld.serve")

#: ``POST /v1/detect``'s body in the OpenAPI page (the route reads the body itself, within its limit).
DETECT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, BMP, WebP or TIFF file"},
        "conf": {"type": "number", "description": "score threshold in [0, 1) (default: the server's)"},
        "iou": {"type": "number", "description": "NMS IoU threshold in (0, 1] (default: the server's)"},
        "max_det": {"type": "integer", "description": "detections kept (default: the server's)"},
        "classes": {"type": "string", "description": "\"person,car\" or a class-text JSON "
                    "([[\"car\", \"automobile\"], [\"person\"]]); checkpoints and open-vocabulary exports only"},
    }}}}}}


def build_app(settings: ServeSettings, detector: Any = None) -> FastAPI:
    """The ASGI app serving ``settings.weights``. The model opens at start-up (or ``detector``, already
    open, is used) and its batcher drains when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await run_in_threadpool(DetectService, settings, detector)
        app.state.service = service
        log.info("yoloworld-serve: %s", service.detector.describe())
        yield
        await run_in_threadpool(service.close)  # after uvicorn answered the requests in flight

    app = FastAPI(title="yoloworld-serve", version=__version__, lifespan=lifespan,
                  description="YOLO-World open-vocabulary detection over HTTP. Try prompts on the page at /.")

    @app.exception_handler(ClientError)
    async def refused(request: Request, e: ClientError) -> JSONResponse:
        return JSONResponse(e.to_json(), status_code=e.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception) -> JSONResponse:
        log.exception("yoloworld-serve: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}", "field": None}, status_code=500)

    @app.post("/v1/detect", openapi_extra=DETECT_BODY, summary="Detect objects named by text prompts")
    async def detect(request: Request) -> JSONResponse:
        service: DetectService = request.app.state.service
        body = await read_body(request, settings.max_body_bytes)
        form = await parse_form(request.scope, body)
        checked = await run_in_threadpool(service.check, form)  # decoding off the event loop
        return JSONResponse(await service.detect(checked))

    @app.get("/v1/model", summary="The model: what runs, its vocabulary, defaults and limits")
    async def model(request: Request) -> dict[str, Any]:
        return request.app.state.service.facts()

    @app.get("/healthz", summary="Liveness, and the requests being answered")
    async def healthz(request: Request) -> dict[str, Any]:
        return request.app.state.service.health()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
