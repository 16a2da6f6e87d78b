"""C++ samples (cpp_samples/): the header-only core and the ONNX Runtime sample against the Python SDK.

The CMake project is configured and built once per session into a temporary folder. The core check
program (``yoloworld_core_check``) exchanges ``.npy`` files with these tests; the ONNX Runtime sample
runs a freshly exported tiny model and its JSON output is compared with ``sdk.Detector``.
Dependencies (cmake + compiler, OpenCV, ONNX Runtime headers from ``cpp_samples/scripts/setup_deps.sh``)
are checked here: a test whose dependency is missing skips and says which one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk.manifest import Manifest, NmsSettings, write_sidecar
from sdk.nms import batched_nms
from sdk.postprocess import decode_head_outputs, postprocess_image, unpack_nms_outputs
from sdk.preprocess import letterbox, letterbox_geometry, preprocess

pytestmark = pytest.mark.numeric  # float comparisons across kernels: CI reruns these (Makefile)

ROOT = Path(__file__).resolve().parents[2]
CPP = ROOT / "cpp_samples"
SETUP_HINT = "run `bash cpp_samples/scripts/setup_deps.sh` (make test does)"


@dataclass
class Build:
    dir: Path
    log: str  # the configure output: says why a sample was skipped
    seconds: float

    def exe(self, name: str) -> Path:
        return self.dir / name

    def skip_reason(self, target: str) -> str:
        lines = [ln.strip("- ") for ln in self.log.splitlines() if "yoloworld:" in ln and target in ln]
        return f"{target} was not built: {lines[0] if lines else 'see the CMake log'}; {SETUP_HINT}"


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> Build:
    cmake, cxx = shutil.which("cmake"), shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if cmake is None or cxx is None:
        pytest.skip(f"C++ samples not built: cmake ({cmake}) or a C++ compiler ({cxx}) is missing")
    build = tmp_path_factory.mktemp("cpp_build")
    t0 = time.perf_counter()
    conf = subprocess.run([cmake, "-S", str(CPP), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                          capture_output=True, text=True)
    assert conf.returncode == 0, f"cmake configure failed:\n{conf.stdout}\n{conf.stderr}"
    made = subprocess.run([cmake, "--build", str(build), "-j2"], capture_output=True, text=True)
    assert made.returncode == 0, f"cmake build failed:\n{made.stdout[-4000:]}\n{made.stderr[-4000:]}"
    return Build(build, conf.stdout, time.perf_counter() - t0)


def run_checked(args: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


class Core:
    """``yoloworld_core_check``: ``core(*args)`` -> stdout; ``core.opencv``: built with the letterbox resize."""

    def __init__(self, exe: Path) -> None:
        self.exe = exe
        self.opencv = self("features").strip() == "opencv=1"

    def __call__(self, *args) -> str:
        return run_checked([self.exe, *args]).stdout

    def fails(self, *args) -> str:
        proc = subprocess.run([str(a) for a in (self.exe, *args)], capture_output=True, text=True)
        assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
        return proc.stderr


@pytest.fixture(scope="session")
def core(cpp_build) -> Core:
    exe = cpp_build.exe("yoloworld_core_check")
    assert exe.exists(), "the core check program must always build (it has no dependency)"
    return Core(exe)


# ---------------------------------------------------------------------------------------------------
# the core: manifest, letterbox, decode, postprocess


def test_manifest_sidecar(core, tmp_path):
    """Own JSON parser vs Python's json on a real sidecar: escapes, non-ASCII (incl. a surrogate pair)."""
    names = ["person", 'red "car"', "café", "狗", "dog 🐶", "back\\slash"]
    m = Manifest(class_names=names, prompts=[[n] for n in names], prompt_merge="first", embedding_sha256="0" * 64,
                 imgsz=(320, 320), output_form="nms", nms=NmsSettings(conf=0.125, iou=0.55, max_det=77, agnostic=True),
                 dynamic_batch=False, max_batch=4, dynamic_hw=True,
                 output_names=("num_dets", "det_boxes", "det_scores", "det_classes"),
                 extra={"nested": [{"a": [1, 2.5e-3, None, True]}]})
    write_sidecar(m, tmp_path / "m.onnx")
    got = json.loads(core("manifest", tmp_path / "m.onnx"))
    want = json.loads(m.to_json())
    for key in ("class_names", "output_form", "nms", "dynamic_batch", "max_batch", "dynamic_hw", "precision",
                "pad_value", "channel_order", "input_name", "open_vocabulary", "vocab_capacity"):
        assert got[key] == want[key], key
    assert got["imgsz"] == [320, 320] and got["strides"] == [8, 16, 32] and got["scale"] == 1 / 255
    assert tuple(got["output_names"]) == m.output_names

    (tmp_path / "bad.onnx.json").write_text('{"format": "yoloworld-sdk-export", "class_names": ["a",]}')
    assert "not valid JSON" in core.fails("manifest", tmp_path / "bad.onnx")
    (tmp_path / "other.onnx.json").write_text('{"format": "something else"}')
    assert "not a yoloworld-sdk export manifest" in core.fails("manifest", tmp_path / "other.onnx")
    assert "no manifest" in core.fails("manifest", tmp_path / "none.onnx")


