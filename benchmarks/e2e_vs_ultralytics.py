"""End to end on one photo, this project against Ultralytics YOLO-World's ONNX and OpenVINO ``predict()`` -> JSON + PNG.

Both sides run YOLO-World v2 S at 640 with 80 classes, random weights (the time does not depend on
them; no download): ours built and calibrated as in ``bench_onnx_precision.py`` and exported by
``export_artifact`` (fp32; the default int8; the same with its Conv outputs quantized too, the default until
the conv outputs stayed float; the int8 before issue 23; dynamic height and width, the defaults);
Ultralytics' ``yolov8s-worldv2.yaml`` with ``set_classes`` (its CLIP replaced by the stand-in
that ``finetune_vs_ultralytics.py`` writes) exported by its own ``export()`` to ONNX and to OpenVINO,
static (square) and dynamic (which its predictor letterboxes minimally, "rect"). Equal work: the peer's
class bias (default -10: no detections) is set so that as many anchors score above conf 0.25 on the photo
as on ours, so both sides post-process real candidates (NMS, up to 300 detections).

Each configuration is a worker process (2 threads, ``OMP_NUM_THREADS=2``) that times
``predict(path)`` on the photo file: read, letterbox, inference, post-processing, results. The
controller runs them in alternating blocks (every worker one block per round), so a busy machine slows
all alike, and starts timing once the 1-minute load average is below 1 (recorded). The photo: a 1280x720
generated one (shapes on a textured background), or ``--image``.

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
QUIET_LOAD = 1.0  # timings start once the 1-minute load average is below this (a shared machine)
# name -> (artifact, backend, OpenVINO precision, rect); None: Detector's default. "int8": the default int8
# export (uint8 activations, the convolutions' inputs only, stem / head outputs / decode tail float); "int8 conv
# outputs": the same with a Q/DQ pair on every Conv output too (ONNX Runtime's placement, the default until the
# conv outputs stayed float); "int8 before": the one before issue 23 (symmetric int8 activations, every op type
# and output quantized, only the decode tail float)
OURS = {"ours default (openvino bf16 square)": ("fp32", None, None, None),
        "ours openvino bf16 rect": ("fp32", "openvino", "bf16", True),
        "ours openvino int8 rect": ("int8", "openvino", None, True),
        "ours openvino int8 square": ("int8", "openvino", None, False),
        "ours openvino int8 rect (conv outputs quantized)": ("int8 conv outputs", "openvino", None, True),
        "ours openvino int8 rect (before)": ("int8 before", "openvino", None, True),
        "ours onnxruntime fp32 square": ("fp32", "onnxruntime", None, False)}
# name -> (export format, dynamic); Ultralytics letterboxes dynamic exports minimally ("rect")
PEER = {"ultralytics onnx square": ("onnx", False), "ultralytics onnx dynamic (rect)": ("onnx", True),
        "ultralytics openvino static": ("openvino", False), "ultralytics openvino dynamic (rect)": ("openvino", True)}

# The peer's class bias is set so that as many anchors score above 0.25 on the photo as on our side
# (its default -10 emits nothing, which would leave its NMS idle): both sides post-process real work.
PEER_EXPORT = '''import math, sys
import cv2, numpy as np, torch
from ultralytics import YOLOWorld
fmt, dynamic, photo, target = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4])
model = YOLOWorld("yolov8s-worldv2.yaml")
model.set_classes([f"class {i}" for i in range(80)])
heads = model.model.model[-1].cv4
for h in heads:
    h.bias.data.fill_(0.0)
img = cv2.imread(photo)
r = 640 / max(img.shape[:2])
img = cv2.resize(img, (round(img.shape[1] * r), round(img.shape[0] * r)))
canvas = np.full((640, 640, 3), 114, np.uint8)
top, left = (640 - img.shape[0]) // 2, (640 - img.shape[1]) // 2
canvas[top:top + img.shape[0], left:left + img.shape[1]] = img
x = torch.from_numpy(canvas[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255
with torch.no_grad():
    out = model.model.eval()(x)
out = out[0] if isinstance(out, (tuple, list)) else out
best = out[0, 4:].max(0).values.double().clamp(1e-12, 1 - 1e-12)
logits = torch.sort(torch.log(best / (1 - best)), descending=True).values
bias = math.log(0.25 / 0.75) - float(logits[max(target - 1, 0)]) + 1e-4
for h in heads:
    h.bias.data.fill_(bias)
kw = {"half": False} if fmt == "openvino" else {"simplify": True}
print(model.export(format=fmt, imgsz=640, dynamic=dynamic, **kw))
'''

PEER_WORKER = '''import json, sys, time
import cv2
from ultralytics import YOLO
model = YOLO(sys.argv[1], task="detect")
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t = time.perf_counter()
        result = model.predict(sys.argv[2], imgsz=640, conf=0.25, verbose=False)[0]
        times.append((time.perf_counter() - t) * 1e3)
    shape = list(model.predictor.preprocess([cv2.imread(sys.argv[2])]).shape[2:])
    print("@@" + json.dumps({"ms": times, "detections": len(result.boxes), "input_hw": shape}), flush=True)
'''


def worker_ours(path: str, backend: str, precision: str, rect: str, photo: str) -> None:
    """``--worker``: time ``Detector.predict(photo)`` per block size read from stdin (JSON lines out)."""
    from sdk import Detector, RuntimeOptions

    det = Detector(path, backend=backend or None, rect={"1": True, "0": False}.get(rect), conf=0.25,
                   runtime=RuntimeOptions(intra_op_threads=THREADS, precision=precision or None))
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t = time.perf_counter()
            (result,) = det.predict(photo)
            times.append((time.perf_counter() - t) * 1e3)
        reply = {"ms": times, "detections": len(result),
                 "ran": [det.backend.name, det.backend.precision, "rect" if det.rect else "square"],
                 "speed_ms": result.data["speed_ms"]}
        print("@@" + json.dumps(reply), flush=True)


def make_photo(path: Path) -> None:
    import cv2

    from benchmarks.common import synthetic_bgr

    img = cv2.resize(synthetic_bgr(1, 3, 720)[0], (1280, 720), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def export_ours(work: Path) -> dict[str, Path]:
    """fp32 and int8 (Q/DQ, calibrated on 32 generated images: the default int8, the same with its Conv outputs
    quantized too, and the one before issue 23: symmetric int8 activations, every op type and output
    quantized, only the decode tail float) exports of the random S model."""
    import cv2

    from benchmarks.bench_onnx_precision import build
    from benchmarks.common import synthetic_bgr
    from export.pipeline import ExportOptions, export_artifact
    from export.precision import DECODE_TAIL

    model, vocab, emb = build(640)
    calib = work / "calib"
    calib.mkdir(exist_ok=True)
    for i, img in enumerate(synthetic_bgr(32, 11, 640)):
        cv2.imwrite(str(calib / f"{i:02d}.jpg"), img)
    paths = {"fp32": work / "s_fp32.onnx", "int8": work / "s_int8.onnx",
             "int8 conv outputs": work / "s_int8_conv_outputs.onnx", "int8 before": work / "s_int8_before.onnx"}
    export_artifact(model, vocab, paths["fp32"], ExportOptions(imgsz=640), emb, log=lambda *_: None)
    before = {"int8_keep_float": (DECODE_TAIL,), "int8_activations": "int8", "int8_op_types": None,
              "int8_float_outputs": ()}
    for name, kw in (("int8", {}), ("int8 conv outputs", {"int8_float_outputs": ()}), ("int8 before", before)):
        options = ExportOptions(imgsz=640, precision="int8", calib_images=str(calib), **kw)
        export_artifact(model, vocab, paths[name], options, emb, log=lambda *_: None)
    return paths


def candidates(fp32: Path, photo: Path, conf: float = 0.25) -> int:
    """Anchors of our fp32 export whose best class scores at least ``conf`` on the square-letterboxed photo."""
    import cv2

    from sdk import Detector
    from sdk.preprocess import preprocess

    det = Detector(fp32, backend="onnxruntime", rect=False)
    x, _ = preprocess([cv2.imread(str(photo))], 640)
    scores = det.backend.infer(x)["scores"]  # (1, A, C)
    return int((scores[0].max(-1) >= conf).sum())


def export_peer(python: Path, work: Path, photo: Path, target: int) -> dict[str, Path]:
    out = {}
    for name, (fmt, dynamic) in PEER.items():
        folder = work / f"peer_{fmt}_{int(dynamic)}"
        folder.mkdir(exist_ok=True)
        text = subprocess.run([str(python), "-c", PEER_EXPORT, fmt, str(int(dynamic)), str(photo), str(target)],
                              cwd=folder, capture_output=True, text=True, check=True).stdout
        out[name] = Path(text.strip().splitlines()[-1])
        if not out[name].is_absolute():
            out[name] = folder / out[name]
    return out


def start_workers(ours: dict[str, Path], peer: dict[str, Path], peer_python: Path, photo: Path
                  ) -> dict[str, subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": str(ROOT)}
    workers = {}
    for name, (artifact, backend, precision, rect) in OURS.items():
        cmd = [sys.executable, __file__, "--worker", str(ours[artifact]), backend or "", precision or "",
               "" if rect is None else str(int(rect)), str(photo)]
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for name in PEER:
        cmd = [str(peer_python), "-c", PEER_WORKER, str(peer[name]), str(photo)]
        workers[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return workers


def wait_for_quiet(limit_s: float = 900.0) -> float:
    """The 1-minute load average once it is below QUIET_LOAD, or after ``limit_s`` (recorded either way)."""
    end = time.monotonic() + limit_s
    while os.getloadavg()[0] >= QUIET_LOAD and time.monotonic() < end:
        time.sleep(15)
    return os.getloadavg()[0]


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


def run_workers(workers: dict[str, subprocess.Popen], warmup: int, blocks: int, per_block: int
                ) -> tuple[dict[str, Any], dict[str, float]]:
    """:func:`measure` once the machine is quiet, then the workers closed: (results, 1-minute load average
    before and after)."""
    try:
        load = {"before": wait_for_quiet()}
        results = measure(workers, warmup, blocks, per_block)
        load["after"] = os.getloadavg()[0]
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait(timeout=60)
    return results, load


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
        ours = export_ours(work)
        target = candidates(ours["fp32"], photo)
        peer = export_peer(peer_python, work, photo, target)
        results, load = run_workers(start_workers(ours, peer, peer_python, photo), args.warmup, args.blocks,
                                    args.per_block)
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "cpu": cpu_name(), "threads": THREADS,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "photo": args.image.name if args.image else "generated 1280x720 (bench.cli.synthetic_bgr, seed 3)",
              "settings": {"blocks": args.blocks, "per_block": args.per_block, "warmup": args.warmup, "conf": 0.25},
              "versions": versions(peer_python), "load_average_1min": load,
              "candidates_above_conf": target, "results": results}
    report["speedup"] = {f"{a} vs {n}": results[n]["median_ms"] / results[a]["median_ms"]
                         for a in OURS for n in PEER}
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
