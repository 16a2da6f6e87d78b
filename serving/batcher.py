"""Dynamic batching: requests from many connections gathered into few ``Detector.predict`` calls.

One thread owns the detector: ``set_classes`` changes it, so switching a vocabulary and predicting are
serialized there. Requests are gathered up to ``max_batch``, waiting at most ``max_wait_ms`` after the
first one; within a gathered batch, only requests with the same vocabulary and thresholds share a model
call (``predict`` applies one vocabulary and one ``conf`` / ``iou`` / ``max_det``), the detector's
current vocabulary first. Switching back to a vocabulary used before costs a lookup per prompt: the
backends cache text embeddings per prompt.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdk.detections import Detections
from sdk.vocabulary import Vocabulary


class Busy(RuntimeError):
    """The queue holds ``max_queue`` requests already."""


@dataclass(eq=False)
class Job:
    """One image to detect in. vocabulary: None for the detector's default one."""

    image_bgr: np.ndarray
    vocabulary: Vocabulary | None
    conf: float
    iou: float
    max_det: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)

    def key(self) -> tuple[Any, ...]:
        return (self.vocabulary, self.conf, self.iou, self.max_det)


@dataclass(frozen=True)
class Outcome:
    """What a job's future resolves to: the detections, the batch it ran in (images), the ms it waited
    in the queue and the ms spent switching the vocabulary for it."""

    detections: Detections
    batch_size: int
    queue_ms: float
    vocabulary_ms: float


class Batcher:
    """Runs ``Job``\\s on ``detector`` in a background thread; :meth:`submit` returns the job's future
    (an :class:`Outcome`, or the exception ``predict`` / ``set_classes`` raised for its group)."""

    def __init__(self, detector: Any, max_batch: int = 8, max_wait_ms: float = 5.0, max_queue: int = 256) -> None:
        self.detector = detector
        self.default_vocabulary: Vocabulary = detector.vocabulary
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1e3, max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0  # submitted, not yet answered
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="yoloworld-batcher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests submitted and not yet answered."""
        return self._pending

    def submit(self, job: Job) -> Future:
        if self._queue.qsize() >= self.max_queue:
            raise Busy(f"{self._queue.qsize()} requests are waiting already (max_queue {self.max_queue})")
        with self._lock:
            self._pending += 1
        job.future.add_done_callback(self._answered)
        self._queue.put(job)
        return job.future

    def _answered(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Answer every job submitted so far, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            jobs, stop = self._gather()
            if jobs:
                self._run(jobs)
            if stop:
                return

    def _gather(self) -> tuple[list[Job], bool]:
        """The next batch: the first job waited for, then more until ``max_batch`` or ``max_wait_ms``."""
        first = self._queue.get()
        if first is None:
            return [], True
        jobs, deadline = [first], time.perf_counter() + self.max_wait_s
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self, jobs: list[Job]) -> None:
        groups: dict[tuple[Any, ...], list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.key(), []).append(job)
        current = self.detector.vocabulary
        # the detector's current vocabulary first: one switch fewer
        order = sorted(groups.values(), key=lambda g: (g[0].vocabulary or self.default_vocabulary) != current)
        for group in order:
            self._run_group(group)

    def _run_group(self, group: list[Job]) -> None:
        """One ``predict`` call for jobs of one vocabulary and thresholds; its failure fails them only."""
        t0 = time.perf_counter()
        j = group[0]
        try:
            vocabulary = j.vocabulary or self.default_vocabulary
            if vocabulary != self.detector.vocabulary:
                self.detector.set_classes(vocabulary)
            t1 = time.perf_counter()
            results = self.detector.predict([job.image_bgr for job in group], batch_size=len(group), conf=j.conf,
                                            iou=j.iou, max_det=j.max_det)
        except Exception as e:  # answered to these requests; the thread goes on with the next batch
            for job in group:
                job.future.set_exception(e)
            return
        for job, detections in zip(group, results, strict=True):
            job.future.set_result(Outcome(detections, len(group), (t0 - job.queued_at) * 1e3, (t1 - t0) * 1e3))
