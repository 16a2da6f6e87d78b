"""A ``POST /v1/detect`` request read and checked: the body within its size limit, the multipart form, the
image (its pixel count from the header, before decoding), thresholds and classes. Everything wrong with a
request is a :class:`ClientError` that names the field and says what was expected."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sdk.errors import ImageError, YoloWorldError
from sdk.images import to_bgr
from sdk.settings import check_thresholds
from sdk.vocabulary import Vocabulary

from .settings import ServeSettings

FIELDS = ("image", "conf", "iou", "max_det", "classes")


class ClientError(YoloWorldError):
    """A request the server refuses: HTTP ``status`` (4xx), the ``field`` at fault (None: the request as
    a whole) and the message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field = status, field

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclass(frozen=True)
class DetectRequest:
    """A checked request: the image (BGR uint8 ``(H, W, 3)``), thresholds (the server's defaults where
    the request gave none), vocabulary (None: the model's), and the ms spent decoding the image."""

    image_bgr: np.ndarray
    conf: float
    iou: float
    max_det: int
    vocabulary: Vocabulary | None
    decode_ms: float


async def read_body(request: Any, limit: int) -> bytes:
    """The body of a Starlette ``request``, refused with 413 once it exceeds ``limit`` bytes: from its
    ``Content-Length`` before reading, and while reading (a chunked body has none)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(scope: MutableMapping[str, Any], body: bytes) -> dict[str, Any]:
    """The multipart form in ``body`` -> ``{field: str or bytes}`` (a file part's content as bytes)."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    ctype = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    if not ctype.startswith("multipart/form-data"):
        raise ClientError(400, f"expected a multipart/form-data body with a field 'image', got content type "
                               f"{ctype or 'none'!r}")

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, replay).form(max_files=2, max_fields=len(FIELDS) + 4)
    except Exception as e:  # MultiPartException / HTTPException from a malformed body
        raise ClientError(400, f"malformed multipart body: {getattr(e, 'detail', None) or e}") from None
    out: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name not in FIELDS:
            raise ClientError(400, f"unknown field {name!r}; expected {', '.join(FIELDS)}", name)
        out[name] = await value.read() if isinstance(value, UploadFile) else value
    return out


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header (Pillow reads only the header), or None when Pillow does
    not know the format (OpenCV may)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: the caller compares with its own limit
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Image.DecompressionBombError as e:  # over twice Pillow's own limit: the size is in the text
            raise ClientError(413, f"image: {e} (refused from its header, before decoding)", "image") from None
        except Exception:
            return None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> BGR uint8 ``(H, W, 3)`` as ``sdk.images.read_image`` reads a file (so answers
    equal ``predict`` on the file); more than ``max_pixels`` is refused (413) from the header."""
    if not data:
        raise ClientError(400, "image: empty file", "image")
    size = image_size(data)
    if size is None:
        raise ClientError(400, f"image: cannot read the {len(data)} bytes as an image (expected JPEG, PNG, "
                               f"BMP, WebP or TIFF)", "image")
    if size[0] * size[1] > max_pixels:
        raise ClientError(413, f"image: {size[0]}x{size[1]} is {size[0] * size[1]} pixels, more than the limit "
                               f"of {max_pixels} (refused from its header, before decoding)", "image")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ClientError(400, f"image: a {size[0]}x{size[1]} image that cannot be decoded (corrupt or "
                               f"unsupported)", "image")
    try:
        return to_bgr(decoded, name="image")
    except ImageError as e:
        raise ClientError(400, str(e), "image") from None


def parse_number(form: dict[str, Any], name: str, kind: type) -> Any:
    """``form[name]`` as ``kind`` (int or float), None when absent or empty."""
    text = form.get(name)
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = kind(text.decode() if isinstance(text, bytes) else text)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise ClientError(400, f"{name}: expected {'an integer' if kind is int else 'a number'}, got {text!r:.50}",
                          name) from None
    if kind is float and not np.isfinite(value):
        raise ClientError(400, f"{name}: expected a finite number, got {text!r:.50}", name)
    return value


def parse_classes(text: Any, settings: ServeSettings) -> Vocabulary:
    """``"a,b"`` or a class-text JSON (``[["car", "automobile"], "person"]``) -> a Vocabulary merged as
    the server's detector merges. Never a path: a ``.json`` string is not read from the server's disk."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    try:
        classes: Any = json.loads(text) if text.startswith(("[", "\"")) else [c.strip() for c in text.split(",")]
    except json.JSONDecodeError as e:
        raise ClientError(400, f"classes: not valid JSON ({e}); expected \"a,b\" or a class-text JSON like "
                               f"[[\"car\", \"automobile\"], [\"person\"]]", "classes") from None
    if isinstance(classes, str):
        classes = [classes]
    if isinstance(classes, list):
        classes = [c for c in classes if c != ""]
    d = settings.detector
    try:
        vocab = Vocabulary.from_any(classes, d.prompt_merge, d.pad_prompt)
    except YoloWorldError as e:
        raise ClientError(400, f"classes: {e}", "classes") from None
    if len(vocab) > settings.max_classes:
        raise ClientError(400, f"classes: {len(vocab)} classes, more than this server's limit of "
                               f"{settings.max_classes}", "classes")
    longest = max((t for p in vocab.prompts for t in p), key=len)
    if len(longest) > settings.max_prompt_chars:
        raise ClientError(400, f"classes: a prompt of {len(longest)} characters, more than the limit of "
                               f"{settings.max_prompt_chars}: {longest[:40]!r}...", "classes")
    return vocab


def check_request(form: dict[str, Any], defaults: tuple[float, float, int]) -> tuple[float, float, int]:
    """The form's thresholds, absent ones from ``defaults``, checked as ``DetectorSettings`` checks them."""
    conf, iou, max_det = (parse_number(form, "conf", float), parse_number(form, "iou", float),
                          parse_number(form, "max_det", int))
    values = (defaults[0] if conf is None else conf, defaults[1] if iou is None else iou,
              defaults[2] if max_det is None else max_det)
    try:
        check_thresholds(*values)
    except ValueError as e:
        raise ClientError(400, str(e), str(e).split(" ", 1)[0]) from None
    return values
