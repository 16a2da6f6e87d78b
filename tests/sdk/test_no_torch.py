"""The deployment path never needs torch: import-time check and a static scan of ``sdk/``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

from sdk import Detections

SDK = Path(__file__).resolve().parents[2] / "sdk"
TORCH_ALLOWED = {"backends/torch.py", "facts.py"}  # plus everything under sdk/model/ (facts: checkpoints only)


def test_import_with_torch_blocked():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None\n"
            "import sdk, sdk.detector, sdk.postprocess, sdk.preprocess, sdk.nms, sdk.cli, sdk.backends.onnxruntime\n"
            "import sdk.backends.openvino, sdk.backends.exported\n"
            "import labeling, labeling.cli, labeling.run, labeling.engine, labeling.report\n"
            "import sdk.backends.tensorrt, sdk.backends.cuda, sdk.backends.trt_env\n"
            "import numpy as np\n"
            "boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], np.float32)\n"
            "from sdk.nms import nms; print(nms(boxes, np.array([0.9, 0.8], np.float32), 0.5))\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=SDK.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0]"


def test_no_torch_imports_outside_model_and_torch_backend():
    offenders = []
    for path in SDK.rglob("*.py"):
        rel = path.relative_to(SDK).as_posix()
        if rel.startswith("model/") or rel in TORCH_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.level and (node.module or "").startswith("model"):
                    names.append("sdk.model")
            for name in names:
                if name.split(".")[0] in ("torch", "open_clip", "training", "export") or \
                        name.startswith("sdk.model"):
                    offenders.append(f"{rel}:{node.lineno} imports {name}")
    assert offenders == []


def test_to_supervision_adapter(monkeypatch):
    """supervision is optional: the adapter passes our arrays through by field name."""
    import types

    captured = {}
    fake = types.ModuleType("supervision")
    fake.Detections = lambda **kw: captured.update(kw) or "sv"
    monkeypatch.setitem(sys.modules, "supervision", fake)
    det = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.5], np.float32),
                     np.array([2]), np.array(["dog"]))
    assert det.to_supervision() == "sv"
    assert captured["class_id"].tolist() == [2] and captured["data"]["class_name"].tolist() == ["dog"]