GEOMETRY_CASES = [(480, 640, 160), (100, 70, 160), (33, 250, 160), (160, 160, 160), (1000, 1000, 320),
                  (137, 101, 256), (1, 3, 32), (641, 479, 640), (719, 1281, 640), (250, 33, 96), (96, 97, 96)]


def test_letterbox_geometry(core):
    """Shrink, enlarge, odd padding, exactly square, 1-pixel-short long sides, plus random shapes."""
    rs = np.random.RandomState(0)
    cases = GEOMETRY_CASES + [(int(rs.randint(1, 2000)), int(rs.randint(1, 2000)), int(rs.choice([160, 320, 640])))
                              for _ in range(40)]
    for h, w, size in cases:
        got = core("geometry", h, w, size).split()
        (rh, rw), info = letterbox_geometry(h, w, size)
        assert [int(v) for v in got[:6]] == [rh, rw, *info.pad_tblr], (h, w, size)
        assert (float(got[6]), float(got[7])) == info.scale_wh, (h, w, size)


def _image(seed: int, h: int, w: int) -> np.ndarray:
    from builders import synthetic_image

    return synthetic_image(seed, h, w)


@pytest.mark.parametrize("h,w,size", GEOMETRY_CASES[:6])
def test_pad_and_normalise_is_exact(core, tmp_path, h, w, size):
    """Given the same resized image, the network input is bit-identical to sdk.preprocess (no OpenCV)."""
    image = _image(h + w, h, w)
    boxed, info = letterbox(image, size)
    top, _, left, _ = info.pad_tblr
    (rh, rw), _ = letterbox_geometry(h, w, size)
    np.save(tmp_path / "resized.npy", np.ascontiguousarray(boxed[top:top + rh, left:left + rw]))
    core("normalise", tmp_path / "resized.npy", h, w, size, 114, repr(1 / 255), "RGB", tmp_path / "out.npy")
    got, want = np.load(tmp_path / "out.npy"), preprocess([image], size)[0][0]
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_letterbox_with_opencv(core, tmp_path):
    """The whole letterbox (C++ OpenCV resize) vs the Python SDK (opencv-python): within 1 intensity level."""
    if not core.opencv:
        pytest.skip(f"yoloworld_core_check was built without OpenCV (the resize); {SETUP_HINT}")
    worst_px, worst_in = 0, 0.0
    for i, (h, w, size) in enumerate(GEOMETRY_CASES):
        if h * w > 1_000_000:
            continue
        image = _image(i, h, w)
        np.save(tmp_path / "img.npy", image)
        core("letterbox", tmp_path / "img.npy", size, tmp_path / "boxed.npy", tmp_path / "input.npy")
        boxed, _ = letterbox(image, size)
        worst_px = max(worst_px, int(np.abs(np.load(tmp_path / "boxed.npy").astype(int) - boxed).max()))
        worst_in = max(worst_in, float(np.abs(np.load(tmp_path / "input.npy") - preprocess([image], size)[0][0]).max()))
    print(f"letterbox C++ vs Python: max {worst_px} intensity levels, network input max {worst_in:.3g}")
    assert worst_px <= 1 and worst_in <= 1 / 255 + 1e-6


