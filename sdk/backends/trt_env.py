"""TensorRT and the GPU this process sees: what an engine needs to run here, torch-free.

Shared by the builder (``export.tensorrt``) and the runtime (``sdk.backends.tensorrt``): importing
TensorRT with a clear error, naming the GPU (cuda-python, else nvidia-smi), and checking
an engine's sidecar against this machine before deserialising it (engines run only on the TensorRT
version and GPU architecture that built them).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import YoloWorldError
from ..manifest import Manifest, read_manifest

REBUILD_HINT = ("rebuild it on this machine: yoloworld-export --engine trt --weights <checkpoint> --output "
                "<model.engine> (same --classes / --imgsz / --batch), or, from the exported ONNX, "
                "export.tensorrt.build_engine(<model.onnx>, <model.engine>)")


class TensorRTUnavailable(YoloWorldError):
    """TensorRT cannot be imported, or no CUDA GPU is visible."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(
            "TensorRT (or a CUDA GPU) is not available here" + (f": {reason}" if reason else "") +
            ". Use --engine onnx (the ONNX artifact runs on ONNX Runtime, CPU or GPU), or install tensorrt "
            "(pip install tensorrt, or yoloworld-sdk[gpu]) on a machine with an NVIDIA GPU and build there.")

    def __reduce__(self):  # picklable despite the custom __init__
        return type(self), (self.reason,)


class EngineIncompatible(YoloWorldError):
    """An engine built by another TensorRT version or for another GPU architecture."""


# ----------------------------------------------------------------------------------------------------
# Environment: TensorRT and the GPU
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "major.minor", e.g. "9.0"


def import_tensorrt() -> Any:
    """``import tensorrt``, or :class:`TensorRTUnavailable` saying why not."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the package is there but libnvinfer is not
        raise TensorRTUnavailable(f"the tensorrt Python package cannot be imported ({e})") from None
    return trt


def _probe_cuda_python(device: int) -> GpuInfo | None:
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
    except ImportError:
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if getattr(err, "value", err) != 0 or count <= device:
            return None
        err, prop = cudart.cudaGetDeviceProperties(device)
        if getattr(err, "value", err) != 0:
            return None
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return GpuInfo(name.split("\x00")[0].strip(), f"{prop.major}.{prop.minor}")
    except Exception:  # a broken CUDA install is "no GPU" here, the next probe may still work
        return None


def _probe_nvidia_smi(device: int) -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and device >= len(visible):
        return None
    index = visible[device] if visible else str(device)  # nvidia-smi numbers physical GPUs
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader", f"--id={index}"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        name, cc = (s.strip() for s in out.splitlines()[0].rsplit(",", 1))
        float(cc)
        return GpuInfo(name, cc)
    except Exception:
        return None


_GPU_PROBES: tuple[Callable[[int], GpuInfo | None], ...] = (_probe_cuda_python, _probe_nvidia_smi)


def current_gpu(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device`` (cuda-python, else nvidia-smi)."""
    for probe in _GPU_PROBES:
        info = probe(device)
        if info is not None:
            return info
    raise TensorRTUnavailable(f"no CUDA GPU {device} found (asked cuda-python and nvidia-smi)")


def runtime_environment(device: int = 0) -> dict[str, Any]:
    """``{"tensorrt": version, "gpu": {"name", "compute_capability"}}`` of this machine, or
    :class:`TensorRTUnavailable`."""
    trt = import_tensorrt()
    gpu = current_gpu(device)
    return {"tensorrt": str(trt.__version__), "gpu": dataclasses.asdict(gpu)}




def _cc_str(compute_capability: Any) -> str:
    if isinstance(compute_capability, (tuple, list)):
        return ".".join(str(int(v)) for v in compute_capability)
    return str(compute_capability)



def check_engine_compatible(engine_sidecar_manifest: Manifest | str | os.PathLike,
                            current: dict[str, Any] | None = None) -> None:
    """Raise :class:`EngineIncompatible` if the engine was built by another TensorRT version or for
    another GPU architecture than this machine's (``current``: ``runtime_environment()`` by default;
    :class:`TensorRTUnavailable` if there is none). Another GPU model of the same compute capability
    only warns. Accepts the engine's :class:`Manifest`, or the engine (or sidecar) path."""
    source = "this engine"
    manifest = engine_sidecar_manifest
    if not isinstance(manifest, Manifest):
        path = Path(manifest)
        source = str(path.with_suffix("")) if path.name.endswith(".json") else str(path)
        manifest = read_manifest(source)
    extra = manifest.extra
    built_trt, built_gpu = extra.get("tensorrt"), extra.get("gpu")
    if not built_trt or not isinstance(built_gpu, dict) or "compute_capability" not in built_gpu:
        raise EngineIncompatible(f"{source}: its manifest does not describe a TensorRT engine (no TensorRT "
                                 f"version / GPU in 'extra'); {REBUILD_HINT}")
    cur = current if current is not None else runtime_environment()
    cur_gpu = cur["gpu"]
    built_desc = f"{built_gpu.get('name', '?')} (compute capability {_cc_str(built_gpu['compute_capability'])})"
    cur_desc = f"{cur_gpu['name']} (compute capability {_cc_str(cur_gpu['compute_capability'])})"
    problems = []
    if str(built_trt) != str(cur["tensorrt"]):
        problems.append(f"it was built with TensorRT {built_trt} and this machine has TensorRT {cur['tensorrt']} "
                        "(an engine runs only on the TensorRT version that built it)")
    if _cc_str(built_gpu["compute_capability"]) != _cc_str(cur_gpu["compute_capability"]):
        problems.append(f"it was built for {built_desc} and this GPU is {cur_desc} (engines do not move "
                        "between GPU architectures)")
    if problems:
        raise EngineIncompatible(f"{source} cannot run here: {'; '.join(problems)}. To fix, {REBUILD_HINT}.")
    if built_gpu.get("name") and built_gpu.get("name") != cur_gpu["name"]:
        warnings.warn(f"{source} was built on {built_desc} and runs on {cur_desc}: same architecture, so it "
                      "works, but TensorRT tunes kernels per GPU model; rebuild here for full speed",
                      stacklevel=2)
