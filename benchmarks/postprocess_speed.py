"""Post-processing speed before and after issue 23 (loop-free NMS, candidates by partition) -> JSON + PNG.

Times ``sdk.postprocess.postprocess`` (what every backend, ``yoloworld-eval``, ``yoloworld-label`` and
training's validation run after the network) against the plain path it replaced, in one run on the same
inputs, alternating the two: the old decode (sigmoid as one expression, concatenated), every candidate
sorted, the greedy NMS loop (``sdk.postprocess.postprocess_image_reference``, which decides exactly as
the loop did, comparing labels instead of float32 class offsets). Both must return identical detections;
the script checks it.

Inputs: YOLO-World v2 S at 640 (random weights, BN-tempered as in bench_onnx_precision.py, so that its
scores spread: ~300 detections above 0.25) on the generated 1280x720 photo of e2e_vs_ultralytics.py;
80 classes with the square letterbox (the default: 640x640, 8400 anchors) and the rect one (640x384,
5040 anchors), 1203 classes (LVIS-sized; random unit text embeddings) square. Forms: ``raw`` (an
export's scores and boxes: ONNX Runtime, OpenVINO, TensorRT) and ``head`` (a checkpoint's per-level
logits: the PyTorch backend, training validation; adds the decode). Settings: conf 0.25 (deployment)
and 0.001 (evaluation and labelling: top 30000 candidates), IoU 0.7, 300 per image. Timing waits for a
quiet machine (1-minute load average < 1.0, up to 20 minutes in all) and records the load.

    python benchmarks/postprocess_speed.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cli import environment, stats_ms  # noqa: E402
from benchmarks.common import cpu_name, save_png, synthetic_bgr  # noqa: E402
from sdk.nms import batched_nms  # noqa: E402
from sdk.postprocess import (  # noqa: E402
    STRIDES,
    anchor_points,
    decode_head_outputs,
    dfl_distances,
    postprocess,
    postprocess_image_reference,
    select_candidates,
)
from sdk.preprocess import LetterboxInfo, preprocess  # noqa: E402

QUIET_LOAD = 1.0
IOU, MAX_DET, TOPK = 0.7, 300, 30000
TARGETS_MS = {("raw", 80, 0.25): 3.0, ("raw", 80, 0.001): 15.0}  # issue 23, S at 640, 80 classes, 2 cores


def old_decode(cls_logits: list[np.ndarray], box_dists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``decode_head_outputs`` as it was before issue 23 (same values, more copies)."""
    def sig(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)

    scores = np.concatenate([sig(c.reshape(c.shape[0], c.shape[1], -1)).transpose(0, 2, 1) for c in cls_logits],
                            axis=1)
    dists = np.concatenate([dfl_distances(d) for d in box_dists], axis=1)
    h, w = box_dists[0].shape[2] * STRIDES[0], box_dists[0].shape[3] * STRIDES[0]
    points, stride = anchor_points((h, w), STRIDES)
    dists = dists * stride[None, :, None]
    return scores, np.concatenate((points - dists[..., :2], points + dists[..., 2:]), axis=-1).astype(np.float32)


def old_postprocess(raw: dict[str, np.ndarray], form: str, infos: list[LetterboxInfo], conf: float) -> list:
    """The plain path: old decode, full sort, the NMS loop."""
    if form == "head":
        scores, boxes = old_decode([raw[f"cls_logits_{i}"] for i in range(3)],
                                   [raw[f"box_dists_{i}"] for i in range(3)])
    else:
        scores, boxes = raw["scores"], raw["boxes"]
    return [postprocess_image_reference(scores[b], boxes[b], info, conf, IOU, MAX_DET) for b, info in enumerate(infos)]


def model_outputs(variants: tuple[tuple[int, bool], ...]) -> dict[tuple[int, bool], tuple[dict, dict, list]]:
    """Per (class count, rect letterbox): the S model's head outputs on the photo (``head`` form), their
    decode (``raw`` form) and the letterbox."""
    import cv2
    import torch

    from benchmarks.bench_onnx_precision import build

    model, _, emb80 = build(640)
    photo = cv2.resize(synthetic_bgr(1, 3, 720)[0], (1280, 720), interpolation=cv2.INTER_AREA)
    out = {}
    for classes, rect in variants:
        batch, infos = preprocess([photo], 640, rect=rect)
        torch.manual_seed(1)
        emb = emb80 if classes == len(emb80) else torch.nn.functional.normalize(
            torch.randn(classes, emb80.shape[1]), dim=-1).numpy()
        with torch.inference_mode():
            heads = model(torch.from_numpy(batch), torch.from_numpy(emb)[None])
        head = {f"cls_logits_{i}": t.numpy() for i, t in enumerate(heads.cls_logits)}
        head.update({f"box_dists_{i}": t.numpy() for i, t in enumerate(heads.box_dists)})
        scores, boxes = decode_head_outputs(out_np(head, "cls_logits"), out_np(head, "box_dists"))
        out[classes, rect] = (head, {"scores": scores, "boxes": boxes}, infos)
    return out


def _input_hw(head: dict[str, np.ndarray]) -> list[int]:
    """The network input's (height, width) from the stride-8 level's shape."""
    return [int(v) * STRIDES[0] for v in head["cls_logits_0"].shape[2:]]


