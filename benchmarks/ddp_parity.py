"""Two processes under torchrun learn what one process learns: final mAP of each, per seed -> JSON, plot.

The demo's training (generated shapes set, ``--model tiny --imgsz 256``, 40 epochs, batch 8 per
optimiser step) run as one process with ``--batch-size 8`` and as ``torchrun --nproc_per_node 2`` with
``--batch-size 4`` per process (gloo on the CPU), for each seed. The two differ only where they must:
BatchNorm statistics come from 4 images per process instead of 8 (no ``--sync-bn``), and float sums run
in another order; gradients of one step are equal (tests/training/test_ddp.py). The spread between seeds
of the one-process runs is the yardstick for the difference.

    python benchmarks/ddp_parity.py --work ../scratch/ddp [--seeds 0 1] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, read_curve, save_png  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402

#: The tolerance stated in the README: two processes' final mAP50:95 within this of one process's, per seed.
TOLERANCE = 0.03


def train(nproc: int, seed: int, epochs: int, data: Path, out: Path) -> dict[str, Any]:
    """One ``training.finetune`` run; its seconds, curve and final mAP50:95."""
    args = ["-m", "training.finetune", "--model", "tiny", "--imgsz", "256", "--data", str(data),
            "--epochs", str(epochs), "--seed", str(seed), "--batch-size", str(8 // nproc), "--output", str(out)]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(nproc)]
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        code = subprocess.call([*launcher, *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)})
    if code:
        raise RuntimeError(f"{nproc}-process run failed ({code}); see {out.with_suffix('.log')}")
    curve = read_curve(out / "metrics.csv")
    return {"seconds": time.perf_counter() - t0, "curve": curve, "final_mAP": curve[-1][1],
            "best_mAP": max(m for _, m in curve)}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in report["runs"]:
        ep, m = zip(*run["curve"], strict=True)
        ax.plot(ep, m, "o-" if run["processes"] == 1 else "s--", ms=3,
                label=f"{run['processes']} process(es), seed {run['seed']}: final {run['final_mAP']:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP50:95 (EMA)")
    ax.set_title("demo training: 1 process x 8 vs torchrun 2 x 4 (CPU, gloo)", fontsize=9)
    ax.legend(fontsize=7)
    save_png(fig, path)


def main() -> None:
    from training.synthetic import make_shapes_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (outside the repository)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_parity.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data" / "data.yaml"
    if not data.exists():
        make_shapes_dataset(data.parent)  # the demo's set: 64 training, 16 validation images at 256
    runs = []
    for seed in args.seeds:
        for nproc in (1, 2):
            run = {"processes": nproc, "seed": seed,
                   **train(nproc, seed, args.epochs, data, args.work / f"p{nproc}_s{seed}")}
            runs.append(run)
            print(f"{nproc} process(es), seed {seed}: final mAP50:95 {run['final_mAP']:.4f} "
                  f"(best {run['best_mAP']:.4f}) in {run['seconds'] / 60:.1f} min", flush=True)
    final = {(r["processes"], r["seed"]): r["final_mAP"] for r in runs}
    diffs = [final[2, s] - final[1, s] for s in args.seeds]
    one = [final[1, s] for s in args.seeds]
    report = {"what": __doc__.split("\n\n")[0], "environment": {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": {"model": "tiny", "imgsz": 256, "epochs": args.epochs, "batch_per_step": 8,
                     "data": "demo shapes set, 64 train / 16 val"},
        "runs": runs, "two_minus_one_per_seed": diffs, "one_process_seed_spread": max(one) - min(one),
        "tolerance": TOLERANCE, "within_tolerance": all(abs(d) <= TOLERANCE for d in diffs)}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(f"2 - 1 processes, per seed: {', '.join(f'{d:+.4f}' for d in diffs)}; seed spread of 1 process "
          f"{report['one_process_seed_spread']:.4f}; tolerance {TOLERANCE}: "
          + ("met" if report["within_tolerance"] else "NOT met"))


if __name__ == "__main__":
    main()
