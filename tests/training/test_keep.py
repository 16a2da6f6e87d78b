"""--keep-vocabulary: the distillation targets and loss, weight interpolation, which classes are kept, and
a short run whose checkpoint keeps its vocabulary, prompts old and new classes together and resumes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sdk import Detector
from sdk.errors import YoloWorldError
from sdk.model import HeadOutputs, build_model, get_config
from sdk.model.checkpoint import load_checkpoint_with_meta, save_checkpoint
from tests.training.test_finetune import SMALL
from training.finetune import main
from training.keep import (
    COCO_NAMES,
    KeepTeacher,
    binary_kl,
    guide_mask,
    interpolate_checkpoint,
    interpolate_state,
    resolve_kept_vocabulary,
    split_kept,
)
from training.loss import YoloWorldLoss
from training.synthetic import CLASSES, OTHER_CLASSES, make_shapes_dataset


def test_binary_kl_hand_computed():
    # teacher p = 0.75 (logit ln 3), student q = 0.5: 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = binary_kl(torch.tensor([0.0, 2.0, -3.0]), torch.tensor([math.log(3.0), 2.0, -3.0]))
    torch.testing.assert_close(got, torch.tensor([expected, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert expected == pytest.approx(0.130812, abs=1e-6)
    # its gradient is the soft-target BCE's: sigmoid(s) - sigmoid(t)
    s = torch.tensor([0.3, -1.0], requires_grad=True)
    t = torch.tensor([1.0, -2.0])
    binary_kl(s, t).sum().backward()
    torch.testing.assert_close(s.grad, s.detach().sigmoid() - t.sigmoid())


def test_interpolation_hand_computed():
    start = {"w": torch.tensor([0.0, 2.0]), "bn.num_batches_tracked": torch.tensor(5)}
    tuned = {"w": torch.tensor([4.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    mid = interpolate_state(start, tuned, 0.25)
    torch.testing.assert_close(mid["w"], torch.tensor([1.0, 3.0]))  # 0.75 * start + 0.25 * tuned
    assert int(mid["bn.num_batches_tracked"]) == 9  # integer buffers: the fine-tuned model's
    assert torch.equal(interpolate_state(start, tuned, 1.0)["w"], tuned["w"])
    assert torch.equal(interpolate_state(start, tuned, 0.0)["w"], start["w"])
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state(start, tuned, 1.5)
    with pytest.raises(ValueError, match="differ in parameters"):
        interpolate_state({"w": start["w"]}, tuned, 0.5)


def test_interpolated_checkpoint_keeps_what_the_fine_tuned_one_records(tmp_path):
    a, b = build_model(get_config("tiny")), build_model(get_config("tiny"))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn_like(p))
    save_checkpoint(a, tmp_path / "a.pt")
    save_checkpoint(b, tmp_path / "b.pt", vocabulary=[["cat"]], imgsz=320)
    out = interpolate_checkpoint(tmp_path / "a.pt", tmp_path / "b.pt", 0.5, tmp_path / "mid.pt")
    model, meta = load_checkpoint_with_meta(out)
    assert meta["vocabulary"] == [["cat"]] and meta["imgsz"] == 320 and meta["interpolated"]["alpha"] == 0.5
    name = "head.reg_preds.0.0.conv.weight"
    expected = (a.state_dict()[name] + b.state_dict()[name]) / 2
    torch.testing.assert_close(model.state_dict()[name], expected)


def test_which_classes_are_kept(tmp_path):
    trained = [["cyan ring"], ["Red_Circle"]]
    own = {"vocabulary": [["red circle", "red disk"], ["green square"]], "kept_vocabulary": [["blue star"]]}
    # the checkpoint's own classes and the ones it kept before, less those trained now (by name)
    assert resolve_kept_vocabulary("auto", own, trained) == [["green square"], ["blue star"]]
    assert resolve_kept_vocabulary("auto", {"format": "official"}, trained) == [[n] for n in COCO_NAMES]
    assert resolve_kept_vocabulary("cat, dog ,cat", {}, trained) == [["cat"], ["dog"]]
    path = tmp_path / "keep.json"
    path.write_text(json.dumps([["bus", "coach"], ["cyan ring"]]))
    assert resolve_kept_vocabulary(str(path), {}, trained) == [["bus", "coach"]]
    with pytest.raises(YoloWorldError, match="no class to keep"):
        resolve_kept_vocabulary("cyan ring", {}, trained)


def test_teacher_targets_are_the_starting_models_scores_for_the_kept_slots():
    from tests.calibrate import calibrate_random_model

    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    kept = torch.nn.functional.normalize(torch.randn(5, 512), dim=-1)
    # calibrated: a random model's neck attention saturates, and the guide mask would change nothing
    model = calibrate_random_model(build_model(get_config("tiny")), images, kept)
    teacher = KeepTeacher(model, kept, per_step=3, seed=0)
    with torch.no_grad():  # training changes the student; the teacher is a copy
        next(model.parameters()).add_(1.0)
    rows = teacher.sample()
    assert rows.shape == (3, 512) and all(any(torch.equal(r, k) for k in kept) for r in rows)
    texts = torch.cat([torch.nn.functional.normalize(torch.randn(2, 4, 512), dim=-1), rows.expand(2, -1, -1)], 1)
    guide = guide_mask(7, 3, torch.device("cpu"))
    assert guide.tolist() == [True] * 4 + [False] * 3
    targets = teacher.targets(images, texts, guide)
    with torch.no_grad():
        reference = teacher.model(images, texts, guide_mask=guide).cls_logits
        unguided = teacher.model(images, texts).cls_logits
    assert [t.shape for t in targets] == [(2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2)]
    for t, r, u in zip(targets, reference, unguided, strict=True):
        torch.testing.assert_close(t, r[:, -3:], rtol=0, atol=0)
        assert float((t - u[:, -3:]).abs().max()) > 1e-3  # the kept slots do not guide the neck
    assert all(not p.requires_grad for p in teacher.model.parameters())


def test_kept_slots_leave_the_detection_loss_alone_and_add_the_kl():
    """The loss of the trained texts is the loss without kept slots; the kept part is 0 when the
    student agrees with the teacher and the classification-weighted KL sum otherwise."""
    torch.manual_seed(0)
    b, t, k, r = 2, 3, 2, 16
    shapes = [(8, 8), (4, 4), (2, 2)]
    out = HeadOutputs([torch.randn(b, t + k, h, w) for h, w in shapes],
                      [torch.randn(b, 4 * r, h, w) for h, w in shapes])
    main_out, student = split_kept(out, k)
    labels = torch.tensor([[0], [2]])
    boxes = torch.tensor([[[4.0, 4.0, 30.0, 30.0]], [[10.0, 8.0, 40.0, 50.0]]])
    mask = torch.ones(b, 1, dtype=torch.bool)
    loss_fn = YoloWorldLoss()
    plain_total, plain = loss_fn(main_out, labels, boxes, mask)
    total, parts = loss_fn(main_out, labels, boxes, mask, kept=(student, [s.clone() for s in student]))
    assert parts["keep"] == 0 and torch.equal(parts["cls"], plain["cls"]) and torch.equal(total, plain_total)
    teacher = [s + 1.0 for s in student]
    total, parts = loss_fn(main_out, labels, boxes, mask, kept=(student, teacher))
    assert float(parts["keep"]) > 0
    # no objects: the normaliser (sum of assigned scores) is its floor 1, so the part is 0.5 x batch x KL sum
    kl = sum(float(binary_kl(s, tt).sum()) for s, tt in zip(student, teacher, strict=True))
    _, empty = loss_fn(main_out, labels, boxes, torch.zeros_like(mask), kept=(student, teacher))
    assert float(empty["keep"]) == pytest.approx(0.5 * b * kl, rel=1e-5)
    torch.testing.assert_close(total, plain_total + parts["keep"])


def test_kept_slots_are_not_distilled_inside_labelled_boxes():
    """Inside a labelled box the new label wins; the KL counts the anchors outside every box."""
    student = [torch.zeros(1, 1, 2, 2)]
    teacher = [torch.full((1, 1, 2, 2), math.log(3.0))]  # KL 0.130812 per anchor (hand-computed above)
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0]])  # row-major, as flattened
    box = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])  # holds the first anchor only
    per_anchor = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    got = YoloWorldLoss.keep_loss((student, teacher), points, box, torch.ones(1, 1, dtype=torch.bool))
    assert float(got) == pytest.approx(3 * per_anchor, rel=1e-6)
    unused = YoloWorldLoss.keep_loss((student, teacher), points, box, torch.zeros(1, 1, dtype=torch.bool))
    assert float(unused) == pytest.approx(4 * per_anchor, rel=1e-6)  # a padding box masks nothing


@pytest.fixture(scope="module")
def start_and_data(tmp_path_factory):
    """A starting checkpoint that records a vocabulary (the four demo shapes) and a user set of other
    classes whose images also hold unannotated demo shapes."""
    root = tmp_path_factory.mktemp("keep")
    model = build_model(get_config("tiny"))
    start = save_checkpoint(model, root / "start.pt", vocabulary=[c[2] for c in CLASSES], imgsz=128)
    user = make_shapes_dataset(root / "user", num_train=8, num_val=4, size=128, seed=2, classes=OTHER_CLASSES,
                               style="dark", distractors=CLASSES)
    old = make_shapes_dataset(root / "old", num_train=2, num_val=4, size=128, seed=3)
    return start, user, old


def test_keep_vocabulary_run_stores_resumes_and_prompts_old_and_new(start_and_data, tmp_path, capsys):
    start, user, old = start_and_data
    out = tmp_path / "run"
    common = [*SMALL[2:], "--weights", str(start), "--data", str(user), "--epochs", "2", "--close-mosaic", "1",
              "--keep-vocabulary", "--keep-val", str(old), "--output", str(out)]
    assert main([*common, "--stop-after-steps", "3"]) == 130
    assert main([*common, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "keeping 4 classes of the starting model (red circle, green square" in printed
    assert "kept vocabulary" in printed  # the summary gives both APs
    kept = [c[2] for c in CLASSES]
    assert json.loads((out / "kept_vocabulary.json").read_text()) == kept
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"loss_keep", "mAP", "mAP_kept"} <= set(header) and len(rows) == 3
    keep_losses = [float(r.split(",")[header.index("loss_keep")]) for r in rows[1:]]
    assert all(np.isfinite(keep_losses)) and max(keep_losses) > 0
    for name in ("best.pt", "last.pt"):
        _, meta = load_checkpoint_with_meta(out / name)
        assert meta["vocabulary"] == [c[2] for c in OTHER_CLASSES] and meta["kept_vocabulary"] == kept
    # the default vocabulary is the trained one; old and new classes can be prompted together
    det = Detector(out / "best.pt")
    assert det.class_names == [c[1] for c in OTHER_CLASSES]
    det.set_classes([c[1] for c in OTHER_CLASSES + CLASSES])
    image = np.full((128, 128, 3), 90, np.uint8)
    assert len(det.predict(image, conf=0.0)[0]) > 0
    # the next run keeps the old classes and the ones trained here
    again = resolve_kept_vocabulary("auto", load_checkpoint_with_meta(out / "best.pt")[1], [["cyan ring"]])
    assert [ps[0] for ps in again] == [c[1] for c in OTHER_CLASSES[1:] + CLASSES]
    # and the export folds old and new classes in
    from export.main import main as export

    both = ",".join(c[1] for c in OTHER_CLASSES + CLASSES)
    assert export(["--weights", str(out / "best.pt"), "--classes", both, "--output", str(tmp_path / "m.onnx")]) == 0
    exported = Detector(tmp_path / "m.onnx")
    assert exported.class_names == both.split(",") and exported.imgsz == det.imgsz == 128


@pytest.mark.parametrize("extra, message", [
    (["--mode", "efficient"], "closes the vocabulary"),
    (["--mode", "prompt"], "--mode prompt"),
])
def test_keep_vocabulary_refuses_what_cannot_keep(start_and_data, tmp_path, capsys, extra, message):
    start, user, _ = start_and_data
    out = tmp_path / "x"
    assert main([*SMALL[2:], "--weights", str(start), "--data", str(user), "--keep-vocabulary", *extra,
                 "--output", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_keep_vocabulary_needs_weights(start_and_data, tmp_path, capsys):
    _, user, _ = start_and_data
    assert main([*SMALL, "--data", str(user), "--keep-vocabulary", "--output", str(tmp_path / "x")]) == 2
    assert "needs --weights" in capsys.readouterr().err
