"""ONNX Runtime CPU latency/throughput of an exported S model in FP32, INT8 (Q/DQ) and FP16, beside PyTorch.

The S v2 model is randomly initialised (BatchNorm statistics calibrated on two synthetic images and
tempered as in tests/export/test_precision.py, so outputs are not degenerate), with 80 classes from
random unit text embeddings folded in (no CLIP download), exported at 640 by ``export_onnx`` (raw
``scores``/``boxes``, dynamic batch), converted by ``export.precision`` (INT8: 32 synthetic
calibration images, MinMax, symmetric int8, per-channel weights; FP16: decode tail kept fp32).
Times ``session.run`` on a preprocessed batch only (no pre/post-processing) after warm-up, and the
PyTorch fp32 forward of the same folded graph (``DeployModel``) under ``torch.inference_mode``. The
ONNX Runtime sessions run in rounds (each round runs every precision once, thread spinning off), so
a busy shared machine slows all of them alike; PyTorch runs after them on its own. The load average
is recorded: compare the ``min`` columns when it is high.
Two INT8 forms: ``int8`` (symmetric int8 activations, TensorRT's form; on x86 ONNX Runtime runs most
of its convs as DequantizeLinear -> float Conv) and ``int8-uint8`` (asymmetric uint8 activations,
fused by ONNX Runtime into QLinearConv). Agreement of each conversion with FP32
(``export.agreement.agreement``, 8 images, conf 0.25) is recorded too; on a random model it says
little about a trained one.

    python benchmarks/bench_onnx_precision.py [--batches 1 8] [--precisions fp32 int8 int8-uint8 fp16]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, synthetic_bgr  # noqa: E402
from sdk.atomic import atomic_write_text  # noqa: E402


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx", "f16c")))
    except OSError:
        pass
    return []


def build(imgsz: int, size: str = "s"):
    """A calibrated random ``size`` v2 model without its text encoder, an 80-class vocabulary and its
    random unit embeddings ``(80, D)`` float32."""
    import torch

    from sdk.model import build_model, get_config
    from sdk.preprocess import preprocess
    from sdk.vocabulary import Vocabulary
    from tests.calibrate import calibrate_random_model

    torch.manual_seed(0)
    model = build_model(get_config(size, "v2")).eval()
    model.text_encoder = None  # embeddings are given; no CLIP weights needed
    emb = torch.nn.functional.normalize(torch.randn(80, model.config.text_channels), dim=-1)
    batch = torch.from_numpy(preprocess(synthetic_bgr(2, 1, imgsz), imgsz)[0])
    calibrate_random_model(model, batch, emb)
    for bn in model.modules():  # tempering: see tests/export/test_precision.py
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_var.clamp_(min=float(bn.running_var.median()))
    vocab = Vocabulary.from_any([f"class {i}" for i in range(80)])
    return model, vocab, emb.numpy()


def timed_round_robin(runners: dict, warmup: int, repeats: int) -> dict:
    """Warm every runner up, then time them in turn, one run each per round: a neighbour's load on a
    shared machine then slows every engine alike instead of whichever happened to run at the time."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict = {key: [] for key in runners}
    for _ in range(repeats):
        for key, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return times


def summary(times: list[float], batch: int) -> dict:
    med = statistics.median(times)
    return {"repeats": len(times), "latency_ms": {"min": min(times) * 1e3, "median": med * 1e3,
                                                  "max": max(times) * 1e3},
            "throughput_img_s": batch / med}


def export_all(model, vocab, emb, precisions: list[str], imgsz: int, calib_images: int, tmp: Path
               ) -> tuple[dict[str, Path], dict[str, dict]]:
    """Each precision through the library's export pipeline (``export.pipeline.export_artifact``, raw
    outputs); returns the artifacts and per precision the export seconds, size and node counts."""
    import cv2
    import onnx

    from export.pipeline import ExportOptions, export_artifact

    calib = tmp / "calib"
    calib.mkdir()
    for i, img in enumerate(synthetic_bgr(calib_images, 100, imgsz)):
        cv2.imwrite(str(calib / f"{i:03d}.png"), img)
    paths, conversions = {}, {}
    for precision in precisions:
        base, acts = ("int8", "uint8") if precision == "int8-uint8" else (precision, "int8")
        if base not in ("fp32", "fp16", "int8"):
            raise SystemExit(f"unknown precision {precision!r}")
        paths[precision] = tmp / f"s_{precision}.onnx"
        options = ExportOptions(precision=base, imgsz=imgsz, calib_images=str(calib) if base == "int8" else None,
                                int8_activations=acts)
        t = time.perf_counter()
        export_artifact(model, vocab, paths[precision], options, emb, log=lambda *_: None)
        conversions[precision] = {"seconds": time.perf_counter() - t, "size_mb": paths[precision].stat().st_size / 1e6}
        if precision != "fp32":
            nodes = [n.op_type for n in onnx.load(str(paths[precision])).graph.node]
            conversions[precision].update(quantize_linear=nodes.count("QuantizeLinear"), cast=nodes.count("Cast"))
    return paths, conversions


