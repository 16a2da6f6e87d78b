"""``yoloworld-serve`` as users run it (a subprocess on the loopback): answers equal in-process
``predict``, concurrent clients batched, bad requests refused while it stays up (a decompression bomb
without decoding it, oversized bodies with and without ``Content-Length``), SIGTERM drains."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import SERVE, bomb_png, compare


def detect(url: str, path_or_bytes: str | bytes, timeout: float = 60.0, **fields) -> httpx.Response:
    data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, str) else path_or_bytes
    return httpx.post(f"{url}/v1/detect", files={"image": ("image", data)},
                      data={k: str(v) for k, v in fields.items()}, timeout=timeout)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (``VmHWM``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, str]:
    """Send ``head`` (request line + headers) and ``body`` on a plain socket; (status, response text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply and b"}" in reply.split(b"\r\n\r\n", 1)[1]:
                break
    text = reply.decode(errors="replace")
    return int(text.split(" ", 2)[1]), text


@pytest.mark.slow
def test_answers_equal_predict_concurrently(serve_models, folded_server):
    """8 clients at once: every answer equals in-process ``predict`` on the same file, some shared a batch."""
    from sdk import Detector
    from sdk.settings import DetectorSettings

    expected = Detector.from_settings(serve_models.folded, None, DetectorSettings(backend="onnxruntime")).predict(
        serve_models.images)
    assert all(len(e) for e in expected)
    paths = serve_models.images * 4
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda p: detect(folded_server.url, p), paths))
    for path, r in zip(paths, replies, strict=True):
        assert r.status_code == 200, r.text
        compare(r.json(), expected[serve_models.images.index(path)])
    assert max(r.json()["ran"]["batch_size"] for r in replies) > 1


@pytest.mark.slow
def test_refusals_keep_the_server_up(folded_server, serve_models):
    """A 16000x16000 PNG bomb, a body over the 1 MiB limit (declared, and chunked without a length),
    garbage bytes: each a 4xx with a JSON error; the bomb is never decoded (peak memory stays far below
    its 768 MB), and the server answers afterwards."""
    url, port, pid = folded_server.url, folded_server.port, folded_server.proc.pid
    before = peak_rss_mb(pid)
    r = detect(url, bomb_png())
    assert r.status_code == 413 and r.json()["field"] == "image" and "pixels" in r.json()["error"]
    assert peak_rss_mb(pid) - before < 100, (before, peak_rss_mb(pid))
    status, text = raw_request(port, "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                                     "boundary=b\r\nContent-Length: 10000000000\r\n")
    assert status == 413 and "exceeds the limit of 1048576 bytes" in text, text
    chunk = b"0" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))  # 1.25 MiB, no length
    status, text = raw_request(port, "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                                     "boundary=b\r\nTransfer-Encoding: chunked\r\n", body)
    assert status == 413 and "exceeds the limit" in text, text
    r = detect(url, b"\x89PNG not really")
    assert r.status_code == 400 and r.json()["field"] == "image"
    r = detect(url, serve_models.images[0])
    assert r.status_code == 200 and r.json()["detections"]
    assert folded_server.proc.poll() is None


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(serve_models, start_server):
    """Three requests wait in a gathering batch (a 3 s wait); SIGTERM then: all three are answered, the
    app shuts down cleanly, and the process ends by the signal (uvicorn re-raises it after draining, so a
    supervisor sees a SIGTERM exit)."""
    server = start_server([serve_models.folded, "--backend", "onnxruntime", "--max-batch", "8",
                           "--max-wait-ms", "3000"])
    replies: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda p=p: replies.append(detect(server.url, p)))
               for p in serve_models.images[:3]]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/healthz").json()["pending"] < 3:
        assert time.monotonic() < deadline, "the requests never reached the batcher"
        time.sleep(0.05)
    assert server.stop(timeout=60) == -signal.SIGTERM, server.log()
    assert "Application shutdown complete" in server.log()
    for t in threads:
        t.join(30)
    assert [r.status_code for r in replies] == [200] * 3, [r.text for r in replies]
    assert all(r.json()["detections"] for r in replies)


def test_bad_weights_is_a_clear_error(tmp_path):
    r = subprocess.run([str(SERVE), str(tmp_path / "missing.onnx"), "--port", "1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "missing.onnx" in r.stderr and "Traceback" not in r.stderr, r.stderr
