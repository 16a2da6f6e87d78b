"""Exceptions with messages that name the offending file, field or value (no torch imports)."""

from __future__ import annotations


class YoloWorldError(ValueError):
    """Base class of every error this package raises on bad input."""


class CheckpointError(YoloWorldError):
    """A weights file that is unreadable, not YOLO-World, or does not fit the model."""


class ImageError(YoloWorldError):
    """An image that is missing, unreadable or of an unsupported shape/dtype."""


class VocabularyError(YoloWorldError):
    """An empty or malformed class list / class-text JSON."""
