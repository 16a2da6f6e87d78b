"""The prepared GPU check (one short run on a lent H100/H200): what needs CUDA, measured.

Records: PyTorch CUDA forward throughput (fp32 and fp16) of S and L at 640, batch 1 and 32; one AMP
training step (fp16 with a gradient scaler, and bf16) of S; the SDK's cuda-python binding (pinned
round trip, graph capture and replay); the exported S on ONNX Runtime's CUDA provider (IO binding)
and as a TensorRT engine through ``sdk.backends.tensorrt`` (with and without CUDA graphs), each
checked against ONNX Runtime on CPU, when they are installed (skipped and said so otherwise).
Writes JSON. No open_clip needed: text embeddings are random unit vectors (80 classes).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdk.model import build_model, get_config  # noqa: E402


def timed(fn, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3}


def forward_throughput(size: str, batch: int, dtype: str) -> dict:
    torch.manual_seed(0)
    model = build_model(get_config(size, "v2")).cuda().eval()
    model.text_encoder = None
    text = torch.nn.functional.normalize(torch.randn(80, 512, device="cuda"), dim=-1)
    x = torch.rand(batch, 3, 640, 640, device="cuda")
    if dtype == "fp16":
        model, text, x = model.half(), text.half(), x.half()

    def run() -> None:
        with torch.inference_mode():
            model(x, text)

    t = timed(run, repeats=20, warmup=5)
    return {"size": size, "batch": batch, "dtype": dtype, **t, "images_per_s": batch / t["median_ms"] * 1e3}


def train_step(amp: str, batch: int = 16) -> dict:
    from training.engine import autocast
    from training.loss import YoloWorldLoss

    torch.manual_seed(0)
    model = build_model(get_config("s", "v2")).cuda().train()
    model.text_encoder = None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    loss_fn = YoloWorldLoss()
    x = torch.rand(batch, 3, 640, 640, device="cuda")
    text = torch.nn.functional.normalize(torch.randn(batch, 80, 512, device="cuda"), dim=-1)
    xy = torch.rand(batch, 6, 2, device="cuda") * 400
    boxes = torch.cat([xy, xy + 30 + torch.rand(batch, 6, 2, device="cuda") * 200], -1)
    labels = torch.randint(0, 80, (batch, 6), device="cuda")
    mask = torch.ones(batch, 6, dtype=torch.bool, device="cuda")
    losses = []

    def step() -> None:
        with autocast(torch.device("cuda"), amp):
            out = model(x, text)
        loss, parts = loss_fn(out, labels, boxes, mask)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append({k: float(v) for k, v in parts.items()})

    t = timed(step, repeats=5, warmup=2)
    torch.cuda.reset_peak_memory_stats()
    step()
    return {"model": "s", "batch": batch, "amp": amp, **t, "images_per_s": batch / t["median_ms"] * 1e3,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "last_losses": losses[-1]}


def cuda_binding() -> dict:
    """sdk.backends.cuda on the real driver: pinned round trip, copy bandwidth, a captured graph replayed."""
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


def exported_s(tmp: Path, imgsz: int = 640) -> tuple[Path, np.ndarray]:
    """The S model (random, BN-tempered, 80 classes) exported raw at ``imgsz``, and 32 preprocessed images."""
    from benchmarks.bench_onnx_precision import build
    from export.onnx_export import export_onnx
    from sdk.benchmark import synthetic_bgr
    from sdk.preprocess import preprocess

    model, vocab, emb = build(imgsz)
    path = tmp / "s.onnx"
    export_onnx(model, vocab, emb, path, imgsz=imgsz, log=lambda *_: None)
    return path, preprocess(synthetic_bgr(32, 3, imgsz), imgsz)[0]


def backend_runs(backend, images, ref: dict) -> dict:
    """Throughput at batch 1 and 32, and the largest differences from ``ref`` (ONNX Runtime CPU, batch 2)."""
    out = {}
    got = backend.infer(images[:2])
    out["max_abs_diff"] = {k: float(abs(got[k].astype("float64") - ref[k]).max()) for k in ref}
    for batch in (1, 32):
        t = timed(lambda b=batch: backend.infer(images[:b]), repeats=20, warmup=5)
        out[f"batch_{batch}"] = {**t, "images_per_s": batch / t["median_ms"] * 1e3}
    return out


def deployment(report: dict) -> None:
    """ONNX Runtime CUDA and TensorRT on the exported S, where installed."""
    import tempfile

    have_trt = importlib.util.find_spec("tensorrt") is not None
    try:
        import onnxruntime as ort
    except ImportError:
        report["onnxruntime_cuda"] = "onnxruntime not installed: skipped"
        ort = None
    has_cuda_ep = ort is not None and "CUDAExecutionProvider" in ort.get_available_providers()
    if ort is not None and not has_cuda_ep:
        report["onnxruntime_cuda"] = (f"CUDAExecutionProvider not available (onnxruntime {ort.__version__}, "
                                      f"providers {ort.get_available_providers()}): skipped")
    if not have_trt:
        report["tensorrt"] = "tensorrt not installed: skipped"
    if not (has_cuda_ep or have_trt) or ort is None:
        return
    from sdk.backends.base import RuntimeOptions
    from sdk.backends.onnxruntime import OnnxRuntimeBackend

    with tempfile.TemporaryDirectory() as tmp:
        path, images = exported_s(Path(tmp))
        ref = OnnxRuntimeBackend(path, "cpu").infer(images[:2])
        if has_cuda_ep:
            be = OnnxRuntimeBackend(path, "cuda", RuntimeOptions(providers=("CUDAExecutionProvider",)))
            report["onnxruntime_cuda"] = {"providers": be.providers, "io_binding": be.io_binding,
                                          **backend_runs(be, images, ref)}
            print(json.dumps({"onnxruntime_cuda": report["onnxruntime_cuda"]}), flush=True)
        if have_trt:
            from export.tensorrt import build_engine
            from sdk.backends.tensorrt import TensorRTBackend

            t0 = time.perf_counter()
            engine = build_engine(path, Path(tmp) / "s.engine", 1, 8, 32, log=print)
            report["tensorrt"] = {"build_s": time.perf_counter() - t0}
            for graphs in (False, True):
                be = TensorRTBackend(engine, "cuda", RuntimeOptions(cuda_graphs=graphs))
                report["tensorrt"][f"cuda_graphs_{graphs}"] = backend_runs(be, images, ref)
                be.close()
            print(json.dumps({"tensorrt": report["tensorrt"]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        sys.exit(1)
    report: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d %H:%M"), "forward": [], "train_step": []}
    t0 = time.perf_counter()
    for size in ("s", "l"):
        for batch in (1, 32):
            for dtype in ("fp32", "fp16"):
                r = forward_throughput(size, batch, dtype)
                print(json.dumps(r), flush=True)
                report["forward"].append(r)
    for amp in ("fp16", "bf16"):
        r = train_step(amp)
        print(json.dumps(r), flush=True)
        report["train_step"].append(r)
    try:
        report["cuda_binding"] = cuda_binding()
    except Exception as e:  # cuda-python missing or broken: say so, keep the rest
        report["cuda_binding"] = f"skipped: {type(e).__name__}: {e}"
    print(json.dumps({"cuda_binding": report["cuda_binding"]}), flush=True)
    deployment(report)
    report["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"-> {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