def out_np(head: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    return [head[f"{name}_{i}"] for i in range(len(STRIDES))]


def wait_for_quiet(deadline: float) -> dict[str, Any]:
    """Sleep until the 1-minute load average is below QUIET_LOAD (at most until ``deadline``, a
    ``time.monotonic()``: one waiting budget for the whole run)."""
    start = time.monotonic()
    while os.getloadavg()[0] >= QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(20)
    load = os.getloadavg()
    return {"load_1_5_15": [round(v, 3) for v in load], "waited_s": round(time.monotonic() - start),
            "quiet": load[0] < QUIET_LOAD}


def alternate(fns: dict[str, Callable[[], Any]], repeats: dict[str, int]) -> dict[str, list[float]]:
    """Each function once untimed, then in turn (a neighbour's load hits both alike) until each has its
    ``repeats`` timings (seconds)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(times[k]) < repeats[k] for k in fns):
        for k, fn in fns.items():
            if len(times[k]) < repeats[k]:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return times


def stages(raw: dict[str, np.ndarray], form: str, info: LetterboxInfo, conf: float, repeats: int) -> dict:
    """Median ms of the new path's stages: decode (head form), candidates, mapping back, NMS."""
    head = form == "head"
    scores, boxes = decode_head_outputs(out_np(raw, "cls_logits"), out_np(raw, "box_dists")) if head else (
        raw["scores"], raw["boxes"])
    anchors, labels, values = select_candidates(scores[0], conf, TOPK)
    xyxy = info.boxes_to_original(boxes[0][anchors])
    fns = {"candidates": lambda: select_candidates(scores[0], conf, TOPK),
           "nms": lambda: batched_nms(xyxy, values, labels, IOU, MAX_DET)}
    if head:
        fns["decode"] = lambda: decode_head_outputs(out_np(raw, "cls_logits"), out_np(raw, "box_dists"))
    times = alternate(fns, dict.fromkeys(fns, repeats))
    return {k: round(float(np.median(v)) * 1e3, 3) for k, v in times.items()}


def measure_case(raw: dict[str, np.ndarray], form: str, infos: list[LetterboxInfo], classes: int, conf: float,
                 repeats: int, deadline: float) -> dict[str, Any]:
    scores = raw["scores"][0] if form == "raw" else None
    before, after = old_postprocess(raw, form, infos, conf)[0], postprocess(raw, form, infos, conf, IOU, MAX_DET)[0]
    identical = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    one = time.perf_counter()
    old_postprocess(raw, form, infos, conf)
    one = time.perf_counter() - one
    load = wait_for_quiet(deadline)
    times = alternate({"before": lambda: old_postprocess(raw, form, infos, conf),
                       "after": lambda: postprocess(raw, form, infos, conf, IOU, MAX_DET)},
                      {"before": max(3, min(repeats, int(20 / one))), "after": repeats})
    row: dict[str, Any] = {"form": form, "classes": classes, "conf": conf, "kept": len(after.confidence),
                           "identical": identical, "load_before": load}
    if scores is not None:
        row["candidates_above_conf"] = int((scores > conf).sum())
        row["candidates_into_nms"] = min(row["candidates_above_conf"], TOPK)
    row.update({k: {**stats_ms(v), "repeats": len(v)} for k, v in times.items()})
    row["speedup"] = round(row["before"]["median"] / row["after"]["median"], 1)
    row["stages_after_ms"] = stages(raw, form, infos[0], conf, repeats)
    row["load_after"] = [round(v, 3) for v in os.getloadavg()]
    target = TARGETS_MS.get((form, classes, conf))
    if target is not None:
        row["target_ms"], row["target_met"] = target, row["after"]["median"] <= target
    return row


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['letterbox']}, {r['form']}, {r['classes']} classes, conf {r['conf']}" for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.5))
    for dy, key, color in ((-0.2, "before", "#b0b0b0"), (0.2, "after", "#2a7ab9")):
        med = [r[key]["median"] for r in rows]
        err = [[m - r[key]["min"] for m, r in zip(med, rows, strict=True)],
               [r[key]["max"] - m for m, r in zip(med, rows, strict=True)]]
        ax.barh(y + dy, med, height=0.4, color=color, xerr=err, label=key)
        for yy, m, r in zip(y + dy, med, rows, strict=True):
            ax.text(r[key]["max"] * 1.12, yy, f"{m:.1f}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(right=max(r["before"]["max"] for r in rows) * 4)  # room for the labels
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per image (median, whiskers min-max), log scale")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8, loc="upper right")
    save_png(fig, path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed runs of the new path per case")
    p.add_argument("--wait", type=float, default=1200, help="seconds to wait for a quiet machine, in all")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "postprocess_speed.json")
    args = p.parse_args()
    rows = []
    variants = model_outputs(((80, False), (80, True), (1203, False)))  # square: the default letterbox
    deadline = time.monotonic() + args.wait
    for (classes, rect), (head, raw, infos) in variants.items():
        for form, outputs in (("raw", raw), ("head", head)):
            for conf in (0.25, 0.001):
                row = measure_case(outputs, form, infos, classes, conf, args.repeats, deadline)
                rows.append({"letterbox": "rect" if rect else "square",
                             "input_hw": _input_hw(head), **row})
                print(json.dumps({k: rows[-1][k] for k in ("letterbox", "form", "classes", "conf", "before", "after",
                                                           "identical")}))
    report = {"what": __doc__.split("\n\n")[0], "cpu": cpu_name(), "environment": environment("cpu"),
              "settings": {"model": "YOLO-World v2 S, random BN-tempered weights", "imgsz": 640,
                           "photo": "generated 1280x720 (bench.cli.synthetic_bgr, seed 3)",
                           "iou": IOU, "max_det": MAX_DET, "pre_nms_topk": TOPK, "batch": 1, "threads": "numpy, 1",
                           "quiet_load": QUIET_LOAD},
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, args.out.with_suffix(".png"), f"post-processing per image, before / after issue 23: {cpu_name()}, "
         f"{os.cpu_count()} cores")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
