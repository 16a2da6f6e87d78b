"""The prepared GPU check (one short run on a lent H100/H200): what needs CUDA, measured.

Sections, in order of importance, each recorded even when a later one fails:

- ``forward``: PyTorch CUDA forward throughput (fp32, fp16) of S and L at 640, batch 1 and 32;
- ``train_step``: one AMP training step of S (fp16 with a gradient scaler, and bf16);
- ``predict``: ``Detector.predict`` on the PyTorch backend, fp32 and fp16 (``RuntimeOptions(half=True)``),
  S and L, batch 1 and 32, model-only and end to end from JPEG files (``bench.cli.run``; its JSON,
  markdown and plot are written beside ``--out`` as ``gpu_predict_torch.*``);
- ``parity``: the same model's raw outputs on the CPU (float32) and on the GPU (float32, float16);
- ``finetune``: ``python -m training.finetune`` under torchrun for 2 epochs with fp16 AMP (needs
  open_clip and pycocotools, which the lent machines lack: ``benchmarks/gpu_wheels.sh`` fetches them
  here and ``gpu_check.sh`` installs them from the carried ``.whl``);
- ``cuda_binding``: the SDK's cuda-python binding (pinned round trip, graph capture and replay);
- ``deployment``: the exported S on ONNX Runtime's CUDA provider (IO binding) and as a TensorRT engine
  through ``sdk.backends.tensorrt`` (with and without CUDA graphs), each checked against ONNX Runtime on
  the CPU, where installed (skipped and said so otherwise).

Outside ``finetune`` no open_clip is needed: text embeddings are random unit vectors (80 classes). The JSON is rewritten
after every section, so a run cut short keeps what it measured; a failed section records its error
and the exit status is 1. ``--smoke`` runs the same code on the CPU at toy sizes (tiny model, 128 px),
which is how CI keeps this script working between the rare sessions that are lent a GPU.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import scrub_paths  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402
from sdk.model import build_model, get_config  # noqa: E402


@dataclass(frozen=True)
class Settings:
    device: str = "cuda"
    sizes: tuple[str, ...] = ("s", "l")
    imgsz: int = 640
    batches: tuple[int, ...] = (1, 32)
    warmup: int = 5
    repeats: int = 20
    train_batch: int = 16
    train_repeats: int = 5
    predict_repeats: int = 5
    finetune_images: int = 128


SMOKE = Settings(device="cpu", sizes=("tiny",), imgsz=128, batches=(1, 2), warmup=1, repeats=2, train_batch=2,
                 train_repeats=1, predict_repeats=1, finetune_images=8)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int, warmup: int, device: str = "cuda") -> dict:
    """min / median / max milliseconds of ``fn`` (the device synchronised after each call)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3}


def forward_throughput(cfg: Settings, size: str, batch: int, dtype: str) -> dict:
    torch.manual_seed(0)
    model = build_model(get_config(size, "v2")).to(cfg.device).eval()
    model.text_encoder = None
    text = torch.nn.functional.normalize(torch.randn(80, model.config.text_channels, device=cfg.device), dim=-1)
    x = torch.rand(batch, 3, cfg.imgsz, cfg.imgsz, device=cfg.device)
    if dtype == "fp16":
        model, text, x = model.half(), text.half(), x.half()

    def run() -> None:
        with torch.inference_mode():
            model(x, text)

    t = timed(run, cfg.repeats, cfg.warmup, cfg.device)
    return {"size": size, "batch": batch, "dtype": dtype, **t, "images_per_s": batch / t["median_ms"] * 1e3}


