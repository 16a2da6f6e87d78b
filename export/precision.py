"""Precision decided in the ONNX graph: mixed FP16, and what every precision change shares.

TensorRT 10/11 *strongly typed* networks take every tensor's type from the ONNX graph instead of
choosing kernels by builder flags, so the precision of an artifact is fixed here, once, and every
runtime (ONNX Runtime, TensorRT) executes the same graph:

* :func:`convert_fp16` -- weights and activations in float16; the numerically sensitive *decode tail*
  (everything after the last convolutions: the DFL Softmax / ReduceSum expectation, the score
  Sigmoid, the anchor/stride box arithmetic, an in-graph NMS if present) stays float32, and so do the
  graph inputs and outputs, so the SDK feeds the same float32 ``images`` and reads float32 outputs.
  Uses ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``, MIT) with a node
  block list: no extra dependency.
* ``export.quantize.quantize_int8`` -- static INT8 with explicit Q/DQ (its own module).
* ``export.agreement.agreement`` -- fp32 reference vs candidate, through the SDK's own pre/post-processing.
* :func:`select_nodes` -- which nodes keep float32 (decode tail, attention gates, op types), and
  :func:`copy_manifest` -- the converted artifact's manifest (``precision`` and ``extra`` set).

On x86 CPUs FP16 is a correctness path, not a speed-up (ONNX Runtime wraps float16 nodes in casts).
Convert the raw-output graph: an appended TensorRT NMS plugin cannot run in ONNX Runtime (append NMS
after the precision change; ONNX NonMaxSuppression is fine either way).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sdk.errors import YoloWorldError
from sdk.manifest import Precision, read_manifest

DECODE_TAIL = "decode_tail"  # every node after the last Conv/MatMul (nothing it feeds is a Conv/MatMul)


ATTENTION = "max_sigmoid_attention"  # ReduceMax -> ... -> Sigmoid -> Mul gates of the VL-PAN
STEM = "stem"  # the first Conv(s): read the image itself, whose 8-bit input int8 activations cannot widen
HEAD_OUTPUT = "head_output"  # the last Conv/MatMul of each branch: box logits and the folded text-contrastive product

# The decode tail holds the DFL Softmax/ReduceSum, the score Sigmoid and the box arithmetic; the op
# types are listed too so that a graph whose tail is fed by something unusual keeps them float32.
DEFAULT_FP32_OPS: tuple[str, ...] = (DECODE_TAIL, "Softmax", "ReduceSum", "TopK", "NonMaxSuppression")
# INT8: the decode tail stays float and reads the last convs' float outputs (no Q/DQ after them).
# Measured on the demo's fine-tuned tiny model (15 epochs, 256 px, 32 calibration images, 16 val
# images; fp32 mAP50:95 0.723): default 0.722, raw max |d score| 0.020, 108/119 detections matched
# at IoU >= 0.9 (conf 0.05); tail quantized too: 0.709 and only 75/119 matched (mean IoU 0.93);
# attention gates also float: 0.728, 105/119 matched (no gain beyond noise, so they are quantized);
# uint8 activations: 0.724, 111/119. FP16 on the same model: 0.723, 119/119, |d score| 3e-4.
# Issue 23, the fine-tuned test fixture (tiny, 160 px, 32 generated val images, fp32 mAP50:95 0.7317) on an
# AVX512-VNNI CPU: OpenVINO lost 8 points with symmetric int8 activations whatever stayed float (0.651-0.672),
# ONNX Runtime none, so the pipeline's ONNX default became uint8 activations: OpenVINO 0.741 (decode tail
# float), 0.742 with the stem and the head's last convs (text-contrastive product) float too. Those read the
# raw image and write the logits, so they stay float at little cost.
DEFAULT_FLOAT_INT8: tuple[str, ...] = (DECODE_TAIL, STEM, HEAD_OUTPUT)
# What is quantized: the convolutions' inputs and weights only. Every quantizable op type (ONNX Runtime's
# default) also wraps the SiLU's Mul, Concat, MaxPool, Resize and Add in Q/DQ pairs, which OpenVINO then runs
# as separate requantizations: on the S at 384x640 (AMD EPYC, 2 threads) 38.3 ms against 34.3 ms with
# convolutions only (bf16: 49.2), and the fixture scored 0.741 / 0.744 (fp32 0.732).
DEFAULT_INT8_OPS: tuple[str, ...] = ("Conv",)
# Outputs of these op types stay float: each Conv's output goes through its SiLU before the next quantization
# (where a Conv reads it), so OpenVINO fuses Conv + SiLU + that quantization into one int8 kernel. ONNX
# Runtime's default, a Q/DQ pair on every quantized op's output (here before the SiLU), makes OpenVINO run a
# separate dequantize -> SiLU -> requantize pass after every Conv: on the S at 384x640 (AMD EPYC, 2 threads,
# interleaved) 34.1 ms against 31.5 ms (bf16: 48.2); benchmarks/openvino_int8_speed.py. The same placement is
# NVIDIA's advice for TensorRT: Q/DQ on the inputs of compute ops only.
DEFAULT_FLOAT_OUTPUTS: tuple[str, ...] = ("Conv",)

_COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


class PrecisionError(YoloWorldError):
    """A precision conversion could not be done (bad input, no calibration images, ...)."""


def decode_tail_nodes(graph: Any) -> list[str]:
    """Names of the nodes after the last compute ops: those from which no Conv/ConvTranspose/MatMul/
    Gemm is reachable downstream (decode, sigmoid, box math, in-graph NMS). Nodes must be named."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_compute: dict[int, bool] = {}
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted
        feeds_compute[id(node)] = node.op_type in _COMPUTE_OPS or any(
            feeds_compute.get(id(c), False) for out in node.output for c in consumers.get(out, ()))
    return [n.name for n in graph.node if not feeds_compute[id(n)]]


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def head_output_nodes(graph: Any) -> list[str]:
    """Names of the compute nodes (Conv/ConvTranspose/MatMul/Gemm) with no compute node downstream: the
    head's last convolutions (box distributions, and class logits with the text embeddings folded in)."""
    tail = set(decode_tail_nodes(graph))
    consumers = _consumers(graph)
    return [n.name for n in graph.node if n.op_type in _COMPUTE_OPS
            and all(c.name in tail for out in n.output for c in consumers.get(out, ()))]


