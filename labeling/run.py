"""``label_collection``: list the sources, skip what earlier runs labeled, label the rest (here or on
Ray), then merge the shards into training data, a summary and a contact sheet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from sdk.atomic import atomic_write_text, check_can_create
from sdk.errors import YoloWorldError
from sdk.facts import ModelFacts, read_facts, resolve_imgsz, resolve_vocabulary

from .engine import ActorPlan, in_process_batches, plan_actors, ray_batches, with_stall_timeout
from .outputs import LabelFilter, class_counts, merge, write_coco, write_yolo
from .report import contact_sheet, summary_text
from .shards import ShardWriter, check_settings, read_shards
from .sources import KeyMode, SourceImage, content_key, list_sources
from .termination import TerminateAsInterrupt
from .worker import LabelSettings


@dataclass(frozen=True)
class LabelJob:
    """One labeling run.

    conf: ``{class name: threshold}``, ``"*"`` for every other class. min_size: smallest box side kept
    (pixels). ray: None (in this process), ``"local"`` (start Ray here) or a cluster address
    (``"auto"``, ``"ray://head:10001"``); an already connected Ray session is used as it is.
    actors / num_cpus / num_gpus / threads: the actor pool (None: sized from the cluster,
    :func:`labeling.engine.plan_actors`). shard_size: results per shard file (also flushed every 30 s).
    stall_timeout: seconds without a finished image before a Ray run stops (None: never).
    """

    sources: tuple[str, ...]
    out: str
    settings: LabelSettings
    conf: tuple[tuple[str, float], ...] = (("*", 0.25),)
    min_size: float = 0.0
    format: Literal["coco", "yolo"] = "coco"
    val_fraction: float = 0.0
    key: KeyMode = "stat"
    ray: str | None = None
    actors: int | None = None
    num_cpus: float | None = None
    num_gpus: float = 0.0
    threads: int | None = None
    shard_size: int = 1000
    stall_timeout: float | None = 300.0
    contact_sheet: int = 16
    progress: bool = True


def label_collection(job: LabelJob) -> dict[str, Any]:
    """Run ``job``; returns the summary (also ``DIR/summary.json``). Outputs: ``DIR/shards/`` (the results,
    kept for reruns), the COCO or YOLO label set with ``data.yaml``, ``class_texts.json``, ``summary.json``,
    ``contact_sheet.png`` and ``failed.txt`` (unreadable images, when there are any)."""
    out = Path(job.out)
    check_can_create(out)
    facts = read_facts(job.settings.weights)
    class_texts = resolve_class_texts(job.settings, facts)
    ran = planned_run(job.settings, facts, len(class_texts))
    if job.progress:
        print(f"yoloworld-label: imgsz {ran['imgsz']} ({ran['imgsz_from']}), {ran['backend']}, {ran['letterbox']} "
              f"letterbox, {ran['classes']} classes")
    names = [t[0] for t in class_texts]
    keep = LabelFilter(per_class_conf(job.conf, names), job.min_size)
    settings = replace(job.settings, class_texts=tuple(tuple(t) for t in class_texts),
                       detector=replace(job.settings.detector, conf=min(keep.conf)))
    sources = list_sources(job.sources, job.key)
    shards = out / "shards"
    check_settings(shards, {**settings.fingerprint(), "weights_key": content_key(settings.weights)})
    index = read_shards(shards)
    for bad in index.bad:
        print(f"set aside an unreadable shard, its images are labeled again: {bad}")
    todo = [s for s in sources if index.result(s.path, s.key) is None]
    t0, ran_on = time.perf_counter(), "-"
    if todo:
        ran_on = _label(todo, len(sources), settings, job, ShardWriter(shards, job.shard_size))
    seconds = time.perf_counter() - t0
    merged = merge(sources, read_shards(shards))
    if job.format == "yolo":
        write_yolo(merged, class_texts, keep, out, job.val_fraction)
    else:
        write_coco(merged, class_texts, keep, out, job.val_fraction)
    counts = class_counts(merged, names, keep)
    failed = out / "failed.txt"
    if merged.failed:
        atomic_write_text(failed, "".join(f"{p}\t{why}\n" for p, why in merged.failed))
    else:
        failed.unlink(missing_ok=True)
    sheet = None
    if job.contact_sheet:
        sheet = contact_sheet(merged, names, keep, out / "contact_sheet.png", job.contact_sheet)
    summary = {"out": str(out), "images": len(sources), "labeled_now": len(todo), "skipped": len(sources) - len(todo),
               "failed": len(merged.failed), "failed_images": merged.failed,
               "boxes": sum(c["boxes"] for c in counts.values()), "per_class": counts, "seconds": seconds,
               "images_per_s": len(todo) / seconds if todo and seconds > 0 else 0.0, "ran_on": ran_on,
               "format": job.format, "thresholds": dict(zip(names, keep.conf, strict=True)),
               "min_size": job.min_size, "contact_sheet": str(sheet) if sheet else None, "ran": ran}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    if job.progress:
        print(summary_text(summary))
    return summary


def _label(todo: list[SourceImage], total: int, settings: LabelSettings, job: LabelJob, writer: ShardWriter) -> str:
    """Label ``todo`` into shards with a progress bar; returns where it ran. Results received before an
    error, Ctrl-C or SIGTERM (:class:`~labeling.termination.Terminated`) are flushed to a shard, so a
    rerun continues after them."""
    if job.ray is None:
        batches: Iterator[list[dict[str, Any]]] = in_process_batches(todo, settings)
        ran_on, stop = "this process", None
    else:
        ray, started = connect_ray(job.ray)
        plan = actor_plan(ray, job)
        print(f"Ray: {plan.describe()} on {ray.cluster_resources().get('CPU', 0):g} CPUs, "
              f"{ray.cluster_resources().get('GPU', 0):g} GPUs")
        batches = ray_batches(todo, settings, plan)
        if job.stall_timeout:
            batches = with_stall_timeout(batches, job.stall_timeout, lambda: _diagnose(ray, plan))
        ran_on, stop = f"Ray ({plan.describe()})", (ray.shutdown if started else None)
    # after ray.init, which sets its own SIGTERM handler in this process
    with TerminateAsInterrupt() as sigterm:
        try:
            _consume(batches, writer, total, len(todo), job.progress, job.ray is not None)
        finally:
            sigterm.defer()
            writer.flush()
            if stop:
                stop()
    return ran_on


def _consume(batches: Iterator[list[dict[str, Any]]], writer: ShardWriter, total: int, todo: int, progress: bool,
             on_ray: bool) -> None:
    """Write what arrives into shards, with a progress bar; a failed Ray run becomes one clear error."""
    from tqdm import tqdm

    try:
        with tqdm(total=total, initial=total - todo, unit="img", desc="labeling", disable=not progress,
                  smoothing=0.05) as bar:
            for records in batches:
                writer.add(records)
                bar.update(len(records))
    except Exception as e:
        if not on_ray or isinstance(e, YoloWorldError):
            raise
        first = (str(e).strip().splitlines() or [""])[-1][:500]  # Ray's messages end with the cause
        raise YoloWorldError(f"the Ray run failed ({type(e).__name__}: {first}); the {writer.written + len(writer)} "
                             f"results received are kept, rerun the same command to continue") from e


def connect_ray(address: str) -> tuple[Any, bool]:
    """(the ``ray`` module, whether this call started it): the session already connected, a new local
    Ray (``"local"``) or the cluster at ``address``."""
    try:
        import ray
    except ImportError:
        raise YoloWorldError("--ray needs Ray Data: pip install 'yoloworld-sdk[ray]'") from None
    if ray.is_initialized():
        return ray, False
    ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return ray, True


def actor_plan(ray: Any, job: LabelJob) -> ActorPlan:
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return plan_actors(ray.cluster_resources(), nodes, job.actors, job.num_cpus, job.num_gpus, job.threads)


def _diagnose(ray: Any, plan: ActorPlan) -> str:
    try:
        free = ray.available_resources()
    except Exception as e:  # the cluster itself may be what went away
        return f"the Ray cluster does not answer ({e})"
    return (f"the actors ({plan.describe()}) may be waiting for resources: the cluster has "
            f"{free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs free of "
            f"{ray.cluster_resources()}; the results so far are kept, rerun to continue")


def resolve_class_texts(settings: LabelSettings, facts: ModelFacts) -> list[list[str]]:
    """The classes the labels will have, resolved as ``Detector`` resolves them (checked here, not by every
    actor): ``settings.class_texts``, else the export's folded vocabulary or the checkpoint's stored one."""
    d = settings.detector
    classes = [list(t) for t in settings.class_texts] if settings.class_texts else None
    vocab = resolve_vocabulary(classes, settings.weights, facts, d.prompt_merge, d.pad_prompt)
    return [list(p) for p in vocab.prompts]


def planned_run(settings: LabelSettings, facts: ModelFacts, classes: int) -> dict[str, Any]:
    """What every worker's ``Detector`` runs with, decided here as it decides it (``Detector.ran_with``
    less the precision, which a backend settles only when it opens): input size and where it came from,
    backend, letterbox, number of classes; the summary records it."""
    from sdk.detector import default_backend

    d = settings.detector
    imgsz, imgsz_from = resolve_imgsz(d.imgsz, settings.weights, facts)
    backend = d.backend or default_backend(settings.weights, d.device)
    return {"imgsz": imgsz, "imgsz_from": imgsz_from, "backend": backend, "letterbox": "rect" if d.rect else "square",
            "classes": classes}


def per_class_conf(conf: tuple[tuple[str, float], ...], names: list[str]) -> tuple[float, ...]:
    """One threshold per class from ``(name, threshold)`` pairs (``"*"``: the default, else 0.25)."""
    table = dict(conf)
    unknown = sorted(set(table) - set(names) - {"*"})
    if unknown:
        raise YoloWorldError(f"--conf names {unknown}, which are not classes of this vocabulary: {names}")
    for name, value in table.items():
        if not 0.0 <= value < 1.0:
            raise YoloWorldError(f"--conf {name}={value}: a threshold must be in [0, 1)")
    return tuple(table.get(n, table.get("*", 0.25)) for n in names)


__all__ = ["LabelJob", "label_collection"]
