"""``DetectorSettings``: everything that decides how a :class:`~sdk.detector.Detector` runs and what it
returns, as one typed, validated value shared by ``Detector``, the command lines and labelling."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from .backends.base import RuntimeOptions
from .vocabulary import PromptMerge

BackendName = Literal["onnxruntime", "openvino", "tensorrt", "torch"]
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)
PROMPT_MERGES: tuple[PromptMerge, ...] = get_args(PromptMerge)


@dataclass(frozen=True)
class DetectorSettings:
    """How a detector runs; :class:`~sdk.detector.Detector` takes each field as a keyword argument of the
    same name (see its docstring for what each means). Out-of-range values raise ``ValueError`` naming
    the field when the settings are made, so a labelling driver or a server refuses them before any
    model is loaded.

    imgsz: input size, a multiple of 32 (None: the model's own). conf / iou / max_det / agnostic: score
    threshold, NMS IoU threshold, detections per image, class-agnostic NMS. prompt_merge / pad_prompt:
    how several prompts per class combine. backend: None picks the fastest correct one. rect: None
    or False, the square letterbox; True, the minimal-padding one. runtime: the backends' :class:`RuntimeOptions`.
    """

    device: str = "cpu"
    imgsz: int | None = None
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    agnostic: bool = False
    prompt_merge: PromptMerge = "first"
    pad_prompt: bool = False
    backend: BackendName | None = None
    rect: bool | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        if self.imgsz is not None and (self.imgsz <= 0 or self.imgsz % 32):
            raise ValueError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        check_thresholds(self.conf, self.iou, self.max_det)
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)} or None (automatic), got {self.backend!r}")
        if self.prompt_merge not in PROMPT_MERGES:
            raise ValueError(f"prompt_merge must be one of {list(PROMPT_MERGES)}, got {self.prompt_merge!r}")

    def with_thresholds(self, conf: float | None = None, iou: float | None = None,
                        max_det: int | None = None) -> DetectorSettings:
        """These settings with the given thresholds (None: keep), validated."""
        return replace(self, conf=self.conf if conf is None else conf, iou=self.iou if iou is None else iou,
                       max_det=self.max_det if max_det is None else max_det)

    def result_fields(self) -> dict[str, object]:
        """The settings that change what a result holds (not how fast it is made): results made under
        different ones are not mixed (labelling's shard fingerprint)."""
        return {"imgsz": self.imgsz, "conf": self.conf, "iou": self.iou, "max_det": self.max_det,
                "agnostic": self.agnostic, "prompt_merge": self.prompt_merge, "pad_prompt": self.pad_prompt,
                "backend": self.backend, "precision": self.runtime.precision, "rect": self.rect,
                "half": self.runtime.half}


def check_thresholds(conf: float, iou: float, max_det: int) -> None:
    """``ValueError`` naming the first threshold out of range."""
    if not 0.0 <= conf < 1.0:
        raise ValueError(f"conf must be in [0, 1), got {conf}")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
