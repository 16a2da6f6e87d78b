"""Committed benchmark results name files relative to the repository, never by this machine's layout."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
MACHINE_PATH = re.compile(r"(^|[\s\"'(])(/(work|tmp|home|root|Users|mnt|var|private)/|[A-Za-z]:\\\\)")


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")) + sorted(RESULTS.glob("*.md")), ids=lambda p: p.name)
def test_no_absolute_machine_paths(path):
    strings = list(_strings(json.loads(path.read_text()))) if path.suffix == ".json" else [path.read_text()]
    bad = [s for s in strings if MACHINE_PATH.search(s)]
    assert not bad, f"{path.name} records machine paths: {bad[:3]}"


def test_repo_path():
    from benchmarks.common import ROOT, repo_path

    assert repo_path(ROOT / "runs" / "demo_finetune" / "best.pt") == "runs/demo_finetune/best.pt"
    assert repo_path("/elsewhere/model.onnx") == "model.onnx"


def test_error_text_is_scrubbed_before_it_is_recorded():
    import tempfile

    from benchmarks.common import ROOT, scrub_paths

    text = f'File "{ROOT}/sdk/x.py", line 3: {tempfile.gettempdir()}/tmpab12/data/val.json missing'
    assert scrub_paths(text) == 'File "sdk/x.py", line 3: <tmp> missing'
    assert not MACHINE_PATH.search(scrub_paths(text))