def train_step(cfg: Settings, amp: str) -> dict:
    from training.engine import autocast
    from training.loss import YoloWorldLoss

    torch.manual_seed(0)
    device, b, s = torch.device(cfg.device), cfg.train_batch, cfg.imgsz
    model = build_model(get_config(cfg.sizes[0], "v2")).to(device).train()
    model.text_encoder = None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loss_fn = YoloWorldLoss()
    x = torch.rand(b, 3, s, s, device=device)
    text = torch.nn.functional.normalize(torch.randn(b, 80, model.config.text_channels, device=device), dim=-1)
    xy = torch.rand(b, 6, 2, device=device) * s * 0.6
    boxes = torch.cat([xy, xy + s * 0.05 + torch.rand(b, 6, 2, device=device) * s * 0.3], -1)
    labels = torch.randint(0, 80, (b, 6), device=device)
    mask = torch.ones(b, 6, dtype=torch.bool, device=device)
    losses = []

    def step() -> None:
        with autocast(device, amp):
            out = model(x, text)
        loss, parts = loss_fn(out, labels, boxes, mask)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append({k: float(v) for k, v in parts.items()})

    t = timed(step, cfg.train_repeats, 2, cfg.device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        peak = torch.cuda.max_memory_allocated() / 2**30
    return {"model": cfg.sizes[0], "batch": b, "amp": amp, **t, "images_per_s": b / t["median_ms"] * 1e3,
            "peak_memory_gib": peak, "last_losses": losses[-1]}


def save_checkpoints(cfg: Settings, tmp: Path) -> list[str]:
    """Calibrated random models (no text encoder; 80 stored prompt embeddings) as own checkpoints."""
    from benchmarks.bench_onnx_precision import build
    from sdk.model.checkpoint import save_checkpoint

    paths = []
    for size in cfg.sizes:
        model, vocab, emb = build(cfg.imgsz, size)
        model.config = dataclasses.replace(model.config, text_encoder=None)
        table = {name: torch.from_numpy(row) for name, row in zip(vocab.names, emb, strict=True)}
        paths.append(str(save_checkpoint(model, tmp / f"{size}.pt", vocabulary=[[n] for n in vocab.names],
                                         text_embeddings=table)))
    return paths


def predict(cfg: Settings, out: Path) -> dict:
    """``bench.cli.run`` over the PyTorch backend in fp32 and fp16; report files beside ``out``."""
    from bench.cli import run, write_report
    from sdk.backends.base import RuntimeOptions

    rows: list[dict] = []
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_checkpoints(cfg, Path(tmp))
        for half in (False, True):
            report = run(paths, cfg.batches, cfg.device, count=max(cfg.batches), warmup=2,
                         repeats=cfg.predict_repeats, imgsz=cfg.imgsz, runtime=RuntimeOptions(half=half))
            rows += report["results"]
    report["results"] = rows
    report["settings"]["runtime"] = "fp32, and fp16 (RuntimeOptions(half=True))"
    written = write_report(report, out.with_name("gpu_predict_torch.json"))
    return {"files": [p.name for p in written],
            "rows": [{k: r[k] for k in ("model", "precision", "batch", "model_images_per_s", "e2e_images_per_s",
                                        "stage_share")} for r in rows]}


def parity(cfg: Settings) -> dict:
    """The first size's calibrated random model through ``Detector`` on the CPU in float32 (reference)
    and on the device in float32 and float16: the largest differences of the raw outputs relative to
    the largest reference value, and the detections per image (conf 0.25). Random weights amplify
    rounding (see tests/sdk/test_detector.py for fine-tuned ones); on CUDA, float32 convolutions run
    in TF32 where PyTorch allows it (recorded)."""
    from benchmarks.common import synthetic_bgr
    from sdk import Detector
    from sdk.backends.base import RuntimeOptions
    from sdk.preprocess import preprocess

    images = synthetic_bgr(4, 5, cfg.imgsz)
    x, _ = preprocess(images, cfg.imgsz)
    report: dict = {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoints(dataclasses.replace(cfg, sizes=cfg.sizes[:1]), Path(tmp))[0]
        cpu = Detector(path, device="cpu", imgsz=cfg.imgsz)
        ref = cpu.backend.infer(x)
        report["cpu_fp32_detections"] = [len(d) for d in cpu.predict(images)]
        for half in (False, True):
            det = Detector(path, device=cfg.device, imgsz=cfg.imgsz, runtime=RuntimeOptions(half=half))
            got = det.backend.infer(x)
            report[f"{cfg.device}_{'fp16' if half else 'fp32'}"] = {
                "max_rel_diff": {k: float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref},
                "detections": [len(d) for d in det.predict(images)]}
    return report


def shm_gib() -> float | None:
    """Size of /dev/shm (DataLoader workers pass batches through it; containers often make it tiny)."""
    try:
        return shutil.disk_usage("/dev/shm").total / 2**30
    except OSError:
        return None


def finetune(cfg: Settings, out: Path) -> dict | str:
    """``torchrun --nproc_per_node 1 -m training.finetune`` (NCCL on the GPU, gloo on the CPU) for 2
    epochs on a generated dataset, fp16 AMP on the GPU: the real loop (loader workers, mosaic, AMP,
    EMA, validation, checkpoints), timed. Should torchrun fail (e.g. NCCL in a sandbox), the error is
    kept and the loop runs once more without it. Its curves are copied beside ``out``."""
    missing = [m for m in ("open_clip", "pycocotools") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"skipped: {', '.join(missing)} not installed (for the lent GPU machines: run "
                f"benchmarks/gpu_wheels.sh here and carry .whl)")
    from training.synthetic import make_shapes_dataset

    on_gpu = cfg.device.startswith("cuda")
    shm = shm_gib()
    workers = (8 if shm is None or shm >= 2 else 0) if on_gpu else 2
    args = ["--model", cfg.sizes[0], "--imgsz", str(cfg.imgsz), "--epochs", "2", "--val-interval", "1",
            "--batch-size", str(cfg.train_batch), "--total-batch-size", str(cfg.train_batch),
            "--workers", str(workers), "--num-texts", "8", "--min-size", "0",
            "--amp", "fp16" if on_gpu else "none", "--device", cfg.device]
    launchers = {"torchrun --standalone --nproc_per_node 1": ["-m", "torch.distributed.run", "--standalone",
                                                              "--nproc_per_node", "1", "-m", "training.finetune"],
                 "python": ["-m", "training.finetune"]}
    report: dict = {"train_images": cfg.finetune_images, "dev_shm_gib": shm}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_shapes_dataset(Path(tmp) / "data", num_train=cfg.finetune_images, num_val=8, size=cfg.imgsz)
        for launcher, prefix in launchers.items():
            run_dir = Path(tmp) / launcher.split()[0]
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, *prefix, *args, "--data", str(data), "--output", str(run_dir)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=180)
            if proc.returncode:
                report.setdefault("failed", {})[launcher] = scrub_paths(
                    f"exit status {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}")
                continue
            with open(run_dir / "metrics.csv", newline="") as f:
                epochs = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
            shutil.copy(run_dir / "curves.png", out.with_name("gpu_finetune_curves.png"))
            return {**report, "command": f"{launcher} -m training.finetune {' '.join(args)}",
                    "seconds_with_startup": time.perf_counter() - t0, "epochs": epochs}
    raise RuntimeError(json.dumps(report["failed"], indent=1))


def cuda_binding(cfg: Settings) -> dict | str:
    """sdk.backends.cuda on the real driver: pinned round trip, copy bandwidth, a captured graph replayed."""
    if not cfg.device.startswith("cuda"):
        return "skipped: no CUDA device"
    from sdk.backends.cuda import CudaPython

    cuda = CudaPython(0)
    n = 64 << 20
    src, dst = cuda.host_alloc(n), cuda.host_alloc(n)
    src[:] = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8)
    dev, stream = cuda.malloc(n), cuda.stream_create()

    def roundtrip() -> None:
        cuda.htod_async(dev, src, n, stream)
        cuda.dtoh_async(dst, dev, n, stream)
        cuda.synchronize(stream)

    t = timed(roundtrip, repeats=10, warmup=2)
    ok = bool((dst == src).all())
    cuda.begin_capture(stream)
    cuda.htod_async(dev, src, n, stream)
    cuda.dtoh_async(dst, dev, n, stream)
    graph = cuda.end_capture(stream)
    dst[:] = 0
    src[:16] = 7  # the replay must read the host buffer as it is now
    cuda.launch(graph, stream)
    cuda.synchronize(stream)
    replay_ok = bool((dst == src).all())
    cuda.graph_destroy(graph)
    cuda.free(dev)
    cuda.host_free(src)
    cuda.host_free(dst)
    cuda.stream_destroy(stream)
    return {"roundtrip_equal": ok, "graph_replay_equal": replay_ok, "roundtrip_64MiB": t,
            "pinned_gb_per_s_both_ways": 2 * n / (t["median_ms"] / 1e3) / 1e9}


