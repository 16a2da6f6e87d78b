"""Inference backends behind one protocol; each imports its runtime only when opened."""

from .base import Backend

__all__ = ["Backend"]
