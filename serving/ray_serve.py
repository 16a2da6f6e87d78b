"""``yoloworld-serve --ray``: the same app as a Ray Serve deployment, for users who outgrow one machine.

Each replica builds the app (its own ``Detector`` and batcher) and is sized as ``yoloworld-label`` sizes
its actors (:func:`labeling.engine.plan_actors`): one per GPU share, else one per 4 CPUs, its CPUs and
threads from what the cluster offers. Ray's HTTP proxy listens on ``host:port`` and routes to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from sdk.errors import YoloWorldError

from .settings import ServeSettings


@dataclass(frozen=True)
class RayPlacement:
    """Where the replicas run: ``address`` ("local": a new Ray here; else a cluster address), and
    replicas / CPUs / GPUs / threads each (None: sized from the cluster)."""

    address: str = "local"
    replicas: int | None = None
    num_cpus: float | None = None
    num_gpus: float = 0.0
    threads: int | None = None


def connect(address: str) -> tuple[Any, bool]:
    """(the ``ray`` module, whether this call started Ray)."""
    import ray

    if ray.is_initialized():
        return ray, False
    ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return ray, True


def replica_settings(settings: ServeSettings, num_gpus: float, threads: int) -> ServeSettings:
    """``settings`` as one replica runs them: on a GPU when it has a share of one, with its threads."""
    d = settings.detector
    device = ("cuda" if d.device == "cpu" else d.device) if num_gpus else d.device
    return replace(settings, detector=replace(d, device=device, runtime=replace(d.runtime, intra_op_threads=threads)))


def deployment(settings: ServeSettings, replicas: int, num_cpus: float, num_gpus: float) -> Any:
    """The Ray Serve deployment: ``replicas`` copies of :func:`serving.app.build_app`, each built on its
    replica (the builder is a closure: Ray ships it, not an open model)."""
    from ray import serve

    def build() -> Any:
        from serving.app import build_app

        return build_app(settings)

    # a batch gathers up to max_batch requests: let a replica hold several batches' worth
    return serve.deployment(serve.ingress(build)(), name="yoloworld", num_replicas=replicas,
                            ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
                            max_ongoing_requests=max(16, 4 * (settings.max_batch or 8)))


def _deploy(ray: Any, serve: Any, settings: ServeSettings, placement: RayPlacement, host: str, port: int) -> None:
    """Size the replicas from the cluster, start Serve on ``host:port`` and run the app (blocks until it runs)."""
    from labeling.engine import plan_actors

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    plan = plan_actors(ray.cluster_resources(), nodes, placement.replicas, placement.num_cpus,
                       placement.num_gpus, placement.threads)
    print(f"yoloworld-serve: Ray Serve, {plan.describe().replace('actor', 'replica')}", flush=True)
    serve.start(http_options={"host": host, "port": port})
    app = deployment(replica_settings(settings, plan.num_gpus, plan.threads), plan.actors, plan.num_cpus,
                     plan.num_gpus)
    serve.run(app.bind(), name="yoloworld", route_prefix="/")


def serve_on_ray(settings: ServeSettings, placement: RayPlacement, host: str, port: int) -> int:
    """Deploy, print where it listens, and wait for Ctrl-C or SIGTERM; then shut Serve down (the replicas
    finish their requests in flight) and the Ray this call started."""
    from labeling.termination import TerminateAsInterrupt

    try:
        from ray import serve
    except ImportError:
        raise YoloWorldError("--ray needs Ray Serve: pip install 'yoloworld-sdk[ray]'") from None
    ray, started = connect(placement.address)
    try:
        # right after ray.init, which sets its own SIGTERM handler (it aborts the process): a SIGTERM while
        # deploying stops cleanly too, since the page may answer before serve.run returns
        with TerminateAsInterrupt():
            try:
                _deploy(ray, serve, settings, placement, host, port)
                print(f"yoloworld-serve: http://{host}:{port}/ (page), /docs (API)", flush=True)
                with TerminateAsInterrupt():  # again, in case deploying replaced the handler
                    while True:
                        time.sleep(1.0)
            except KeyboardInterrupt:
                print("yoloworld-serve: stopping: the replicas finish their requests in flight", flush=True)
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
    return 0
