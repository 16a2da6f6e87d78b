"""SIGTERM handled as Ctrl-C while labeling: schedulers (Slurm, Kubernetes, systemd) and ``kill`` stop a
job with SIGTERM, whose default action ends the process at once and loses the results not yet in a
shard; Ray's driver handler (``sys.exit``) runs the clean-up but prints nothing and exits 15."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: a ``KeyboardInterrupt``, so code that keeps its results on Ctrl-C keeps them here."""


def _replaceable(handler: Any) -> bool:
    """The default action, or Ray's driver handler (set by ``ray.init``), both of which end the process
    without our clean-up message; a handler the application installed itself is left alone."""
    return handler in (signal.SIG_DFL, None) or getattr(handler, "__module__", "").startswith("ray.")


class TerminateAsInterrupt:
    """Within ``with``: SIGTERM raises :class:`Terminated` in the main thread. After :meth:`defer` (call
    it first thing in the clean-up) a SIGTERM only marks the stop, raised when the ``with`` ends, so the
    clean-up itself (writing the last shard) is never cut short. Does nothing off the main thread."""

    def __init__(self) -> None:
        self.received = False
        self._deferred = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> TerminateAsInterrupt:
        if threading.current_thread() is threading.main_thread() and _replaceable(signal.getsignal(signal.SIGTERM)):
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.received
        self.received = True
        if first and not self._deferred:
            raise Terminated

    def defer(self) -> None:
        self._deferred = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        if self.received and self._deferred and exc_type is None:
            raise Terminated


__all__ = ["TerminateAsInterrupt", "Terminated"]