def backend_runs(cfg: Settings, backend, images: np.ndarray, ref: dict) -> dict:
    """Throughput per batch size, and the largest differences from ``ref`` (ONNX Runtime CPU, batch 2)."""
    out = {}
    got = backend.infer(images[:2])
    out["max_abs_diff"] = {k: float(abs(got[k].astype("float64") - ref[k]).max()) for k in ref}
    for batch in cfg.batches:
        t = timed(lambda b=batch: backend.infer(images[:b]), cfg.repeats, cfg.warmup, cfg.device)
        out[f"batch_{batch}"] = {**t, "images_per_s": batch / t["median_ms"] * 1e3}
    return out


def deployment(cfg: Settings) -> dict:
    """The exported S on ONNX Runtime (CUDA provider; the CPU one in ``--smoke``) and TensorRT, where installed."""
    import onnxruntime as ort

    from benchmarks.bench_onnx_precision import build
    from benchmarks.common import synthetic_bgr
    from export.onnx_export import export_onnx
    from sdk.backends.base import RuntimeOptions
    from sdk.backends.onnxruntime import OnnxRuntimeBackend
    from sdk.preprocess import preprocess

    on_gpu = cfg.device.startswith("cuda")
    provider = "CUDAExecutionProvider" if on_gpu else "CPUExecutionProvider"
    ort_key = "onnxruntime_cuda" if on_gpu else "onnxruntime_cpu"
    have_ep = provider in ort.get_available_providers()
    have_trt = on_gpu and importlib.util.find_spec("tensorrt") is not None
    report: dict = {"onnxruntime": ort.__version__}
    if not have_ep:
        report[ort_key] = f"{provider} not available (providers {ort.get_available_providers()}): skipped"
    report["tensorrt"] = "run" if have_trt else "tensorrt not installed (or no GPU): skipped"
    if not (have_ep or have_trt):
        return report
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab, emb = build(cfg.imgsz, cfg.sizes[0])
        path = Path(tmp) / "m.onnx"
        export_onnx(model, vocab, emb, path, imgsz=cfg.imgsz, log=lambda *_: None)
        images = preprocess(synthetic_bgr(max(cfg.batches), 3, cfg.imgsz), cfg.imgsz)[0]
        ref = OnnxRuntimeBackend(path, "cpu").infer(images[:2])
        if have_ep:
            be = OnnxRuntimeBackend(path, cfg.device, RuntimeOptions(providers=(provider,)))
            report[ort_key] = {"providers": be.providers, "io_binding": be.io_binding,
                               **backend_runs(cfg, be, images, ref)}
        if have_trt:
            from export.tensorrt import build_engine
            from sdk.backends.tensorrt import TensorRTBackend

            t0 = time.perf_counter()
            engine = build_engine(path, Path(tmp) / "m.engine", 1, 8, max(cfg.batches), log=print)
            report["tensorrt"] = {"build_s": time.perf_counter() - t0}
            for graphs in (False, True):
                be = TensorRTBackend(engine, cfg.device, RuntimeOptions(cuda_graphs=graphs))
                report["tensorrt"][f"cuda_graphs_{graphs}"] = backend_runs(cfg, be, images, ref)
                be.close()
    return report


