"""``yoloworld-serve WEIGHTS``: the detector behind HTTP (uvicorn), or on Ray Serve with ``--ray``."""

from __future__ import annotations

import argparse
import sys

from sdk.errors import YoloWorldError

from .settings import ServeSettings


def serve_parser() -> argparse.ArgumentParser:
    from labeling.cli import add_ray_args
    from sdk.cli import add_detector_args

    p = argparse.ArgumentParser(
        prog="yoloworld-serve", description="Serve a detector over HTTP: POST /v1/detect (JSON answers), GET "
        "/v1/model, GET /healthz, a page for trying prompts at /, the OpenAPI page at /docs. Concurrent requests "
        "are batched. SIGTERM answers the requests in flight, then exits.")
    p.add_argument("weights", help="checkpoint (.pth/.pt) or export (.onnx, open-vocabulary .onnx, .engine)")
    p.add_argument("--classes", help='default vocabulary: "person,car" or a class-text JSON; default: the '
                                     "model's own")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=int, help="largest batch of requests per model call (default: 8 on a GPU, "
                                                 "1 on a CPU, where batches are no faster per image)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first request of a batch waits for more (default 5 ms)")
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond this get 503 (default 256)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="larger images are refused from their header, before decoding (default 40000000)")
    p.add_argument("--max-body-mb", type=float, default=25.0, help="largest request body in MiB (default 25)")
    p.add_argument("--max-classes", type=int, default=256, help="largest vocabulary a request may bring")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to finish the requests in flight (default 30)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="log every request (default on)")
    add_ray_args(p, "deploy on Ray Serve", "replica")
    add_detector_args(p)
    return p


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    from sdk.cli import detector_settings

    return ServeSettings(args.weights, args.classes, detector_settings(args), args.max_batch, args.max_wait_ms,
                         args.max_queue, args.max_pixels, int(args.max_body_mb * 1024 * 1024), args.max_classes)


def main(argv: list[str] | None = None) -> int:
    args = serve_parser().parse_args(argv)
    try:
        settings = serve_settings(args)
        if args.ray:
            from .ray_serve import RayPlacement, serve_on_ray

            placement = RayPlacement(args.ray, args.replicas, args.num_cpus, args.num_gpus, args.threads)
            return serve_on_ray(settings, placement, args.host, args.port)
        return serve_here(settings, args.host, args.port, args.drain_timeout, args.access_log)
    except ImportError as e:
        extra = "ray" if args.ray else "serve"
        print(f"yoloworld-serve: error: {e}; install it with pip install 'yoloworld-sdk[{extra}]'", file=sys.stderr)
        return 2
    except (YoloWorldError, NotImplementedError, ValueError, OSError) as e:
        print(f"yoloworld-serve: error: {e}", file=sys.stderr)
        return 2


def serve_here(settings: ServeSettings, host: str, port: int, drain_timeout: float, access_log: bool) -> int:
    """uvicorn in this process until SIGTERM or Ctrl-C (which answer the requests in flight first). The
    model opens before the port does: a wrong path is an error here, not a server that fails later."""
    import uvicorn

    from sdk.detector import Detector

    from .app import build_app

    detector = Detector.from_settings(settings.weights, settings.classes, settings.detector)
    print(f"yoloworld-serve: {detector.describe()}; batches of up to "
          f"{settings.batch_limit(detector.backend.name)}, {settings.max_wait_ms:g} ms wait", flush=True)
    print(f"yoloworld-serve: http://{host}:{port}/ (page), /docs (API)", flush=True)
    config = uvicorn.Config(build_app(settings, detector), host=host, port=port, access_log=access_log,
                            timeout_graceful_shutdown=int(drain_timeout), log_level="info")
    uvicorn.Server(config).run()
    return 0
