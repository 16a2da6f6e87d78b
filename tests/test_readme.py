"""The README's Python snippets run as written, on files the test makes: a tiny official-format checkpoint
stands in for the released weights, generated images for the photos, a short fine-tuning run for the demo.
The first snippet is the first prediction, which the README's first screen shows beside the install lines."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_snippets_this_test_covers():
    found = snippets()
    assert len(found) == 4, len(found)
    for call, blocks in (("Detector(", 2), ("load_checkpoint(", 1), ("export_artifact(", 1)):
        assert sum(call in code for code in found) == blocks, call


def test_readme_first_screen_installs_and_predicts():
    """Within the first 40 lines: a ``pip install`` line and the first prediction (the first snippet)."""
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    assert 'pip install -e ".[' in first_screen
    first = snippets()[0]
    assert f"```python\n{first}```" in first_screen
    assert "Detector(" in first and ".predict(" in first


@pytest.mark.slow
def test_readme_snippets_run(tiny_checkpoints, trained_tiny, images, tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.chdir(tmp_path)
    cv2.imwrite("bus.jpg", images[0])
    Path("street").mkdir()
    cv2.imwrite("street/1.jpg", images[1])
    Path("runs/demo_finetune").mkdir(parents=True)
    Path("runs/demo_finetune/best.pt").write_bytes(trained_tiny[0].read_bytes())
    stand_ins = {
        "yolo_world_v2_s_obj365v1_goldg_pretrain-55b943ea.pth": str(tiny_checkpoints["v2"]),
        "yolo_world_l_clip_base_dual_vlpan_...pth": str(tiny_checkpoints["v1"]),
        "imgsz=640": "imgsz=160", "imgsz=256": "imgsz=160",
    }
    namespace = {"cv2": cv2, "images": torch.rand(2, 3, 160, 160)}
    for i, code in enumerate(snippets()):
        for name, stand_in in stand_ins.items():
            code = code.replace(name, stand_in)
        if importlib.util.find_spec("supervision") is None:  # "(if installed)", says the README
            code = "\n".join("pass" if "to_supervision" in line else line for line in code.splitlines())
        exec(compile(code, "README.md", "exec"), namespace)
        if i == 0:  # the first prediction
            first = namespace["r"]
            assert namespace["det"].class_names == ["person", "bus"] and len(first.xyxy) == len(first.confidence)
            assert set(first.class_name) <= {"person", "bus"} and first.data["source"].endswith("bus.jpg")
    r = namespace["r"]
    assert r.data["speed_ms"] and len(namespace["results"]) == 2 and Path("out.jpg").is_file()
    assert namespace["det"].class_names == ["dog", "cat"]
    assert len(namespace["out"].cls_logits) == 3 and Path("mine.pt").is_file()
    assert namespace["manifest"].precision == "fp16" and namespace["manifest"].output_form == "nms"
    assert "batch_1" in namespace["manifest"].extra["verification"]
    assert isinstance(namespace["emb"], torch.Tensor) and np.isfinite(namespace["emb"].numpy()).all()
