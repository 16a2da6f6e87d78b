"""Every TensorRT Python name the project uses exists in real TensorRT 10 and 11 releases.

TensorRT and a GPU are absent here, and the stand-ins in tests/sdk/test_tensorrt_backend.py and
tests/export/test_tensorrt.py could share a typo with the code they stand in for. So the code is read
(AST: attributes of the ``tensorrt`` module and of the TensorRT objects it returns, and the callbacks
of ``IOutputAllocator`` subclasses) and each name is looked up in ``tests/fixtures/tensorrt_api_names.txt.gz``,
the names compiled into the ``tensorrt_cu13_bindings`` 10.16 and 11.4 wheels.
"""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("sdk/backends/tensorrt.py", "sdk/backends/trt_env.py", "export/tensorrt.py")
# what holds a TensorRT object in those modules
RECEIVERS = {"builder", "config", "network", "parser", "opt_profile", "engine", "ctx", "self.engine",
             "self.context"}
def real_names() -> set[str]:
    path = ROOT / "tests" / "fixtures" / "tensorrt_api_names.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def tensorrt_names(source: str) -> dict[str, set[str]]:
    """``{"used": attribute names on TensorRT objects, "callbacks": IOutputAllocator methods}``."""
    used, callbacks = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Call) and dotted(base.func) == "trt.Runtime":  # trt.Runtime(logger).x
                used.add(node.attr)
            name = dotted(base)
            if name and (name == "trt" or name.startswith("trt.") or name in RECEIVERS):
                used.add(node.attr)
        elif (isinstance(node, ast.Call) and dotted(node.func) == "getattr" and len(node.args) >= 2
              and (dotted(node.args[0]) or "").startswith("trt") and isinstance(node.args[1], ast.Constant)):
            used.add(node.args[1].value)
        elif isinstance(node, ast.ClassDef) and any(dotted(b) == "trt.IOutputAllocator" for b in node.bases):
            callbacks |= {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
    return {"used": used, "callbacks": callbacks}


def test_every_tensorrt_name_used_exists_in_tensorrt_10_and_11():
    names = real_names()
    assert len(names) > 1000 and {"execute_async_v3", "set_tensor_address", "build_serialized_network"} <= names
    seen: set[str] = set()
    for module in MODULES:
        used = tensorrt_names((ROOT / module).read_text())["used"]
        assert used - names == set(), f"{module}: not TensorRT API: {sorted(used - names)}"
        seen |= used
    # the extraction finds what matters (an empty walk would pass the check above)
    assert {"Builder", "OnnxParser", "STRONGLY_TYPED", "deserialize_cuda_engine", "create_execution_context",
            "set_input_shape", "set_tensor_address", "execute_async_v3", "get_tensor_profile_shape",
            "build_serialized_network", "set_output_allocator", "nptype", "__version__"} <= seen


def test_output_allocator_callbacks_have_the_names_tensorrt_calls():
    """A misnamed callback would never be called: TensorRT would fail the allocation at run time."""
    got = tensorrt_names((ROOT / "sdk/backends/tensorrt.py").read_text())["callbacks"]
    assert {"reallocate_output_async", "notify_shape"} <= got
    assert {"reallocate_output_async", "reallocate_output", "notify_shape"} <= real_names()


def test_the_check_catches_a_misspelt_name():
    source = "def f(trt, engine):\n    engine.get_tensor_profile_shapes('x', 0)\n    trt.Logger.WARN\n"
    used = tensorrt_names(source)["used"]
    assert used - real_names() == {"get_tensor_profile_shapes", "WARN"}