def run_sections(cfg: Settings, out: Path) -> dict:
    """Every section in turn; the report is written after each one."""
    report: dict = {"gpu": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else "none (smoke run)",
                    "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                    "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
                    "settings": dataclasses.asdict(cfg), "errors": {}}
    grid = [(s, b, d) for s in cfg.sizes for b in cfg.batches for d in ("fp32", "fp16")]
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("forward", lambda: [forward_throughput(cfg, *args) for args in grid]),
        ("train_step", lambda: [train_step(cfg, amp) for amp in ("fp16", "bf16")]),
        ("predict", lambda: predict(cfg, out)),
        ("parity", lambda: parity(cfg)),
        ("finetune", lambda: finetune(cfg, out)),
        ("cuda_binding", lambda: cuda_binding(cfg)),
        ("deployment", lambda: deployment(cfg)),
    ]
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, fn in sections:
        start = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # keep the other sections' numbers; the error is in the report
            report["errors"][name] = scrub_paths(f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exc(limit=-4)))
            print(f"[{name}] FAILED: {report['errors'][name]}", flush=True)
        else:
            print(json.dumps({name: report[name]}), flush=True)
        report.setdefault("section_seconds", {})[name] = time.perf_counter() - start
        report["seconds"] = time.perf_counter() - t0
        atomic_write_text(out, json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, 128 px: checks that the script runs")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (--smoke runs the script on the CPU at toy sizes)")
        return 1
    report = run_sections(SMOKE if args.smoke else Settings(), args.out)
    print(f"-> {args.out} ({report['seconds']:.0f} s, {len(report['errors'])} section(s) failed)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
