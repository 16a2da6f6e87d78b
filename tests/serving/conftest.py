"""Fixtures of the server tests: the fine-tuned tiny model as a checkpoint, a folded ONNX and an
open-vocabulary ONNX (160 px), its validation images, and ``yoloworld-serve`` started as users start it."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from builders import free_port

pytest.importorskip("fastapi", reason="the server needs the [serve] extra")
pytest.importorskip("httpx", reason="the server tests need httpx (the [dev] extra)")

SERVE = Path(sys.executable).parent / "yoloworld-serve"


@pytest.fixture(scope="session")
def serve_models(trained_tiny, tmp_path_factory) -> SimpleNamespace:
    """``checkpoint`` (.pt, torch), ``folded`` and ``open_vocab`` (ONNX, 160 px; the open one with 8
    vocabulary slots), ``classes`` (the model's class names) and ``images`` (4 validation image paths)."""
    from export.pipeline import ExportOptions, export_artifact
    from sdk.model.checkpoint import load_checkpoint_with_meta
    from sdk.vocabulary import Vocabulary

    ckpt, images = trained_tiny
    root = tmp_path_factory.mktemp("serve_models")
    model, meta = load_checkpoint_with_meta(ckpt)
    vocab = Vocabulary.from_any(meta["vocabulary"])
    folded, open_vocab = root / "folded.onnx", root / "open.onnx"
    export_artifact(model, vocab, folded, ExportOptions(imgsz=160), log=lambda *_: None)
    export_artifact(model, None, open_vocab, ExportOptions(imgsz=160, open_vocab=True, capacity=8),
                    log=lambda *_: None)
    return SimpleNamespace(checkpoint=ckpt, folded=folded, open_vocab=open_vocab, classes=vocab.names,
                           images=[str(p) for p in images])


class Server:
    """``yoloworld-serve`` in a subprocess on a free loopback port; ``url``, ``proc``, ``log()``."""

    def __init__(self, args: list[str], log_path: Path, ready_s: float = 90.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([str(SERVE), *args, "--port", str(self.port), "--no-access-log"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready(ready_s)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, seconds: float) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"yoloworld-serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"yoloworld-serve did not answer /healthz within {seconds} s:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_server(tmp_path_factory) -> Iterator:
    """``start_server(args) -> Server``; every server started is stopped at the end of the session."""
    servers: list[Server] = []
    logs = tmp_path_factory.mktemp("serve_logs")

    def start(args: list[str], ready_s: float = 90.0) -> Server:
        server = Server([str(a) for a in args], logs / f"server{len(servers)}.log", ready_s)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def folded_server(serve_models, start_server) -> Server:
    """``yoloworld-serve folded.onnx`` (ONNX Runtime, batches of up to 8, waiting up to 20 ms)."""
    return start_server([serve_models.folded, "--backend", "onnxruntime", "--max-batch", "8", "--max-wait-ms", "20",
                         "--max-pixels", "1000000", "--max-body-mb", "1"])


def bomb_png(side: int = 16000) -> bytes:
    """A valid ``side`` x ``side`` 1-bit grayscale PNG of zeros: a few tens of KB on the wire, a
    ``side``\\ :sup:`2` x 3-byte BGR image once decoded (768 MB at 16000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = (b"\x00" * (1 + (side + 7) // 8)) * side  # filter byte 0 + packed bits, per row
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def compare(answer: dict, expected, box_atol: float = 1e-3, score_atol: float = 1e-5) -> None:
    """A ``/v1/detect`` answer equals ``expected`` (a ``Detections``) within the tolerances."""
    import numpy as np

    dets = answer["detections"]
    assert len(dets) == len(expected), (len(dets), len(expected))
    if not dets:
        return
    np.testing.assert_allclose([d["box"] for d in dets], expected.xyxy, atol=box_atol, rtol=0)
    np.testing.assert_allclose([d["score"] for d in dets], expected.confidence, atol=score_atol, rtol=0)
    assert [d["class_id"] for d in dets] == expected.class_id.tolist()
    assert [d["class_name"] for d in dets] == expected.class_name.tolist()