def test_decode_head_outputs(core, tmp_path):
    """Per-level raw outputs (class logits, DFL logits) -> scores and input-pixel boxes."""
    rs = np.random.RandomState(1)
    size, c, r = 96, 5, 16
    cls, box, args = [], [], []
    for i, s in enumerate((8, 16, 32)):
        n = size // s
        cls.append((rs.randn(1, c, n, n) * 3).astype(np.float32))
        box.append((rs.randn(1, 4 * r, n, n) * 4).astype(np.float32))
        np.save(tmp_path / f"c{i}.npy", cls[-1][0])
        np.save(tmp_path / f"b{i}.npy", box[-1][0])
        args += [tmp_path / f"c{i}.npy", tmp_path / f"b{i}.npy"]
    core("decode", "8,16,32", tmp_path / "s.npy", tmp_path / "x.npy", *args)
    scores, boxes = decode_head_outputs(cls, box)
    got_s, got_b = np.load(tmp_path / "s.npy"), np.load(tmp_path / "x.npy")
    assert got_s.shape == scores[0].shape == (144 + 36 + 9, c) and got_b.shape == boxes[0].shape
    ds, db = float(np.abs(got_s - scores[0]).max()), float(np.abs(got_b - boxes[0]).max())
    print(f"decode: max score diff {ds:.3g}, max box diff {db:.3g} px")
    assert ds <= 1e-6 and db <= 1e-3


