"""Serving load: throughput, p50/p99 latency and errors of ``yoloworld-serve`` on the loopback under bounded,
time-limited loads, against in-process ``Detector.predict`` one image at a time on the same files.

Setup: the random calibrated YOLO-World v2 S at 640 with 80 classes, exported to ONNX (fp32, dynamic height
and width), run as a user gets it (``Detector``'s default backend and precision, rect letterbox); 16
generated 640x480 JPEGs (one input shape). Loads: in-process sequential ``predict`` (the baseline);
the server as started by default (on a CPU: batches of 1) with 1 client and with 8 concurrent clients; with
8 clients and dynamic batching of up to 8 images per model call (``--max-batch 8``, 5 ms wait). Each client
sends one request at a time on a kept-alive connection (stdlib ``http.client``: the client costs little CPU
on the shared cores) and reads the JSON answer. Every load runs ``--seconds`` after a warm-up; loads
alternate, ``--repeats`` times.

    python benchmarks/serve_load.py [--seconds 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, save_barh  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

SERVE = Path(sys.executable).parent / "yoloworld-serve"
# name -> (server flags, clients); None: in this process
LOADS: dict[str, tuple[list[str] | None, int]] = {
    "in-process predict, one by one": (None, 1),
    "server, 1 client": ([], 1),
    "server, 8 clients (CPU default: batches of 1)": ([], 8),
    "server, 8 clients, batches of up to 8": (["--max-batch", "8"], 8),
}


def make_inputs(work: Path, count: int = 16) -> tuple[Path, list[Path]]:
    """The S export and ``count`` 640x480 JPEGs."""
    import cv2

    from benchmarks.bench_onnx_precision import build
    from benchmarks.common import synthetic_bgr
    from export.pipeline import ExportOptions, export_artifact

    images = []
    for i, img in enumerate(synthetic_bgr(count, 7, 640)):
        images.append(work / f"{i:02d}.jpg")
        cv2.imwrite(str(images[-1]), cv2.resize(img, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 90])
    model, vocab, emb = build(640)
    path = work / "s_fp32.onnx"
    export_artifact(model, vocab, path, ExportOptions(imgsz=640), emb, log=lambda *_: None)
    return path, images


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "yoloworldbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def client_loop(port: int, bodies: list[tuple[bytes, str]], deadline: float, out: list[tuple[float, int]]) -> None:
    """Requests one at a time until ``deadline``; (latency s, status) per request (status 0: no answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = 0
    while time.perf_counter() < deadline:
        body, ctype = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/detect", body, {"Content-Type": ctype})
            reply = conn.getresponse()
            json.loads(reply.read())
            out.append((time.perf_counter() - t0, reply.status))
        except (OSError, http.client.HTTPException, ValueError):
            out.append((time.perf_counter() - t0, 0))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i += 1
    conn.close()


def server_load(port: int, bodies: list[tuple[bytes, str]], clients: int, seconds: float) -> dict[str, Any]:
    results: list[list[tuple[float, int]]] = [[] for _ in range(clients)]
    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(port, bodies[c:] + bodies[:c], start + seconds, results[c]))
               for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize([r for rs in results for r in rs], time.perf_counter() - start)


def in_process_load(detector: Any, paths: list[Path], seconds: float) -> dict[str, Any]:
    """``predict`` on the files (read and decoded each time, as the server does), one at a time."""
    out, i = [], 0
    start = time.perf_counter()
    while time.perf_counter() < start + seconds:
        t0 = time.perf_counter()
        detector.predict(str(paths[i % len(paths)]), batch_size=1)
        out.append((time.perf_counter() - t0, 200))
        i += 1
    return summarize(out, time.perf_counter() - start)


def summarize(records: list[tuple[float, int]], elapsed: float) -> dict[str, Any]:
    ok = sorted(t for t, status in records if status == 200)
    pick = (lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] * 1e3) if ok else (lambda q: float("nan"))
    return {"requests": len(records), "errors": len(records) - len(ok), "seconds": elapsed,
            "images_per_s": len(ok) / elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def start_server(model: Path, flags: list[str], port: int, log: Path) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([str(SERVE), str(model), "--port", str(port), "--no-access-log", *flags],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"yoloworld-serve exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"yoloworld-serve did not start: {log.read_text()}")


def measure(model: Path, paths: list[Path], seconds: float, repeats: int, work: Path) -> dict[str, Any]:
    from sdk import Detector
    from tests.builders import free_port

    bodies = [multipart(p.read_bytes()) for p in paths]
    detector = Detector(model)
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for flags, _ in LOADS.values():
            if flags is not None and " ".join(flags) not in servers:
                port = free_port()
                servers[" ".join(flags)] = (start_server(model, flags, port, work / f"server{port}.log"), port)
        runs: dict[str, list[dict]] = {name: [] for name in LOADS}
        in_process_load(detector, paths, 2.0)  # warm-ups: compiled models, caches
        for _, port in servers.values():
            server_load(port, bodies, 8, 2.0)
        for r in range(repeats):
            for name, (flags, clients) in LOADS.items():
                res = in_process_load(detector, paths, seconds) if flags is None else \
                    server_load(servers[" ".join(flags)][1], bodies, clients, seconds)
                runs[name].append(res)
                print(f"repeat {r + 1}: {name}: {res['images_per_s']:.2f} images/s, p50 {res['p50_ms']:.0f} ms, "
                      f"p99 {res['p99_ms']:.0f} ms, {res['errors']} errors", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    return {"ran": detector.describe(), "runs": runs}


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=12.0, help="length of each measured load")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    p.add_argument("--replot", action="store_true", help="redraw the plot of an existing --out")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["YOLOWORLD_CACHE_DIR"] = str(Path(tmp) / "cache")  # the servers inherit it
        model, paths = make_inputs(Path(tmp))
        measured = measure(model, paths, args.seconds, args.repeats, Path(tmp))
    results = {}
    for name, rs in measured["runs"].items():
        results[name] = {"images_per_s": _stats([r["images_per_s"] for r in rs]),
                         "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                         "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                         "errors": sum(r["errors"] for r in rs), "requests": sum(r["requests"] for r in rs),
                         "runs": rs}
    base = results["in-process predict, one by one"]["images_per_s"]["median"]
    for r in results.values():
        r["vs_in_process"] = r["images_per_s"]["median"] / base
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "versions": _versions(), "ran": measured["ran"],
              "settings": {"seconds": args.seconds, "repeats": args.repeats, "images": len(paths),
                           "image_size": "640x480", "max_wait_ms": 5.0},
              "results": results}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    for name, r in results.items():
        print(f"{name}: {r['images_per_s']['median']:.2f} images/s ({r['vs_in_process']:.2f}x in-process), "
              f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, {r['errors']} errors")


def plot(report: dict[str, Any], path: Path) -> None:
    rows = list(report["results"].items())
    stats = [r["images_per_s"] for _, r in rows]
    save_barh(path, [f"{n}: {r['vs_in_process']:.2f}x, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
                     for n, r in rows],
              [s["median"] for s in stats], ["#4c72b0", "#dd8452", "#55a868", "#c44e52"],
              "images/s (median; whiskers min-max)",
              f"yoloworld-serve, YOLO-World v2 S 640, {report['cpu_count']} CPUs: {report['cpu']}",
              xerr=[[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]])


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for name in ("fastapi", "uvicorn", "starlette", "onnxruntime", "openvino"):
        try:
            out[name] = version(name)
        except Exception:
            continue
    return out


if __name__ == "__main__":
    main()
