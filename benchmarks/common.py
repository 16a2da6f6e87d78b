"""What every benchmark records about the machine (shared with ``yoloworld-bench``), and how it names files."""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from bench.cli import cpu_name, synthetic_bgr  # noqa: F401  (the benchmarks import both from here)

ROOT = Path(__file__).resolve().parents[1]


def repo_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies inside it, else its file name: results files are
    committed and must not record the layout of the machine that made them."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return p.name


def scrub_paths(text: str) -> str:
    """Error text for a results file: the repository's folder dropped, temporary and home folders
    shortened to ``<tmp>`` and ``~``."""
    text = text.replace(f"{ROOT}{os.sep}", "").replace(str(ROOT), ".")
    text = re.sub(re.escape(tempfile.gettempdir()) + r"[^\s\"':]*", "<tmp>", text)
    return text.replace(str(Path.home()), "~")


def read_curve(metrics_csv: str | os.PathLike) -> list[tuple[int, float]]:
    """(epoch, val mAP50:95) of the validated epochs of a ``training.finetune`` run's ``metrics.csv``."""
    with open(metrics_csv, newline="") as f:
        return [(int(r["epoch"]), float(r["mAP"])) for r in csv.DictReader(f) if r.get("mAP")]


def timed_run(cmd: list[str], log: Path, cwd: Path = ROOT, threads: int = 2) -> float:
    """Run ``cmd`` in ``cwd`` with ``threads`` OpenMP/MKL threads, its output in ``log``; its wall time,
    seconds. Raises naming the log when it fails."""
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if code:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed ({code}); see {log}")
    return time.perf_counter() - t0


def run_finetune(args: list[str], out: Path, threads: int = 2) -> float:
    """``python -m training.finetune *args --output out`` in a child process (:func:`timed_run`), its
    output in ``out.log``; its wall time, seconds."""
    import sys

    cmd = [sys.executable, "-m", "training.finetune", *args, "--output", str(out)]
    return timed_run(cmd, out.with_suffix(".log"), ROOT, threads)


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> None:
    """A matplotlib figure as a PNG, written atomically (a plot beside a results JSON)."""
    from sdk.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def save_barh(path: str | os.PathLike, labels: list[str], values: list[float], colors: list[str], xlabel: str,
              title: str, xerr: list[list[float]] | None = None, xlim: tuple[float, float] | None = None,
              fontsize: int = 8) -> None:
    """One horizontal bar per row, first row on top, as a PNG (:func:`save_png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(labels) + 1.4))
    ax.barh(range(len(labels)), values, color=colors, xerr=xerr)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.invert_yaxis()
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=8)
    save_png(fig, path)
    plt.close(fig)


__all__ = ["ROOT", "cpu_name", "read_curve", "repo_path", "run_finetune", "save_barh", "save_png", "scrub_paths",
           "timed_run"]
