"""``yoloworld-serve --ray`` on a local Ray: replicas sized as ``yoloworld-label`` sizes its actors, answers
equal in-process ``predict``, bad requests refused as without Ray, SIGTERM stops Serve and Ray."""

from __future__ import annotations

import httpx
import pytest
from conftest import compare

from labeling.engine import plan_actors
from serving.ray_serve import replica_settings
from serving.settings import ServeSettings

pytest.importorskip("ray.serve", reason="--ray needs Ray Serve (the [ray] extra)")


@pytest.mark.parametrize("resources, gpus, expected", [
    ({"CPU": 2.0}, 0.0, (1, 1.5, 0.0, 2)),  # this machine: one replica, half a CPU left to Ray
    ({"CPU": 16.0}, 0.0, (4, 3.75, 0.0, 4)),  # one replica per 4 CPUs
    ({"CPU": 16.0, "GPU": 2.0}, 1.0, (2, 1.0, 1.0, 1)),  # one replica per GPU
])
def test_replicas_sized_as_labeling_actors(resources, gpus, expected):
    plan = plan_actors(resources, [resources], num_gpus=gpus)
    assert (plan.actors, plan.num_cpus, plan.num_gpus, plan.threads) == expected
    settings = replica_settings(ServeSettings("m.onnx"), plan.num_gpus, plan.threads)
    assert settings.detector.device == ("cuda" if gpus else "cpu")
    assert settings.detector.runtime.intra_op_threads == plan.threads


@pytest.mark.slow
def test_serve_on_local_ray(serve_models, start_server):
    from sdk import Detector
    from sdk.settings import DetectorSettings

    server = start_server([serve_models.folded, "--backend", "onnxruntime", "--ray"], ready_s=180)
    assert "Ray Serve, 1 replica(s)" in server.log()
    expected = Detector.from_settings(serve_models.folded, None, DetectorSettings(backend="onnxruntime")).predict(
        serve_models.images)
    for path, exp in zip(serve_models.images, expected, strict=True):
        with open(path, "rb") as f:
            r = httpx.post(f"{server.url}/v1/detect", files={"image": f.read()}, timeout=60)
        assert r.status_code == 200, r.text
        compare(r.json(), exp)
        assert exp  # detections expected: the comparison is not vacuous
    r = httpx.post(f"{server.url}/v1/detect", files={"image": b"not an image"}, data={"classes": "cat"}, timeout=60)
    assert r.status_code == 400 and r.json()["field"] == "classes"  # refused as without Ray
    assert httpx.get(f"{server.url}/v1/model", timeout=30).json()["vocabulary"] == serve_models.classes
    assert server.stop(timeout=120) == 0, server.log()
    assert "stopping" in server.log()
