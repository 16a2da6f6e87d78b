"""End to end on one photo, this project against Ultralytics' YOLO-World ONNX ``predict()`` -> JSON + PNG.

Both sides run YOLO-World v2 S at 640 with 80 classes, random weights (the time does not depend on
them; no download): ours built and calibrated as in ``bench_onnx_precision.py`` and exported by
``export_artifact`` (fp32 and int8 Q/DQ, dynamic height and width, the defaults); Ultralytics'
``yolov8s-worldv2.yaml`` with ``set_classes`` (its CLIP replaced by the stand-in that
``finetune_vs_ultralytics.py`` writes) exported by its own ``export(format="onnx")``, square
(``dynamic=False``) and dynamic (``dynamic=True``, which its predictor letterboxes minimally, "rect").

Each configuration is a worker process (2 threads, ``OMP_NUM_THREADS=2``) that times
``predict(path)`` on the photo file: read, letterbox, inference, post-processing, results. The
controller runs them in alternating blocks (every worker one block per round), so a busy machine slows
all alike. The photo: a 1280x720 generated one (shapes on a textured background), or ``--image``.

    python benchmarks/e2e_vs_ultralytics.py --peer-venv /path/to/venv-with-ultralytics
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

THREADS = 2
# name -> (artifact, backend, OpenVINO precision, rect); "int8" is the symmetric Q/DQ export
OURS = {"ours openvino bf16 rect": ("fp32", "openvino", "bf16", True),
        "ours openvino int8 rect": ("int8", "openvino", None, True),
        "ours openvino bf16 square": ("fp32", "openvino", "bf16", False),
        "ours openvino fp32 rect": ("fp32", "openvino", "fp32", True),
        "ours onnxruntime fp32 rect": ("fp32", "onnxruntime", None, True),
        "ours onnxruntime fp32 square": ("fp32", "onnxruntime", None, False)}
PEER = {"ultralytics square": "square", "ultralytics dynamic (rect)": "dynamic"}

PEER_EXPORT = '''import sys
from ultralytics import YOLOWorld
model = YOLOWorld("yolov8s-worldv2.yaml")
model.set_classes([f"class {i}" for i in range(80)])
print(model.export(format="onnx", imgsz=640, dynamic=sys.argv[1] == "dynamic", simplify=True))
'''

PEER_WORKER = '''import json, sys, time
from ultralytics import YOLO
model = YOLO(sys.argv[1], task="detect")
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t = time.perf_counter()
        result = model.predict(sys.argv[2], imgsz=640, conf=0.25, verbose=False)[0]
        times.append((time.perf_counter() - t) * 1e3)
    print("@@" + json.dumps({"ms": times, "detections": len(result.boxes)}), flush=True)
'''


def worker_ours(path: str, backend: str, precision: str, rect: str, photo: str) -> None:
    """``--worker``: time ``Detector.predict(photo)`` per block size read from stdin (JSON lines out)."""
    from sdk import Detector, RuntimeOptions

    det = Detector(path, backend=backend, rect=rect == "1", conf=0.25,
                   runtime=RuntimeOptions(intra_op_threads=THREADS, precision=precision or None))
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t = time.perf_counter()
            (result,) = det.predict(photo)
            times.append((time.perf_counter() - t) * 1e3)
        reply = {"ms": times, "detections": len(result), "ran": [det.backend.name, det.backend.precision],
                 "speed_ms": result.data["speed_ms"]}
        print("@@" + json.dumps(reply), flush=True)


def make_photo(path: Path) -> None:
    import cv2

    from benchmarks.common import synthetic_bgr

    img = cv2.resize(synthetic_bgr(1, 3, 720)[0], (1280, 720), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def export_ours(work: Path) -> dict[str, Path]:
    """fp32 and int8 (symmetric Q/DQ, calibrated on 32 generated images) exports of the random S model."""
    import cv2

    from benchmarks.bench_onnx_precision import build
    from benchmarks.common import synthetic_bgr
    from export.pipeline import ExportOptions, export_artifact

    model, vocab, emb = build(640)
    calib = work / "calib"
    calib.mkdir(exist_ok=True)
    for i, img in enumerate(synthetic_bgr(32, 11, 640)):
        cv2.imwrite(str(calib / f"{i:02d}.jpg"), img)
    paths = {"fp32": work / "s_fp32.onnx", "int8": work / "s_int8.onnx"}
    export_artifact(model, vocab, paths["fp32"], ExportOptions(imgsz=640), emb, log=lambda *_: None)
    export_artifact(model, vocab, paths["int8"], ExportOptions(imgsz=640, precision="int8", calib_images=str(calib)),
                    emb, log=lambda *_: None)
    return paths


def export_peer(python: Path, work: Path) -> dict[str, Path]:
    out = {}
    for kind in ("square", "dynamic"):
        folder = work / f"peer_{kind}"
        folder.mkdir(exist_ok=True)
        text = subprocess.run([str(python), "-c", PEER_EXPORT, kind], cwd=folder, capture_output=True, text=True,
                              check=True).stdout
        out[kind] = Path(text.strip().splitlines()[-1])
        if not out[kind].is_absolute():
            out[kind] = folder / out[kind]
    return out


def start_workers(ours: dict[str, Path], peer: dict[str, Path], peer_python: Path, photo: Path
                  ) -> dict[str, subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    workers = {}
    for name, (artifact, backend, precision, rect) in OURS.items():
        cmd = [sys.executable, __file__, "--worker", str(ours[artifact]), backend, precision or "", str(int(rect)),
               str(photo)]
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for name, kind in PEER.items():
        cmd = [str(peer_python), "-c", PEER_WORKER, str(peer[kind]), str(photo)]
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return workers


def ask(worker: subprocess.Popen, n: int) -> dict[str, Any]:
    worker.stdin.write(f"{n}\n")
    worker.stdin.flush()
    while True:  # a runtime may print its own lines: the reply is the one marked "@@"
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker died (exit code {worker.wait()})")
        if line.startswith("@@"):
            return json.loads(line[2:])


def measure(workers: dict[str, subprocess.Popen], warmup: int, blocks: int, per_block: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, w in workers.items():
        out[name] = {**ask(w, warmup), "ms": []}
    for _ in range(blocks):
        for name, w in workers.items():
            reply = ask(w, per_block)
            out[name]["ms"] += reply["ms"]
    for r in out.values():
        ms = r.pop("ms")
        r.update({"min_ms": min(ms), "median_ms": statistics.median(ms), "max_ms": max(ms), "runs": len(ms)})
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    rows = sorted(report["results"].items(), key=lambda kv: kv[1]["median_ms"])
    save_barh(path, [n for n, _ in rows], [r["median_ms"] for _, r in rows],
              ["#4c72b0" if n.startswith("ours") else "#c44e52" for n, _ in rows],
              "ms per photo, predict(path) end to end; median, whiskers min-max",
              f"YOLO-World v2 S, 640, 80 classes, 1280x720 photo, {THREADS} threads: {report['cpu']}",
              xerr=[[r["median_ms"] - r["min_ms"] for _, r in rows], [r["max_ms"] - r["median_ms"] for _, r in rows]])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_ours(*sys.argv[2:7])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-venv", type=Path, required=True, help="a venv with ultralytics (outside this repo)")
    p.add_argument("--image", type=Path, help="the photo (default: a generated 1280x720 one)")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--per-block", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "e2e_vs_ultralytics.json")
    args = p.parse_args()
    from benchmarks.finetune_vs_ultralytics import prepare_peer

    peer_python = prepare_peer(args.peer_venv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = args.image or work / "photo.jpg"
        if not args.image:
            make_photo(photo)
        ours, peer = export_ours(work), export_peer(peer_python, work)
        workers = start_workers(ours, peer, peer_python, photo)
        try:
            results = measure(workers, args.warmup, args.blocks, args.per_block)
        finally:
            for w in workers.values():
                w.stdin.close()
                w.wait(timeout=60)
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "cpu": cpu_name(), "threads": THREADS,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "photo": args.image.name if args.image else "generated 1280x720 (bench.cli.synthetic_bgr, seed 3)",
              "settings": {"blocks": args.blocks, "per_block": args.per_block, "warmup": args.warmup, "conf": 0.25},
              "versions": versions(peer_python), "results": results}
    best = min((r["median_ms"], n) for n, r in results.items() if n.startswith("ours"))
    report["speedup"] = {f"{best[1]} vs {n}": results[n]["median_ms"] / best[0] for n in PEER}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({n: round(r["median_ms"], 1) for n, r in results.items()}, indent=1))
    print(json.dumps(report["speedup"], indent=1))


def versions(peer_python: Path) -> dict[str, str]:
    import onnxruntime
    import openvino

    peer = subprocess.run([str(peer_python), "-c", "import ultralytics; print(ultralytics.__version__)"],
                          capture_output=True, text=True).stdout.strip()
    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__, "ultralytics": peer}


if __name__ == "__main__":
    main()
