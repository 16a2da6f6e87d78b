"""Training throughput (images/s per optimiser step) and dataloader throughput (mosaic on) -> JSON.

Times ``train_one_epoch``-equivalent steps (forward, loss with the task-aligned assigner, backward,
AdamW step, EMA) on random batches of the requested size, and the training DataLoader on the
generated shapes dataset (boxes and polygons) with the default stage-1 chain (mosaic + copy-paste +
mask-refined affine + the official MixUp rate for the model size + blur/gray/CLAHE + HSV + flip + text
sampling), and again with boxes only and no MixUp (the chain before these official extras).

    python benchmarks/bench_training.py [--model tiny] [--imgsz 320] [--batch 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdk.model import build_model, get_config  # noqa: E402
from training.config import TrainConfig, official_augmentation  # noqa: E402
from training.ema import ModelEMA  # noqa: E402
from training.engine import autocast  # noqa: E402
from training.loss import YoloWorldLoss  # noqa: E402
from training.optim import build_optimizer  # noqa: E402


def bench_steps(model_name: str, imgsz: int, batch: int, steps: int, device: str, amp: str) -> dict:
    torch.manual_seed(0)
    model = build_model(get_config(model_name, "v2")).to(device).train()
    model.text_encoder = None
    opt = build_optimizer(model, TrainConfig(lr=2e-4), batch)
    ema = ModelEMA(model)
    loss_fn = YoloWorldLoss()
    images = torch.rand(batch, 3, imgsz, imgsz, device=device)
    texts = torch.nn.functional.normalize(torch.randn(batch, 80, 512, device=device), dim=-1)
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, 8, 2, generator=gen) * imgsz * 0.7
    boxes = torch.cat([xy, xy + 16 + torch.rand(batch, 8, 2, generator=gen) * imgsz * 0.3], -1).to(device)
    labels = torch.randint(0, 80, (batch, 8), generator=gen).to(device)
    mask = torch.ones(batch, 8, dtype=torch.bool, device=device)
    times = []
    for i in range(steps + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(torch.device(device), amp):
            out = model(images, texts)
        loss, _ = loss_fn(out, labels, boxes, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"model": model_name, "imgsz": imgsz, "batch": batch, "amp": amp, "steps": steps,
            "step_s": {"min": min(times), "median": med, "max": max(times)}, "images_per_s": batch / med}


def bench_loader(imgsz: int, batch: int, workers: int, batches: int, mixup_prob: float,
                 copypaste_prob: float, mask_refine: bool) -> dict:
    from torch.utils.data import DataLoader

    from training.data import read_data_yaml
    from training.synthetic import make_shapes_dataset
    from training.transforms import TrainDataset, TrainTransform, collate

    with tempfile.TemporaryDirectory() as tmp:
        data = read_data_yaml(make_shapes_dataset(Path(tmp), num_train=64, num_val=4, size=imgsz))
        transform = TrainTransform(size=imgsz, num_texts=80, mixup_prob=mixup_prob, copypaste_prob=copypaste_prob,
                                   mask_refine=mask_refine, min_area_ratio=0.01 if mask_refine else 0.1)
        ds = TrainDataset(data.build_train(min_size=0), transform, seed=0)
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate)
        t0 = time.perf_counter()
        n = 0
        for i, b in enumerate(loader):
            n += b["images"].shape[0]
            if i + 1 >= batches:
                break
        dt = time.perf_counter() - t0
    return {"imgsz": imgsz, "batch": batch, "workers": workers, "mosaic": True, "mixup_prob": mixup_prob,
            "copypaste_prob": copypaste_prob, "mask_refine": mask_refine, "images": n,
            "seconds": dt, "images_per_s": n / dt, "note": "includes worker start-up"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_cpu.json")
    args = p.parse_args()
    report = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "train_step": bench_steps(args.model, args.imgsz, args.batch, args.steps, args.device, args.amp),
              "dataloader": bench_loader(args.imgsz, args.batch, args.workers, 24,
                                         *official_augmentation(args.model)[1:], mask_refine=True),
              "dataloader_boxes_only": bench_loader(args.imgsz, args.batch, args.workers, 24, 0.0, 0.0,
                                                    mask_refine=False)}
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
