"""Inference backends behind one protocol; each imports its runtime only when opened."""

from .base import Backend, RuntimeOptions

__all__ = ["Backend", "RuntimeOptions"]