def _raw_case(seed: int, size: int = 160, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Random (A, C) scores and (A, 4) input boxes, plus hand-made overlaps of two classes on top."""
    rs = np.random.RandomState(seed)
    a = sum((size // s) ** 2 for s in (8, 16, 32))
    centre = rs.uniform(0, size, (a, 2))
    half = rs.uniform(2, size / 4, (a, 2))
    boxes = np.concatenate([centre - half, centre + half], 1).astype(np.float32)
    scores = (rs.rand(a, c) ** 4).astype(np.float32)
    made = [  # (box, class, score)
        ([20, 20, 60, 60], 0, 0.95), ([20, 20, 60, 60], 1, 0.9),  # same box, two classes: both kept
        ([22, 21, 61, 60], 0, 0.85),  # IoU ~0.9 with the first: suppressed
        ([40, 40, 80, 80], 0, 0.8),  # IoU 1/7: kept
        ([100, 100, 140, 150], 1, 0.6), ([100, 104, 140, 150], 1, 0.6),  # a tie: input order decides
        ([100, 100, 140, 150], 2, 0.6), ([101, 100, 141, 150], 3, 0.55),
    ]
    for i, (b, cls, s) in enumerate(made):
        boxes[i] = b
        scores[i] = 0
        scores[i, cls] = s
    return scores, boxes


def _assert_same(got: np.ndarray, xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray) -> tuple[float, float]:
    """Same detections in the same order; returns (max box diff, max score diff)."""
    assert got.shape == (len(cls), 6), (got.shape, len(cls))
    assert np.array_equal(got[:, 5].astype(np.int64), cls)
    db = float(np.abs(got[:, :4] - xyxy).max(initial=0))
    ds = float(np.abs(got[:, 4] - score).max(initial=0))
    assert db <= 1e-3 and ds <= 1e-6, (db, ds)
    return db, ds


@pytest.mark.parametrize("h,w", [(480, 640), (100, 70), (160, 160), (33, 250)])
def test_postprocess_matches_sdk(core, tmp_path, h, w):
    """Candidates, stable sort, top-k, mapping back, class-aware (and agnostic) NMS, max_det, clipping."""
    size = 160
    scores, boxes = _raw_case(h * w, size)
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "b.npy", boxes)
    _, info = letterbox_geometry(h, w, size)
    worst = [0.0, 0.0]
    for conf, iou, max_det, agnostic, topk in [(0.25, 0.7, 300, False, 30000), (0.25, 0.7, 300, True, 30000),
                                               (0.05, 0.5, 7, False, 50), (0.5, 0.3, 300, False, 30000)]:
        core("postprocess", tmp_path / "s.npy", tmp_path / "b.npy", h, w, size, conf, iou, max_det, int(agnostic), topk,
             tmp_path / "out.npy")
        xyxy, score, cls = postprocess_image(scores, boxes, info, conf, iou, max_det, agnostic, topk)
        assert len(cls) >= min(7, max_det)
        candidates = int((scores > conf).sum())
        assert len(cls) < min(candidates, topk)  # NMS did suppress something
        worst = np.maximum(worst, _assert_same(np.load(tmp_path / "out.npy"), xyxy, score, cls))
    print(f"postprocess {h}x{w}: max box diff {worst[0]:.3g} px, max score diff {worst[1]:.3g}")


def test_nms_hand_made_overlaps():
    """The hand-made rows behave as intended in the SDK itself (so the C++ comparison above covers them)."""
    scores, boxes = _raw_case(0)
    keep = batched_nms(boxes[:8], scores[:8].max(1), scores[:8].argmax(1), 0.7)
    assert keep.tolist() == [0, 1, 3, 4, 6, 7]  # 2 suppressed by 0; 5 ties with 4 and loses by order


def test_classes_never_suppress_each_other(core, tmp_path):
    """A box below -1 px and another class's box far away both survive, in C++ as in the SDK (the float
    coordinate-offset trick of mmcv would shift the first onto the second: IoU 0.81)."""
    scores = np.array([[0.9, 0.0], [0.0, 0.8]], np.float32)
    boxes = np.array([[90, 90, 100, 100], [-10, -10, -1, -1]], np.float32)
    np.save(tmp_path / "s.npy", scores)
    np.save(tmp_path / "b.npy", boxes)
    _, info = letterbox_geometry(160, 160, 160)
    core("postprocess", tmp_path / "s.npy", tmp_path / "b.npy", 160, 160, 160, 0.25, 0.7, 10, 0, 30000,
         tmp_path / "out.npy")
    xyxy, score, cls = postprocess_image(scores, boxes, info, 0.25, 0.7, 10)
    assert cls.tolist() == [0, 1]
    _assert_same(np.load(tmp_path / "out.npy"), xyxy, score, cls)


def test_unpack_nms_outputs(core, tmp_path):
    rs = np.random.RandomState(3)
    k, num = 20, 13
    det_scores = np.sort(rs.rand(k).astype(np.float32))[::-1].copy()
    det_boxes = np.sort(rs.uniform(-20, 180, (k, 2, 2)), axis=1).transpose(0, 2, 1).reshape(k, 4).astype(np.float32)
    det_classes = rs.randint(0, 5, k).astype(np.int32)
    for name, arr in (("b", det_boxes), ("s", det_scores), ("c", det_classes)):
        np.save(tmp_path / f"{name}.npy", arr)
    raw = {"num_dets": np.array([[num]], np.int32), "det_boxes": det_boxes[None], "det_scores": det_scores[None],
           "det_classes": det_classes[None]}
    for (h, w), conf, max_det in [((480, 640), 0.3, 300), ((70, 100), 0.0, 5), ((160, 160), 0.9, 300)]:
        _, info = letterbox_geometry(h, w, 160)
        core("unpack", num, tmp_path / "b.npy", tmp_path / "s.npy", tmp_path / "c.npy", h, w, 160, conf, max_det,
             tmp_path / "out.npy")
        _assert_same(np.load(tmp_path / "out.npy"), *unpack_nms_outputs(raw, 0, info, conf, max_det))


def test_tensorrt_sample_skipped_with_a_reason(cpp_build):
    """Without CUDA + TensorRT 10 the TensorRT sample is skipped at configure time, saying why."""
    if cpp_build.exe("yoloworld_trt").exists():
        pytest.skip("TensorRT is available here: the sample was built")
    assert "skipping yoloworld_trt" in cpp_build.log


# ---------------------------------------------------------------------------------------------------
# the ONNX Runtime sample, end to end


IMAGE_SHAPES = [(160, 160), (200, 120), (70, 100), (33, 250), (300, 411), (480, 640), (97, 161)]


@pytest.fixture(scope="session")
def ort_exe(cpp_build) -> Path:
    """The built ONNX Runtime sample; requested before ``onnx_models`` so a skip costs no export."""
    exe = cpp_build.exe("yoloworld_ort")
    if not exe.exists():
        pytest.skip(cpp_build.skip_reason("yoloworld_ort"))
    return exe


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """A tiny calibrated model exported at imgsz 160 in the raw and the in-graph NMS form, and a folder
    of PNG images (shrink, enlarge, square, gray, 16-bit)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import torch
    from builders import make_official_state_dict

    from export.onnx_export import export_onnx
    from sdk.backends.torch import encode_texts
    from sdk.model import load_checkpoint
    from sdk.vocabulary import Vocabulary

    root = tmp_path_factory.mktemp("ort_sample")
    ckpt = root / "tiny.pth"
    torch.save({"meta": {}, "state_dict": make_official_state_dict("tiny", "v2")}, ckpt)
    model = load_checkpoint(ckpt)
    vocab = Vocabulary.from_any(["person", "red car", "a dog"])
    emb = vocab.embeddings(lambda t: encode_texts(model, None, t))
    paths = {}
    for form in ("raw", "nms"):
        paths[form] = root / f"{form}.onnx"
        export_onnx(model, vocab, emb, paths[form], imgsz=160, output_form=form, verify_batches=(1,),
                    nms=NmsSettings(conf=0.05), log=lambda *_: None)
    images = root / "images"
    images.mkdir()
    for i, (h, w) in enumerate(IMAGE_SHAPES):
        cv2.imwrite(str(images / f"img{i}.png"), _image(10 + i, h, w))
    cv2.imwrite(str(images / "gray.png"), cv2.cvtColor(_image(30, 150, 90), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "deep.png"), _image(31, 120, 180).astype(np.uint16) * 257 + 100)
    return paths, images