def stem_nodes(graph: Any) -> list[str]:
    """Names of the compute nodes that the graph inputs reach without passing another compute node."""
    consumers = _consumers(graph)
    frontier = [i.name for i in graph.input]
    seen: set[str] = set()
    found: list[str] = []
    while frontier:
        for node in consumers.get(frontier.pop(), ()):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in _COMPUTE_OPS:
                found.append(node.name)
            else:
                frontier.extend(node.output)
    return found


def attention_nodes(graph: Any) -> list[str]:
    """Names of the max-sigmoid attention internals: each ReduceMax and the chain of elementwise /
    shape ops it feeds up to and including the Mul that gates the features."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chain_ops = {"Div", "Add", "Mul", "Sigmoid", "Unsqueeze", "Reshape", "Transpose", "Squeeze"}
    out: list[str] = []
    for node in graph.node:
        if node.op_type != "ReduceMax":
            continue
        cur = node
        out.append(cur.name)
        for _ in range(8):
            nxt = [c for o in cur.output for c in consumers.get(o, ())]
            if len(nxt) != 1 or nxt[0].op_type not in chain_ops:
                break
            cur = nxt[0]
            out.append(cur.name)
            if cur.op_type == "Mul":
                break
    return out


def select_nodes(graph: Any, selectors: Iterable[str]) -> list[str]:
    """Node names matched by ``selectors``: :data:`DECODE_TAIL`, :data:`ATTENTION`, :data:`STEM`,
    :data:`HEAD_OUTPUT`, op types, node names."""
    selectors = set(selectors)
    chosen: set[str] = set()
    if STEM in selectors:
        chosen.update(stem_nodes(graph))
    if HEAD_OUTPUT in selectors:
        chosen.update(head_output_nodes(graph))
    if DECODE_TAIL in selectors:
        chosen.update(decode_tail_nodes(graph))
    if ATTENTION in selectors:
        chosen.update(attention_nodes(graph))
    chosen.update(n.name for n in graph.node if n.op_type in selectors or n.name in selectors)
    return [n.name for n in graph.node if n.name in chosen]  # graph order


def name_nodes(model: Any) -> None:
    """Give unnamed nodes unique names (block lists and exclusions are by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` topologically, keeping the existing order where it is already valid."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise PrecisionError(f"graph has a cycle or a missing input near node {rest[0].name!r}")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, keep_fp32: Sequence[str] = DEFAULT_FP32_OPS
                 ) -> None:
    """Write a mixed-precision copy of ``src`` to ``dst``: initializers and activations float16, the
    nodes selected by ``keep_fp32`` (see :func:`select_nodes`; default: the decode tail) float32 with
    Cast nodes at the boundaries, graph inputs/outputs float32. The manifest (metadata and sidecar)
    is copied with ``precision="fp16"`` when ``src`` has one."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    name_nodes(model)
    blocked = select_nodes(model.graph, keep_fp32)
    fp16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked,
                                    op_block_list=[])  # [] = only our list (default blocks Max/Min/Range...)
    _toposort(fp16.graph)  # the converter appends its input/output Casts at the end
    fp16.producer_name = model.producer_name or "yoloworld-sdk"
    onnx.checker.check_model(fp16)
    save_model(fp16, dst)
    copy_manifest_if_any(src, dst, "fp16", {"fp32_nodes": len(blocked), "keep_fp32": list(keep_fp32)})


def save_model(model: Any, dst: Path) -> None:
    import onnx

    from sdk.atomic import atomic_path

    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))


def copy_manifest(src: str | os.PathLike, dst: str | os.PathLike, precision: Precision, extra: dict[str, Any]
                  ) -> None:
    """``dst``'s manifest := ``src``'s with ``precision`` set and ``extra`` merged into its ``extra``;
    written into ``dst``'s ONNX ``metadata_props`` and its ``.json`` sidecar."""
    import onnx

    from .artifact import save_onnx

    manifest = read_manifest(src)
    manifest = dataclasses.replace(manifest, precision=precision, extra={**manifest.extra, **extra})
    save_onnx(onnx.load(str(dst)), manifest, dst)


def copy_manifest_if_any(src: Path, dst: Path, precision: Precision, extra: dict[str, Any]) -> None:
    try:
        read_manifest(src)
    except YoloWorldError:
        return  # a plain ONNX file: nothing to describe
    copy_manifest(src, dst, precision, extra)


__all__ = ["ATTENTION", "DECODE_TAIL", "DEFAULT_FLOAT_INT8", "DEFAULT_FLOAT_OUTPUTS", "DEFAULT_FP32_OPS",
           "DEFAULT_INT8_OPS", "HEAD_OUTPUT", "STEM", "PrecisionError", "attention_nodes", "convert_fp16",
           "copy_manifest", "copy_manifest_if_any", "decode_tail_nodes", "head_output_nodes", "name_nodes",
           "save_model", "select_nodes", "stem_nodes"]
