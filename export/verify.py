"""The export self-check's pieces: error type, check images, tolerances and the output comparison.

A leaf module (numpy and ``sdk`` only): every exporter imports it and it imports no exporter.

What the self-check compares is one float32 graph computed two ways (ONNX Runtime on the CPU against
PyTorch, or the folded graph against the model): they differ by float rounding only, which a network
amplifies by its own conditioning. Random or barely trained weights amplify it far more than
released checkpoints, and another CPU's kernels round differently, so absolute bounds either fail
sound exports or let broken ones through. Bounds here are relative to the outputs' own scale:

- scores ``s = sigmoid(z)``: a logit error of ``logit_rel * Z`` (``Z`` the largest logit magnitude of
  the reference, recovered from its scores) moves a score by about ``s * (1 - s)`` times that, so
  ``|d s| <= score_atol + logit_rel * Z * s * (1 - s)``;
- boxes: DFL distances are a stride times an expectation over bins, and their rounding grows with the
  distance, so each coordinate may move by ``box_atol_px + box_rel * extent``, the extent being the
  reference box's width (x) or height (y).

Measured here (Sapphire Rapids, ONNX Runtime vs PyTorch at batch 2; the worst element's difference as
a fraction of its bound, scores / boxes): random official-format S v2 at 640 with 80 classes 0.16 / 0.02,
L v2 efficient 0.04 / 0.003, the tiny test model 0.04 / 0.004, a fine-tuned tiny model 0.01 / 0.002.
Broken on purpose, the same exports exceed their bounds: one convolution's weights 1 % off 12x to
50000x, anchors half a pixel off 2x to 9x (boxes), and ``tests/export/test_verify.py`` also fails a
wrong fold and a float16 graph passed off as float32.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sdk.errors import YoloWorldError
from sdk.preprocess import preprocess

HOW_TO_PROCEED = ("If the model is otherwise sound (random or barely trained weights amplify float rounding), "
                  "allow larger differences with --verify-tolerance K (K times these bounds; in Python "
                  "tolerance=Tolerance().scaled(K)), or skip the check with --no-verify (tolerance=None), which "
                  "prints a warning and records in the manifest that the check was skipped.")


class ExportError(YoloWorldError):
    """The export failed or its self-check disagreed with PyTorch."""


@dataclass(frozen=True)
class Tolerance:
    """Bounds of the export self-check (see the module docstring for the formulas)."""

    score_atol: float = 1e-5  # sigmoid-score units: the floor where s * (1 - s) vanishes
    logit_rel: float = 2e-4  # of the reference's largest logit magnitude Z
    box_atol_px: float = 1e-2  # input pixels
    box_rel: float = 2e-3  # of the reference box's extent along the coordinate's axis
    text_atol: float = 1e-5  # text-encoder embeddings (unit vectors)

    def scaled(self, factor: float) -> Tolerance:
        """Every bound times ``factor`` (``--verify-tolerance``)."""
        if not factor > 0:
            raise ValueError(f"the tolerance factor must be positive, got {factor}")
        return Tolerance(**{k: v * factor for k, v in asdict(self).items()})


DEFAULT_TOLERANCE = Tolerance()


@dataclass(frozen=True)
class Agreement:
    """How far two raw outputs are apart. ``*_ratio``: the largest difference relative to its bound
    (the check passes at <= 1); ``worst_*``: where that ratio peaks."""

    score: float  # max |d score|
    box_px: float  # max |d box| in input pixels
    score_ratio: float
    box_ratio: float
    worst_score: str
    worst_box: str

    @property
    def ok(self) -> bool:
        return self.score_ratio <= 1.0 and self.box_ratio <= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 9) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        return (f"max |d score| {self.score:.2e} ({self.score_ratio:.2f} of its bound), max |d box| "
                f"{self.box_px:.2e} px ({self.box_ratio:.2f} of its bound)")


def logit_scale(scores: np.ndarray) -> float:
    """The largest |logit| behind sigmoid ``scores`` (clipped where float32 saturates; at least 1)."""
    s = np.clip(np.asarray(scores, np.float64), 1e-6, 1 - 1e-6)
    return float(max(1.0, np.abs(np.log(s) - np.log1p(-s)).max(initial=0.0)))


def _ratio(diff: np.ndarray, bound: np.ndarray) -> tuple[float, int]:
    """max(diff / bound) and its flat index; non-finite differences count as infinitely far."""
    r = np.where(np.isfinite(diff), diff / bound, np.inf).reshape(-1)
    i = int(np.argmax(r)) if r.size else 0
    return (float(r[i]) if r.size else 0.0), i


def compare_raw(scores: np.ndarray, boxes: np.ndarray, ref_scores: np.ndarray, ref_boxes: np.ndarray,
                tol: Tolerance) -> Agreement:
    """Raw outputs ``scores`` ``(B, A, C)`` (sigmoid) and ``boxes`` ``(B, A, 4)`` (xyxy, input pixels)
    against a reference of the same shapes, under ``tol``'s relative bounds."""
    s, rs = np.asarray(scores, np.float64), np.asarray(ref_scores, np.float64)
    b, rb = np.asarray(boxes, np.float64), np.asarray(ref_boxes, np.float64)
    if s.shape != rs.shape or b.shape != rb.shape:
        raise ExportError(f"output shapes differ: scores {s.shape} vs {rs.shape}, boxes {b.shape} vs {rb.shape}")
    z = logit_scale(rs)
    ds, db = np.abs(s - rs), np.abs(b - rb)
    s_ratio, si = _ratio(ds, tol.score_atol + tol.logit_rel * z * rs * (1 - rs))
    extent = np.abs(rb[..., [2, 3, 2, 3]] - rb[..., [0, 1, 0, 1]])
    b_ratio, bi = _ratio(db, tol.box_atol_px + tol.box_rel * extent)
    img, anchor, cls = np.unravel_index(si, s.shape) if s.size else (0, 0, 0)
    bimg, banchor, coord = np.unravel_index(bi, b.shape) if b.size else (0, 0, 0)
    return Agreement(
        score=float(np.nan_to_num(ds, nan=np.inf).max(initial=0.0)),
        box_px=float(np.nan_to_num(db, nan=np.inf).max(initial=0.0)), score_ratio=s_ratio, box_ratio=b_ratio,
        worst_score=(f"image {img}, anchor {anchor}, class {cls}: {s.reshape(-1)[si]:.6g} vs reference "
                     f"{rs.reshape(-1)[si]:.6g} (logit scale {z:.3g})") if s.size else "",
        worst_box=(f"image {bimg}, anchor {banchor}, coordinate {'x1 y1 x2 y2'.split()[coord]}: "
                   f"{b.reshape(-1)[bi]:.3f} vs reference {rb.reshape(-1)[bi]:.3f} px (box extent "
                   f"{extent.reshape(-1)[bi]:.1f} px)") if b.size else "")


