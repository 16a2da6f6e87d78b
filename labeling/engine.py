"""Where labeling runs: in this process, or on Ray Data with an actor pool of :class:`LabelWorker`\\s.

Both produce lists of result records; the caller writes them to shards as they arrive. Ray is imported
only by :func:`ray_batches` (the ``.[ray]`` extra).

Never hang: actor resources are sized from what the cluster offers (an actor asking for a whole CPU on
a 2-CPU machine starves Ray Data's own tasks), and :func:`with_stall_timeout` stops a run that makes no
progress for a set time, naming why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from sdk.background import in_background
from sdk.errors import YoloWorldError

from .sources import SourceImage
from .worker import LabelSettings, LabelWorker

Records = list[dict[str, Any]]


class LabelStalled(YoloWorldError):
    """No result arrived for the stall timeout; the message says what the cluster offered."""


def in_process_batches(todo: list[SourceImage], settings: LabelSettings, chunk: int | None = None
                       ) -> Iterator[Records]:
    """Label ``todo`` with one worker here, ``chunk`` images per call (default: the batch size)."""
    worker = LabelWorker(settings)
    step = chunk or settings.batch_size
    try:
        for start in range(0, len(todo), step):
            part = todo[start:start + step]
            yield worker.label([s.path for s in part], [s.key for s in part])
    finally:
        worker.close()


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, and what each one asks of Ray (CPUs, GPUs) and uses (threads)."""

    actors: int
    num_cpus: float
    num_gpus: float
    threads: int

    def describe(self) -> str:
        gpus = f", {self.num_gpus:g} GPU" if self.num_gpus else ""
        return f"{self.actors} actor(s), each {self.num_cpus:g} CPU{gpus}, {self.threads} thread(s)"


def plan_actors(resources: dict[str, float], nodes: list[dict[str, float]], actors: int | None = None,
                num_cpus: float | None = None, num_gpus: float = 0.0, threads: int | None = None) -> ActorPlan:
    """Size the actor pool from the cluster. ``resources``: the cluster's totals (``ray.cluster_resources()``);
    ``nodes``: each alive node's resources. Defaults: one actor per GPU share, or one per 4 CPUs (at least
    one); CPUs per actor such that half a CPU stays free for Ray Data's own tasks; threads per actor its
    share of the CPUs. A request no node can hold is an error, not a wait."""
    total_cpu, total_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    max_node_cpu = max((n.get("CPU", 0.0) for n in nodes), default=total_cpu)
    max_node_gpu = max((n.get("GPU", 0.0) for n in nodes), default=total_gpu)
    if num_gpus:
        if num_gpus > max_node_gpu:
            raise YoloWorldError(f"each actor asks for {num_gpus:g} GPU(s) but no node of this Ray cluster has "
                                 f"that many (largest: {max_node_gpu:g}; cluster: {total_gpu:g})")
        actors = actors or max(1, int(total_gpu // num_gpus))
    if total_cpu <= 0:
        raise YoloWorldError(f"this Ray cluster offers no CPUs ({resources})")
    actors = actors or max(1, int(total_cpu // 4))
    spare = total_cpu - min(0.5, total_cpu / 4)
    if num_cpus is None:
        num_cpus = min(max_node_cpu, 1.0 if num_gpus else 4.0, max(0.25, spare / actors))
        num_cpus = math.floor(num_cpus * 4) / 4  # quarters: readable in Ray's status
    if num_cpus > max_node_cpu:
        raise YoloWorldError(f"each actor asks for {num_cpus:g} CPUs but no node of this Ray cluster has that "
                             f"many (largest: {max_node_cpu:g})")
    fit = int(total_cpu // num_cpus) if num_cpus else actors
    if num_gpus:
        fit = min(fit, int(total_gpu // num_gpus))
    if fit < 1:
        raise YoloWorldError(f"no actor fits this Ray cluster ({resources}) with {num_cpus:g} CPU / "
                             f"{num_gpus:g} GPU each")
    actors = min(actors, fit)
    threads = threads or max(1, round(total_cpu / actors) if not num_gpus else math.ceil(num_cpus))
    return ActorPlan(actors, num_cpus, num_gpus, min(threads, max(1, int(max_node_cpu))))


def ray_batches(todo: list[SourceImage], settings: LabelSettings, plan: ActorPlan) -> Iterator[Records]:
    """Label ``todo`` on the Ray cluster this process is connected to: ``map_batches`` over the (path, key)
    rows with an actor pool of ``plan.actors`` workers; each image is read inside its actor (the paths must
    be readable there: one machine, or shared storage)."""
    import json

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours shows images/s, done/total and ETA
    d = settings.detector
    worker_settings = replace(settings, detector=replace(
        d, device="cuda" if plan.num_gpus else d.device, runtime=replace(d.runtime, intra_op_threads=plan.threads)))
    rows = [{"path": s.path, "key": s.key} for s in todo]
    ds = ray.data.from_items(rows, override_num_blocks=block_count(len(rows), settings.batch_size))
    ds = ds.map_batches(LabelWorker, fn_constructor_kwargs={"settings": worker_settings},
                        batch_size=settings.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=plan.actors), num_cpus=plan.num_cpus,
                        num_gpus=plan.num_gpus or None)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield [json.loads(r) for r in batch["record"]]


def block_count(rows: int, batch_size: int, max_blocks: int = 20_000) -> int:
    """Ray Data blocks for ``rows`` images: 4 batches per block (an actor task; results come back, and a
    killed actor's work is redone, a block at a time), at most ``max_blocks`` (each is an object in Ray's
    store: a million images must not make a million objects)."""
    per_block = max(4 * batch_size, math.ceil(rows / max_blocks))
    return max(1, math.ceil(rows / per_block))


def with_stall_timeout(batches: Iterator[Records], seconds: float, diagnose: Callable[[], str] = lambda: ""
                       ) -> Iterator[Records]:
    """``batches``, consumed on a helper thread; :class:`LabelStalled` when none arrives for ``seconds``
    (``diagnose()`` adds what the cluster offered). What was yielded before stays the caller's."""

    def stalled() -> LabelStalled:
        why = diagnose()
        return LabelStalled(f"no image finished in the last {seconds:g} s{'; ' + why if why else ''}")

    return in_background(batches, 4, "yoloworld-label-results", seconds, stalled)
