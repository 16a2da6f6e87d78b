"""Labeling throughput: images/s of ``yoloworld-label``'s engine in this process and on Ray Data (local,
this machine's CPUs) with 1 and 2 actors, and the per-image overhead Ray adds at equal parallelism.

Setup: the random calibrated YOLO-World v2 S at 640 with 80 classes, exported to ONNX (fp32, dynamic
height and width), run as a user gets it (``Detector``'s default backend, precision and letterbox: square
since issue 23, rect when the recorded results were measured);
generated JPEGs in four camera sizes (640x480, 1280x720, 480x640, 1024x1024); batch size 8; results parsed
into records as the CLI writes them (shard writing and merging excluded: the same code for every
configuration). Each run is its own process; configurations alternate, after a warm-up run that fills a
private OpenVINO compiled-model cache (a rect letterbox compiles one static model per input shape, once).
images/s is measured as (N_large - N_small) / (T_large - T_small) over a run of N_small and one of
N_large images (T from process work start to the last result), so start-up (model loads, Ray and its
actors) cancels out; it is reported apart as ``startup_s``. Overhead = 1 - Ray 1 actor's images/s /
in-process's, at the same thread count.

    python benchmarks/label_throughput.py [--images 400] [--small 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, save_barh  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

CPUS = os.cpu_count() or 2
# name -> (engine, actors, threads per worker)
CONFIGS = {"in-process": ("local", 0, CPUS), "Ray, 1 actor": ("ray", 1, CPUS), "Ray, 2 actors": ("ray", 2, 1)}


def worker(model: str, images: str, engine: str, actors: int, threads: int) -> None:
    """One measured run over ``images`` (a folder or a manifest); prints a JSON line."""
    from labeling.engine import in_process_batches, plan_actors, ray_batches
    from labeling.sources import list_sources
    from labeling.worker import LabelSettings
    from sdk import RuntimeOptions
    from sdk.settings import DetectorSettings

    t0 = time.perf_counter()  # from the start of the work: Ray's start-up and the model loads count
    todo = list_sources([images])
    settings = LabelSettings(model, detector=DetectorSettings(runtime=RuntimeOptions(intra_op_threads=threads)),
                             batch_size=8)
    if engine == "ray":
        import ray

        ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False, configure_logging=False)
        plan = plan_actors(ray.cluster_resources(), [n["Resources"] for n in ray.nodes()], actors, threads=threads)
        batches = ray_batches(todo, settings, plan)
    else:
        batches, plan = in_process_batches(todo, settings), None
    done = sum(len(records) for records in batches)
    print(json.dumps({"images": done, "total_s": time.perf_counter() - t0,
                      "plan": plan.describe() if plan else f"{threads} threads"}))


def make_inputs(work: Path, count: int, small: int) -> tuple[Path, Path, Path]:
    """The S export, ``count`` JPEGs in the sizes cameras give (640x480, 1280x720, portrait, square), and
    a manifest of the first ``small`` of them."""
    import cv2

    from benchmarks.bench_onnx_precision import build
    from benchmarks.common import synthetic_bgr
    from export.pipeline import ExportOptions, export_artifact

    images = work / "images"
    images.mkdir()
    sizes = [(640, 480), (1280, 720), (480, 640), (1024, 1024)]
    for i, img in enumerate(synthetic_bgr(count, 5, 640)):
        cv2.imwrite(str(images / f"{i:04d}.jpg"), cv2.resize(img, sizes[i % len(sizes)]),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
    subset = work / "small.txt"
    subset.write_text("".join(f"images/{i:04d}.jpg\n" for i in range(small)))
    model, vocab, emb = build(640)
    path = work / "s_fp32.onnx"
    export_artifact(model, vocab, path, ExportOptions(imgsz=640), emb, log=lambda *_: None)
    return path, images, subset


def measure(model: Path, large: Path, small: Path, repeats: int) -> dict[str, Any]:
    """Per configuration and repeat, a run over the small and over the large set: the difference in time
    over the difference in images is the cost of an image once everything runs (start-up cancels out).
    Configurations alternate, after one unmeasured run that fills the (private) OpenVINO compiled-model
    cache, so that every configuration finds it as warm."""
    def run(name: str, images: Path) -> dict[str, Any]:
        engine, actors, threads = CONFIGS[name]
        out = subprocess.run([sys.executable, __file__, "--worker", str(model), str(images), engine, str(actors),
                              str(threads)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    run("in-process", large)  # the warm-up
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for r in range(repeats):
        for name in CONFIGS:
            a, b = run(name, small), run(name, large)
            rate = (b["images"] - a["images"]) / (b["total_s"] - a["total_s"])
            runs[name].append({"small": a, "large": b, "images_per_s": rate,
                               "startup_s": b["total_s"] - b["images"] / rate})
            print(f"repeat {r + 1}: {name}: {rate:.2f} images/s, start-up {runs[name][-1]['startup_s']:.1f} s",
                  flush=True)
    results = {}
    for name, rs in runs.items():
        rates = [x["images_per_s"] for x in rs]
        whole = [x["large"]["images"] / x["large"]["total_s"] for x in rs]
        results[name] = {"plan": rs[0]["large"]["plan"], "images_per_s": _stats(rates),
                         "whole_run_images_per_s": _stats(whole),
                         "startup_s": statistics.median(x["startup_s"] for x in rs), "runs": rs}
    return results


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--small", type=int, default=40, help="images of the short run (start-up cancels out)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_throughput.json")
    p.add_argument("--replot", action="store_true", help="redraw the plot of an existing --out")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["YOLOWORLD_CACHE_DIR"] = str(Path(tmp) / "cache")  # the workers inherit it
        model, images, subset = make_inputs(Path(tmp), args.images, args.small)
        results = measure(model, images, subset, args.repeats)
    base = results["in-process"]["images_per_s"]["median"]
    one = results["Ray, 1 actor"]["images_per_s"]["median"]
    import ray

    from sdk.backends.openvino import native_bf16, shared_core

    precision = "bf16" if native_bf16(shared_core()) else "fp32"
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "cpu": cpu_name(), "cpu_count": CPUS,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "versions": {"ray": ray.__version__, **_runtime_versions()},
              "settings": {"images": args.images, "small": args.small, "repeats": args.repeats, "batch_size": 8,
                           "imgsz": 640, "backend": f"Detector default (OpenVINO {precision})"},
              "results": results, "ray_overhead_per_image": 1 - one / base}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({n: round(r["images_per_s"]["median"], 2) for n, r in results.items()}, indent=1))
    print(f"Ray overhead per image at equal parallelism: {report['ray_overhead_per_image']:.1%}")


def plot(report: dict[str, Any], path: Path) -> None:
    rows = list(report["results"].items())
    stats = [r["images_per_s"] for _, r in rows]
    save_barh(path, [f"{n} ({r['plan'].split(', ', 1)[-1] if n != 'in-process' else r['plan']})" for n, r in rows],
              [s["median"] for s in stats], ["#4c72b0", "#dd8452", "#55a868"],
              "images/s, start-up excluded (median; whiskers min-max)",
              f"yoloworld-label, YOLO-World v2 S 640, {report['cpu_count']} CPUs: {report['cpu']}",
              xerr=[[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]])


def _runtime_versions() -> dict[str, str]:
    import onnxruntime
    import openvino

    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


if __name__ == "__main__":
    main()
