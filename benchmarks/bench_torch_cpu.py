"""Forward latency and throughput of the PyTorch model (S and L at 640, batch 1 and 8) -> JSON + PNG.

Times ``model(images, text_embeds)`` only (backbone, neck, head; 80 cached text embeddings; no
pre/post-processing, no text encoder) after warm-up, in float32 under ``torch.inference_mode``.

    python benchmarks/bench_torch_cpu.py [--sizes s l] [--batches 1 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name  # noqa: E402
from sdk.model import build_model, get_config  # noqa: E402


def bench(size: str, batch: int, imgsz: int, repeats: int, warmup: int, device: str) -> dict:
    torch.manual_seed(0)
    model = build_model(get_config(size, "v2")).eval().to(device)
    model.text_encoder = None  # not timed: embeddings are cached in practice
    text = torch.nn.functional.normalize(torch.randn(80, 512, device=device), dim=-1)
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x, text)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"size": size, "batch": batch, "imgsz": imgsz, "num_classes": 80, "repeats": repeats,
            "latency_ms": {"min": min(times) * 1e3, "median": med * 1e3, "max": max(times) * 1e3},
            "throughput_img_s": batch / med}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['size'].upper()} b{r['batch']}" for r in results]
    ax.bar(labels, [r["throughput_img_s"] for r in results], color="#4c72b0")
    ax.set_ylabel("images / s")
    ax.set_title("YOLO-World forward, PyTorch CPU, 640x640, fp32")
    for i, r in enumerate(results):
        ax.text(i, r["throughput_img_s"], f"{r['latency_ms']['median']:.0f} ms", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["s", "l"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "torch_cpu_forward.json")
    args = p.parse_args()
    results = []
    for size in args.sizes:
        for batch in args.batches:
            r = bench(size, batch, args.imgsz, args.repeats, args.warmup, args.device)
            print(json.dumps(r))
            results.append(r)
    report = {
        "what": "model forward only (backbone+neck+head), fp32, inference_mode, 80 text embeddings",
        "device": args.device, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(results, args.out.with_suffix(".png"))
    print(f"-> {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
