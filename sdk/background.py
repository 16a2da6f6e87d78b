"""One producer thread ahead of its consumer: ``Detector.predict_stream``'s reader and labelling's result
pump both run on :func:`in_background`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def in_background(items: Iterable[T], ahead: int, name: str, timeout: float | None = None,
                  on_timeout: Callable[[], BaseException] | None = None) -> Generator[T, None, None]:
    """``items``, produced on a daemon thread up to ``ahead`` items ahead of the consumer.

    An exception raised while producing is raised here, in the consumer, after the items produced
    before it. When the consumer stops early (``break``, ``close()``, an exception) the producer stops
    at its next item. ``timeout``: seconds the consumer waits for an item before it raises
    ``on_timeout()`` (default ``TimeoutError``); None waits for ever.
    """
    slots: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=max(1, ahead))
    end = object()
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # re-raised on the consumer's thread, with its message
            put((end, e))
            return
        put((end, None))

    threading.Thread(target=produce, daemon=True, name=name).start()
    try:
        while True:
            try:
                item, error = slots.get(timeout=timeout)
            except queue.Empty:
                raise (on_timeout() if on_timeout else TimeoutError(f"{name}: nothing for {timeout:g} s")) from None
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
