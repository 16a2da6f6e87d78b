"""What every benchmark records about the machine (shared with ``yoloworld-bench``)."""

from __future__ import annotations

from sdk.benchmark import cpu_name

__all__ = ["cpu_name"]
