"""``ServeSettings``: the model a server runs, how it batches, and what it refuses."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdk.settings import DetectorSettings


@dataclass(frozen=True)
class ServeSettings:
    """What one server (or each Ray Serve replica) builds and enforces; validated when made.

    weights: anything ``Detector`` opens (checkpoint, folded or open-vocabulary ONNX, engine).
    classes: the default vocabulary (None: the model's own); a request may bring its own where the model
    allows it. detector: how the model runs (its ``conf`` / ``iou`` / ``max_det`` are the defaults a
    request may override). max_batch / max_wait_ms: dynamic batching: requests gathered into one model
    call, waiting at most this long for more after the first (``max_batch`` None: 8 on a GPU, 1 on a CPU,
    where a batch is no faster per image and each batch size is another compiled OpenVINO model: measured
    in ``benchmarks/serve_load.py``; requests still overlap their decoding with inference). max_queue:
    requests waiting beyond this are answered 503 (busy). max_pixels: larger images are refused from their
    header, before decoding. max_body_bytes: larger request bodies are refused while being read.
    max_classes / max_prompt_chars: the largest per-request vocabulary and prompt.
    """

    weights: str
    classes: str | None = None
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    max_batch: int | None = None
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_pixels: int = 40_000_000
    max_body_bytes: int = 25 * 1024 * 1024
    max_classes: int = 256
    max_prompt_chars: int = 200

    def __post_init__(self) -> None:
        positive = {"max_batch": self.max_batch or 1, "max_queue": self.max_queue, "max_pixels": self.max_pixels,
                    "max_body_bytes": self.max_body_bytes, "max_classes": self.max_classes,
                    "max_prompt_chars": self.max_prompt_chars}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    def batch_limit(self, backend: str) -> int:
        """``max_batch``, or its default for where the model runs (``backend``: the one that opened)."""
        on_gpu = backend == "tensorrt" or self.detector.device.startswith("cuda")
        return self.max_batch or (8 if on_gpu else 1)