def require(agreement: Agreement, what: str) -> Agreement:
    """Raise :class:`ExportError` saying what was compared, by how much it differs, where, and how to
    proceed, unless ``agreement.ok``."""
    if agreement.ok:
        return agreement
    parts = []
    if agreement.score_ratio > 1:
        parts.append(f"scores differ by up to {agreement.score:.3g}, {agreement.score_ratio:.3g}x the bound "
                     f"(worst at {agreement.worst_score})")
    if agreement.box_ratio > 1:
        parts.append(f"boxes differ by up to {agreement.box_px:.3g} px, {agreement.box_ratio:.3g}x the bound "
                     f"(worst at {agreement.worst_box})")
    raise ExportError(f"export self-check failed: {what}: {'; '.join(parts)}. {HOW_TO_PROCEED}")


def skipped(log: Any) -> dict[str, Any]:
    """Warn that the self-check is off; the manifest record for it."""
    message = "export self-check skipped (--no-verify / tolerance=None): the artifact was not compared with PyTorch"
    warnings.warn(message, stacklevel=3)
    log(f"warning: {message}")
    return {"skipped": True}


def check_images(imgsz: int, count: int = 4, rect: bool = False) -> np.ndarray:
    """Real-looking letterboxed inputs (shapes on a textured background, varied aspect ratios),
    float32 ``(count, 3, imgsz, imgsz)``; ``rect``: wide images (16:9 and wider) in their
    minimal-padding form ``(count, 3, H, imgsz)``, ``H < imgsz``."""
    import cv2

    rs = np.random.RandomState(0)
    images = []
    for i in range(count):
        h, w = (imgsz, imgsz) if i == 0 else (int(imgsz * rs.uniform(0.4, 1.2)), int(imgsz * rs.uniform(0.4, 1.2)))
        if rect:
            h, w = int(imgsz * rs.uniform(0.35, 0.56)), imgsz
        img = cv2.GaussianBlur(rs.randint(60, 200, (h, w, 3)).astype(np.uint8), (9, 9), 0)
        for _ in range(4):
            c = tuple(int(v) for v in rs.randint(0, 255, 3))
            x, y, r = int(rs.randint(0, w)), int(rs.randint(0, h)), int(rs.randint(8, max(9, min(h, w) // 4)))
            cv2.circle(img, (x, y), r, c, -1) if rs.rand() < 0.5 else cv2.rectangle(img, (x, y), (x + r, y + r), c, -1)
        images.append(img)
    return preprocess(images, imgsz, rect=rect)[0]


__all__ = ["DEFAULT_TOLERANCE", "HOW_TO_PROCEED", "Agreement", "ExportError", "Tolerance", "check_images",
           "compare_raw", "logit_scale", "require", "skipped"]
