"""The torch-free deployment install: a fresh venv with ``yoloworld-sdk[onnxruntime,openvino]`` only
predicts from an exported model, on OpenVINO by default and on ONNX Runtime when asked, and has no torch."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torch_free_install_predicts(tiny_checkpoints, images, tmp_path):
    import cv2

    from export.onnx_export import export_onnx
    from sdk.backends.torch import encode_texts
    from sdk.model import load_checkpoint
    from sdk.vocabulary import Vocabulary

    model = load_checkpoint(tiny_checkpoints["v2"])
    vocab = Vocabulary.from_any(["person", "red car"])
    export_onnx(model, vocab, vocab.embeddings(lambda t: encode_texts(model, None, t)), tmp_path / "m.onnx",
                imgsz=160, log=lambda *_: None)
    cv2.imwrite(str(tmp_path / "img.png"), images[1])
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", f"{ROOT}[onnxruntime,openvino]"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    script = (
        "import importlib.util, json, sys\n"
        "assert importlib.util.find_spec('torch') is None, 'torch must not be installed'\n"
        "import sdk\n"
        f"det = sdk.Detector(r'{tmp_path / 'm.onnx'}', conf=0.01)\n"
        f"res = det.predict(r'{tmp_path / 'img.png'}')[0]\n"
        f"ort = sdk.Detector(r'{tmp_path / 'm.onnx'}', conf=0.01, backend='onnxruntime')\n"
        f"n_ort = len(ort.predict(r'{tmp_path / 'img.png'}')[0])\n"
        "print(json.dumps({'n': len(res), 'n_ort': n_ort, 'classes': det.class_names, 'backend': det.backend.name,\n"
        "                  'precision': det.backend.precision}))\n"
    )
    run = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == "openvino" and out["classes"] == ["person", "red car"] and out["n"] > 0
    assert out["n_ort"] > 0  # the comparison below would hold for two empty results
    # and as many detections as here, on either backend
    assert (out["n"], out["n_ort"]) == (sdk_predict(tmp_path, "openvino"), sdk_predict(tmp_path, "onnxruntime"))
    # the benchmark entry point is torch-free too (no matplotlib there: JSON and markdown, no plot)
    bench = subprocess.run([str(env_dir / "bin" / "yoloworld-bench"), str(tmp_path / "m.onnx"), "--batch", "1",
                            "--count", "1", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path / "b.json")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-3000:]
    report = json.loads((tmp_path / "b.json").read_text())
    assert "torch" not in report["environment"] and report["results"][0]["backend"] == "openvino"
    assert (tmp_path / "b.md").is_file() and not (tmp_path / "b.png").exists()
    # and so is labeling (in-process; Ray is the .[ray] extra)
    label = subprocess.run([str(env_dir / "bin" / "yoloworld-label"), str(tmp_path / "img.png"), "--weights",
                            str(tmp_path / "m.onnx"), "--out", str(tmp_path / "labels"), "--conf", "0.01"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert label.returncode == 0, label.stderr[-3000:]
    summary = json.loads((tmp_path / "labels" / "summary.json").read_text())
    assert summary["images"] == 1 and 0 < summary["boxes"] <= out["n"]  # less boxes under 2 px


def sdk_predict(tmp_path: Path, backend: str) -> int:
    from sdk import Detector

    return len(Detector(tmp_path / "m.onnx", conf=0.01, backend=backend).predict(str(tmp_path / "img.png"))[0])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
