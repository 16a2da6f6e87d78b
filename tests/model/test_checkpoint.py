"""Official-format loading (strict, with clear errors) and the own format's exact round trip."""

from __future__ import annotations

import pickle

import pytest
import torch

from sdk import CheckpointError
from sdk.model import load_checkpoint, save_checkpoint, save_official_checkpoint, to_official_state_dict
from sdk.model.checkpoint import load_checkpoint_with_meta


@pytest.mark.parametrize("variant", ["v2", "v1", "efficient", "efficient_l2"])
def test_official_checkpoint_loads_every_key(tiny_checkpoints, variant):
    raw = torch.load(tiny_checkpoints[variant], weights_only=True)["state_dict"]
    model = load_checkpoint(tiny_checkpoints[variant])
    back = to_official_state_dict(model)
    assert list(back) == list(raw)  # same keys, same order: nothing dropped, nothing invented
    for key, value in raw.items():
        assert torch.equal(back[key], value), key
    assert (model.config.neck, model.config.head) == {
        "v2": ("vlpan", "bn"), "v1": ("dual_vlpan", "l2"), "efficient": ("efficient", "bn"),
        "efficient_l2": ("efficient", "l2")}[variant]


def test_position_ids_tolerated(tiny_checkpoints, tmp_path):
    sd = torch.load(tiny_checkpoints["v2"], weights_only=True)["state_dict"]
    sd["backbone.text_model.model.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save({"state_dict": sd}, tmp_path / "old.pth")
    load_checkpoint(tmp_path / "old.pth")


def _edited(tiny_checkpoints, tmp_path, edit):
    sd = dict(torch.load(tiny_checkpoints["v2"], weights_only=True)["state_dict"])
    edit(sd)
    path = tmp_path / "edited.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        # a missing key is named
        (lambda sd: sd.pop("neck.top_down_layers.0.attn_block.bias"),
         r"1 missing keys:\n    neck.top_down_layers.0.attn_block.bias"),
        # an unexpected key is named
        (lambda sd: sd.__setitem__("neck.extra.weight", torch.zeros(1)),
         r"1 unexpected keys:\n    neck.extra.weight"),
        # a shape mismatch names key and both shapes
        (lambda sd: sd.__setitem__("bbox_head.head_module.reg_preds.0.2.bias", torch.zeros(65)),
         r"reg_preds.0.2.bias: file \(65,\) vs model \(64,\)"),
        # not YOLO-World at all
        (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("backbone.image_model.")],
         "not a YOLO-World checkpoint"),
    ],
)
def test_mismatches_are_errors(tiny_checkpoints, tmp_path, edit, match):
    path = _edited(tiny_checkpoints, tmp_path, edit)
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path)
    assert "edited.pth" in str(err.value)


def test_truncated_and_foreign_files(tiny_checkpoints, tmp_path):
    data = tiny_checkpoints["v2"].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a YOLO-World checkpoint"):
        load_checkpoint(tmp_path / "other.pth")


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the payload is pickled at protocol 4 on purpose
def test_pickled_code_is_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(tmp_path / "evil.pth")


def test_own_format_round_trip(tiny_checkpoints, tmp_path):
    model = load_checkpoint(tiny_checkpoints["v1"])
    vocab = [["person", "human"], ["car"]]
    path = save_checkpoint(model, tmp_path / "run" / "best.pt", vocabulary=vocab)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary left behind
    again, meta = load_checkpoint_with_meta(path)
    assert again.config == model.config and meta["vocabulary"] == vocab
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 3, 96, 96)
    emb = model.encode_text(["person"])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x, emb).cls_logits, again(x, emb).cls_logits,
                                                      strict=True))
    # and back to the official layout, loadable as an official release
    save_official_checkpoint(again, tmp_path / "official.pth")
    third = load_checkpoint(tmp_path / "official.pth")
    assert all(torch.equal(a, b) for a, b in zip(third.state_dict().values(),
                                                  model.state_dict().values(), strict=True))


def test_failed_write_keeps_old_file(tiny_checkpoints, tmp_path, monkeypatch):
    model = load_checkpoint(tiny_checkpoints["v2"])
    path = save_checkpoint(model, tmp_path / "last.pt")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