def time_all(paths: dict[str, Path], deploy, imgsz: int, batches: list[int], warmup: int, repeats: int,
             threads: int) -> list[dict]:
    """ONNX Runtime sessions of every precision in round robin, then PyTorch (``deploy``, unless None)."""
    import onnxruntime as ort
    import torch

    from sdk.preprocess import preprocess

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # no busy-waiting after a run: interleaved sessions would otherwise steal each other's cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    results = []
    for batch in batches:
        x = preprocess(synthetic_bgr(batch, 50 + batch, imgsz), imgsz)[0]
        n = repeats if batch == 1 else max(3, repeats // 4)
        runners = {}
        for precision, path in paths.items():
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            runners[("onnxruntime", precision)] = lambda s=session, x=x: s.run(None, {"images": x})
        times = timed_round_robin(runners, warmup, n)
        del runners  # sessions (and their threads) gone before PyTorch runs
        if deploy is not None:
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                times.update(timed_round_robin({("pytorch", "fp32"): lambda d=deploy, xt=xt: d(xt)}, warmup, n))
        for (engine, precision), t in times.items():
            results.append({"engine": engine, "precision": precision, "batch": batch, **summary(t, batch)})
            print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8", "int8-uint8", "fp16"],
                   help="int8: symmetric int8 activations (TensorRT's form); int8-uint8: ORT CPU's form")
    p.add_argument("--repeats", type=int, default=10, help="timed runs at batch 1 (batch 8: a quarter, >= 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--threads", type=int, default=0,
                   help="ORT intra-op and torch threads (0: the libraries' defaults, one per core)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onnx_precision_cpu.json")
    args = p.parse_args()

    import onnx
    import onnxruntime as ort
    import torch

    from export.agreement import agreement
    from export.onnx_export import build_deploy_model

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    model, vocab, emb = build(args.imgsz)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        paths, conversions = export_all(model, vocab, emb, ["fp32", *[x for x in args.precisions if x != "fp32"]],
                                        args.imgsz, args.calib_images, Path(tmp))
        eval_images = synthetic_bgr(8, 7, args.imgsz)
        agreements = {x: dict(agreement(paths["fp32"], paths[x], eval_images, args.imgsz)) for x in paths
                      if x != "fp32"}
        for x, report in agreements.items():
            print(f"{x} vs fp32: {report}", flush=True)
        deploy = None if args.no_torch else build_deploy_model(model, vocab, emb, args.imgsz)
        results = time_all({x: paths[x] for x in args.precisions}, deploy, args.imgsz, args.batches, args.warmup,
                           args.repeats, args.threads)
    report = {
        "what": "S v2 (random, calibrated, tempered), 80 folded classes, raw scores/boxes outputs; session.run / "
                "DeployModel forward only, no pre/post-processing",
        "device": "cpu", "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
        "load_average_start_end": [load_start[0], os.getloadavg()[0]],
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "settings": {"imgsz": args.imgsz, "batches": args.batches, "precisions": args.precisions,
                     "warmup": args.warmup, "repeats_batch1": args.repeats,
                     "repeats_batch_gt1": max(3, args.repeats // 4),
                     "schedule": "ONNX Runtime sessions in round robin (each round runs every precision once, "
                                 "so a neighbour's load hits all alike), then PyTorch on its own",
                     "ort_allow_spinning": False,
                     "ort_threads": args.threads or "default", "torch_threads": torch.get_num_threads(),
                     "ort_graph_optimization": "ORT_ENABLE_ALL", "calibration_images": args.calib_images,
                     "export": "export.pipeline.export_artifact (the CLI's pipeline; seconds include the fp32 "
                               "export each conversion starts from)",
                     "int8": "QDQ, symmetric int8 activations (TensorRT explicit quantization), per-channel "
                             "symmetric int8 weights, MinMax, decode tail float",
                     "int8-uint8": "as int8 but asymmetric uint8 activations (what ORT's x86 kernels fuse)",
                     "fp16": "float16 weights/activations, decode tail and graph I/O float32"},
        "conversions": conversions, "agreement_vs_fp32": agreements,
        "agreement_note": "random weights: even tempered, the S model amplifies small perturbations (a trained "
                          "model does not), so these agreement numbers are no accuracy estimate; see "
                          "DEFAULT_FLOAT_INT8 in export/precision.py for a fine-tuned model",
        "results": results,
        "date": time.strftime("%Y-%m-%d %H:%M"), "total_seconds": time.perf_counter() - t0,
    }
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