@pytest.mark.parametrize("form", ["raw", "nms"])
def test_ort_sample_matches_detector(ort_exe, cpp_build, onnx_models, tmp_path, form):
    """The C++ sample and sdk.Detector on the same export and images: same detections, same order."""
    from sdk import Detector

    exe = ort_exe
    paths, images = onnx_models
    out = tmp_path / "annotated"
    t0 = time.perf_counter()
    proc = run_checked([exe, paths[form], images, "--batch", 3, "--conf", 0.05, "--out", out])
    seconds = time.perf_counter() - t0
    got = json.loads(proc.stdout)
    ref = Detector(paths[form], conf=0.05, backend="onnxruntime").predict(images, batch_size=3)
    assert [Path(g["source"]).name for g in got] == [Path(r.data["source"]).name for r in ref]
    assert sum(len(r) for r in ref) > 20  # random calibrated weights give plenty at conf 0.05
    worst_box = worst_score = 0.0
    for g, r in zip(got, ref, strict=True):
        dets = g["detections"]
        assert tuple(g["image_hw"]) == r.data["image_hw"]
        assert len(dets) == len(r), (g["source"], len(dets), len(r))
        assert [d["class_id"] for d in dets] == r.class_id.tolist()
        assert [d["class_name"] for d in dets] == list(r.class_name)
        if dets:
            worst_box = max(worst_box, float(np.abs(np.array([d["xyxy"] for d in dets]) - r.xyxy).max()))
            worst_score = max(worst_score, float(np.abs(np.array([d["score"] for d in dets]) - r.confidence).max()))
    print(f"ORT sample ({form}): {sum(len(r) for r in ref)} detections on {len(ref)} images, max box diff "
          f"{worst_box:.3g} px, max score diff {worst_score:.3g}; C++ run {seconds:.2f} s; "
          f"build {cpp_build.seconds:.1f} s")
    assert worst_box <= 1e-3 and worst_score <= 1e-5
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(g['source']).stem}.jpg" for g in got)


def test_ort_sample_errors(ort_exe, onnx_models, tmp_path):
    exe = ort_exe
    paths, images = onnx_models
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(paths["raw"], lonely)  # no sidecar next to it
    for args, message in [([lonely, images], "no manifest"), ([paths["raw"], tmp_path / "nope.png"], "does not exist"),
                          ([paths["raw"], images, "--batch", 0], "--batch must be >= 1")]:
        proc = subprocess.run([str(a) for a in (exe, *args)], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
