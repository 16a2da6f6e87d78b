"""``yoloworld-bench``: latency and throughput of exported models (and checkpoints) on every backend.

For each model and batch size, two measurements after warm-up, each with min / median / max:

- model: ``backend.infer`` on a preprocessed batch (what the runtime alone costs);
- end to end: ``Detector.predict`` from image files on disk to ``Detections`` (read + letterbox,
  inference, post-processing), with each stage's share from the per-result timings.

Writes JSON (device, versions, settings, rows), a markdown table beside it and, where matplotlib is
installed, a plot. Images: a folder of the user's (``--images``), else synthetic JPEGs of varied sizes.
Torch-free unless a checkpoint is benchmarked.

    yoloworld-bench m_fp32.onnx m_int8.onnx --batch 1 8 --out bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sdk.atomic import atomic_path, atomic_write_text, check_can_create
from sdk.backends.base import RuntimeOptions
from sdk.cli import IMGSZ_HELP, plain
from sdk.detector import Detector
from sdk.images import expand_sources, load
from sdk.preprocess import preprocess
from sdk.settings import BACKENDS, BackendName, DetectorSettings

STAGES = ("preprocess", "inference", "postprocess")


def synthetic_bgr(count: int, seed: int, imgsz: int) -> list[np.ndarray]:
    """Shapes on a blurred textured background, varied sizes and aspect ratios (BGR uint8)."""
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(count):
        h, w = int(imgsz * rs.uniform(0.5, 1.3)), int(imgsz * rs.uniform(0.5, 1.3))
        img = cv2.GaussianBlur(rs.randint(40, 220, (h, w, 3)).astype(np.uint8), (15, 15), 0)
        for _ in range(rs.randint(3, 9)):
            c = tuple(int(v) for v in rs.randint(0, 255, 3))
            x, y, r = int(rs.randint(0, w)), int(rs.randint(0, h)), int(rs.randint(10, max(11, min(h, w) // 4)))
            if rs.rand() < 0.5:
                cv2.circle(img, (x, y), r, c, -1)
            else:
                cv2.rectangle(img, (x, y), (x + r, y + int(r * rs.uniform(0.5, 2))), c, -1)
        out.append(img)
    return out


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """min / median / max of durations in seconds, as milliseconds."""
    ms = [s * 1e3 for s in seconds]
    return {"min": min(ms), "median": statistics.median(ms), "max": max(ms)}


def timed(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_model(detector: Detector, files: list[str], batch: int, warmup: int, repeats: int) -> dict[str, Any]:
    """One (model, batch) row: model-only and end-to-end timings."""
    images = [load(f, i)[0] for i, f in enumerate(files[:batch])]
    images += images[:1] * (batch - len(images))  # fewer files than the batch: repeat one
    x, _ = preprocess(images, detector.imgsz, rect=detector.rect)
    # at least two warm-up passes: OpenVINO compiles a static model for a shape on its second use
    warmup = max(warmup, 2) if detector.backend.name == "openvino" else warmup
    model = stats_ms(timed(lambda: detector.backend.infer(x), warmup, repeats))
    walls: list[float] = []
    stages: dict[str, list[float]] = {k: [] for k in STAGES}

    def predict() -> list:
        return detector.predict(files, batch_size=batch)

    for _ in range(warmup):
        predict()
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = predict()
        walls.append((time.perf_counter() - t0) / len(files))
        for k in STAGES:
            stages[k].append(statistics.mean(r.data["speed_ms"][k] for r in results))
    stage_ms = {k: statistics.median(v) for k, v in stages.items()}
    total = sum(stage_ms.values()) or 1.0
    e2e = stats_ms(walls)
    return {"batch": batch, "model_ms": model, "model_images_per_s": batch / model["median"] * 1e3,
            "e2e_ms_per_image": e2e, "e2e_images_per_s": 1e3 / e2e["median"],
            "stage_ms_per_image": stage_ms, "stage_share": {k: v / total for k, v in stage_ms.items()}}


def describe(detector: Detector, path: str) -> dict[str, Any]:
    backend = detector.backend
    info = {"model": Path(path).name, "backend": backend.name, "imgsz": detector.imgsz,
            "classes": len(detector.class_names),
            "precision": backend.precision if backend.manifest else f"{backend.precision} (checkpoint)",
            "letterbox": "rect" if detector.rect else "square",
            "output_form": backend.output_form if backend.manifest else "raw heads"}
    if hasattr(backend, "providers"):
        info["providers"] = backend.providers
    if backend.name == "tensorrt":
        info["profile_batch"] = [getattr(backend, "min_batch", None), getattr(backend, "max_batch", None)]
    return info


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: str) -> dict[str, Any]:
    """Machine and library versions (of the runtimes this process has imported)."""
    env: dict[str, Any] = {"device": device, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
                           "platform": platform.platform(), "python": platform.python_version(),
                           "numpy": np.__version__, "opencv": cv2.__version__}
    for name in ("onnxruntime", "openvino", "tensorrt", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = getattr(module, "__version__", "?")
    if device.startswith("cuda"):
        from sdk.backends.trt_env import current_gpu

        try:
            env["gpu"] = current_gpu(int(device.partition(":")[2] or 0)).name
        except Exception as e:  # the report still says which device was asked for
            env["gpu"] = f"unknown ({e})"
    return env


def markdown(report: dict[str, Any]) -> str:
    lines = ["| model | backend | precision | letterbox | batch | model ms (min/med/max) | model img/s | e2e ms/img "
             "| e2e img/s | read+letterbox / inference / post |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["results"]:
        m, sh = r["model_ms"], r["stage_share"]
        lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r.get('letterbox', 'square')} | "
                     f"{r['batch']} | "
                     f"{m['min']:.1f} / {m['median']:.1f} / {m['max']:.1f} | {r['model_images_per_s']:.1f} | "
                     f"{r['e2e_ms_per_image']['median']:.1f} | {r['e2e_images_per_s']:.1f} | "
                     + " / ".join(f"{sh[k]:.0%}" for k in STAGES) + " |")
    return "\n".join(lines) + "\n"


def row_label(row: dict[str, Any]) -> str:
    """``model backend precision letterbox bN``: what tells two rows of one report apart."""
    parts = (row["model"], row["backend"], row["precision"].split()[0], row.get("letterbox"), f"b{row['batch']}")
    return " ".join(p for p in parts if p)


def plot(report: dict[str, Any], path: Path) -> bool:
    """Per-image time by stage for every row (horizontal stacked bars); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report["results"]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))  # positions, not labels: equal labels must not share one bar
    left = np.zeros(len(rows))
    for k, c in zip(STAGES, ("#55a868", "#4c72b0", "#c44e52"), strict=True):
        vals = np.array([r["stage_ms_per_image"][k] for r in rows])
        ax.barh(y, vals, left=left, color=c, label=k)
        left += vals
    ax.set_yticks(y, [row_label(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per image, end to end (file -> Detections)")
    env = report["environment"]
    ax.set_title(f"yoloworld-bench, {env['device']}: {env.get('gpu') or env.get('cpu')}", fontsize=9)
    ax.legend(fontsize=8, ncol=len(STAGES), loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``out`` (JSON), ``out.md`` and ``out.png``, each written atomically; returns what was written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in ((out, json.dumps(report, indent=1)), (out.with_suffix(".md"), markdown(report))):
        written.append(atomic_write_text(path, text))
    if plot(report, out.with_suffix(".png")):
        written.append(out.with_suffix(".png"))
    return written


def image_files(images: str | None, count: int, imgsz: int, tmp: Path) -> list[str]:
    """The user's images (first ``count``), else ``count`` synthetic JPEGs written to ``tmp``."""
    if images:
        files = expand_sources(images)[:count]
        if not files:
            raise SystemExit(f"yoloworld-bench: no images in {images}")
        return [str(f) for f in files]
    written = []
    for i, img in enumerate(synthetic_bgr(count, 7, imgsz)):
        written.append(str(tmp / f"{i:03d}.jpg"))
        cv2.imwrite(written[-1], img)
    return written


def variants(path: str, device: str, backends: Sequence[BackendName | None], precisions: Sequence[str | None],
             letterboxes: Sequence[str]) -> list[dict[str, Any]]:
    """The ``Detector`` settings one model is measured under: every backend (None: the automatic one) x
    OpenVINO precision (other backends: their own) x letterbox (``rect`` for dynamic-shape exports only)."""
    from sdk.detector import default_backend

    out = []
    for backend in backends:
        chosen = backend or default_backend(path, device)
        for precision in precisions if chosen == "openvino" else [None]:
            for letterbox in letterboxes:
                out.append({"backend": backend, "precision": precision, "rect": letterbox == "rect"})
    return out


def run(models: Sequence[str], batches: Sequence[int] = (1, 8), device: str = "cpu", images: str | None = None,
        count: int = 16, warmup: int = 1, repeats: int = 3, classes: str | None = None, imgsz: int | None = None,
        runtime: RuntimeOptions | None = None, log: Callable[[str], Any] = print,
        backends: Sequence[BackendName | None] = (None,), precisions: Sequence[str | None] = (None,),
        letterboxes: Sequence[str] = ("auto",)) -> dict[str, Any]:
    """Benchmark every model at every batch size under every :func:`variants` setting; returns the report
    (see the module docstring). ``imgsz`` None: each model's own size."""
    rows = []
    runtime = runtime or RuntimeOptions()
    with tempfile.TemporaryDirectory() as tmp:
        for path in models:
            for v in variants(path, device, backends, precisions, letterboxes):
                options = dataclasses.replace(runtime, precision=v["precision"])
                rect = None if letterboxes == ("auto",) else v["rect"]
                try:
                    det = Detector.from_settings(path, classes, DetectorSettings(
                        device=device, imgsz=imgsz, backend=v["backend"], rect=rect, runtime=options))
                except ValueError as e:  # e.g. rect on a static-shape export: said, not measured
                    log(f"{Path(path).name}: skipped {v}: {e}")
                    continue
                files = image_files(images, count, det.imgsz, Path(tmp))
                info = describe(det, path)
                for b in batches:
                    row = {**info, **bench_model(det, files, b, warmup, repeats), "images": len(files)}
                    log(f"{info['model']} ({info['backend']}, {info['precision']}, {info['letterbox']}) batch {b}: "
                        f"model {row['model_ms']['median']:.1f} ms ({row['model_images_per_s']:.1f} img/s), end to "
                        f"end {row['e2e_images_per_s']:.1f} img/s")
                    rows.append(row)
                det.backend.close()
    return {"what": "model: backend.infer on a preprocessed batch; e2e: Detector.predict from image files "
                    "to Detections, per image", "environment": environment(device),
            "settings": {"batches": list(batches), "warmup": warmup, "repeats": repeats, "images": count,
                         "image_source": images or "synthetic JPEGs (bench.cli.synthetic_bgr, seed 7)",
                         "conf": 0.25, "runtime": dataclasses.asdict(runtime)},
            "date": time.strftime("%Y-%m-%d %H:%M"), "results": rows}


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yoloworld-bench", description=plain(__doc__.splitlines()[0]))
    p.add_argument("models", nargs="+", help="exported .onnx / .engine, or a checkpoint (.pt/.pth, needs torch)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes, one row each (default 1 8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--images", help="an image folder (default: synthetic JPEGs)")
    p.add_argument("--count", type=int, default=16, help="images per end-to-end pass")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes before the timed ones (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; min / median / max over them (default 3)")
    p.add_argument("--classes", help="checkpoints only: class names or a class-text JSON")
    p.add_argument("--imgsz", type=int, default=None, help=IMGSZ_HELP)
    p.add_argument("--backend", nargs="+", default=[None], choices=BACKENDS,
                   help="one row set per backend (default: the automatic choice)")
    p.add_argument("--precision", nargs="+", default=[None], choices=("fp32", "bf16", "fp16"),
                   help="OpenVINO: one row set per compute precision (default: bf16 where native, else fp32)")
    p.add_argument("--letterbox", nargs="+", default=["auto"], choices=("auto", "rect", "square"),
                   help="rect / square rows (default: the model's own; rect needs a dynamic-shape export)")
    p.add_argument("--mode", choices=("latency", "throughput"), default="latency", help="OpenVINO performance mode")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op / OpenVINO inference / PyTorch threads")
    p.add_argument("--io-binding", action="store_true", help="ONNX Runtime IO binding (default: on GPU)")
    p.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay CUDA graphs")
    p.add_argument("--half", action="store_true", help="checkpoints: float16 PyTorch (CUDA)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON; .md and .png beside it")
    return p


def main(argv: list[str] | None = None) -> int:
    p = bench_parser()
    args = p.parse_args(argv)
    if min(args.batch) < 1 or args.repeats < 1 or args.warmup < 0 or args.count < 1:
        p.error("--batch, --repeats and --count must be >= 1 and --warmup >= 0")
    runtime = RuntimeOptions(intra_op_threads=args.threads, io_binding=True if args.io_binding else None,
                             cuda_graphs=args.cuda_graphs, half=args.half, performance=args.mode)
    try:
        check_can_create(args.out.parent)  # before the measurements, not after
    except OSError as e:
        p.error(str(e))
    report = run(args.models, args.batch, args.device, args.images, args.count, args.warmup, args.repeats,
                 args.classes, args.imgsz, runtime, backends=args.backend, precisions=args.precision,
                 letterboxes=tuple(args.letterbox))
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in write_report(report, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
