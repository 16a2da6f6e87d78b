"""``python -m training.finetune --data X`` without ``--weights``: trains the tiny model (not S) unless
``--model`` says, says so at the start with why its vocabulary is closed, and a resumed run keeps the
size it started with."""

from __future__ import annotations

import argparse

import pytest
import yaml

from training.config import SCRATCH_MODEL, TrainConfig, add_arguments, resolve
from training.schedule import RunFacts, resolve_config, scratch_note


def parse(argv: list[str]) -> TrainConfig:
    return resolve(add_arguments(argparse.ArgumentParser()).parse_args(argv))


@pytest.mark.parametrize(("argv", "model"), [
    (["--data", "d.yaml"], "tiny"),  # neither --weights nor --model: the small default
    (["--data", "d.yaml", "--model", "s"], "s"),  # asked for
    (["--data", "d.yaml", "--weights", "w.pth"], None),  # the checkpoint decides the architecture
    (["--data", "d.yaml", "--weights", "w.pth", "--model", "m"], "m"),  # kept as the check it is
])
def test_model_when_training_from_scratch(argv, model):
    assert parse(argv).model == model
    assert SCRATCH_MODEL == "tiny"


@pytest.mark.parametrize(("saved", "model"), [
    ({"model": None, "weights": None}, "s"),  # started when the default was S, which recorded none
    ({"model": "m", "weights": None}, "m"),  # started with --model m
    ({"model": "tiny", "weights": None}, "tiny"),
])
def test_a_resumed_run_keeps_its_size(tmp_path, saved, model):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**TrainConfig().to_dict(), **saved}))
    assert parse(["--data", "d.yaml", "--resume", "--output", str(tmp_path)]).model == model
    assert parse(["--data", "d.yaml", "--output", str(tmp_path)]).model == "tiny"  # a new run: the default


def facts(size: str, pretrained: bool) -> RunFacts:
    return RunFacts(train_images=600, num_classes=6, has_polygons=False, arch_size=size, pretrained=pretrained,
                    cores=2)


@pytest.mark.parametrize(("cfg", "size", "pretrained", "says", "not_says"), [
    # the default: which model, why the vocabulary is closed, what to pass instead
    (TrainConfig(data="d.yaml", model="tiny"), "tiny", False,
     ["training the tiny model from scratch", "text tower", "6 classes only (a closed vocabulary)", "--weights"],
     ["--model tiny"]),
    # a big model from scratch: the small one is recommended too
    (TrainConfig(data="d.yaml", model="s"), "s", False, ["training the S model from scratch", "--model tiny"], []),
    (TrainConfig(data="d.yaml", weights="w.pth"), "s", True, None, None),  # pre-trained: nothing to say
    (TrainConfig(model="tiny"), "tiny", False, None, None),  # the demo: from scratch by design
])
def test_scratch_note(cfg, size, pretrained, says, not_says):
    note = scratch_note(cfg, facts(size, pretrained))
    if says is None:
        assert note is None
        return
    assert all(s in note for s in says), note
    assert not any(s in note for s in not_says), note
    _, _, warnings = resolve_config(cfg, facts(size, pretrained))
    assert warnings[0] == note  # printed first, at the start of the run


def test_finetune_says_what_it_trains(tmp_path, capsys):
    """The real command on a small set: the note on stderr before training, and the tiny model trained."""
    from training.finetune import main
    from training.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", num_train=4, num_val=2, size=64, seed=1)
    assert main(["--data", str(data), "--imgsz", "64", "--epochs", "1", "--batch-size", "2", "--workers", "0",
                 "--max-steps-per-epoch", "1", "--min-size", "0", "--output", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "warning: no --weights: training the tiny model from scratch" in err
    assert "closed vocabulary" in err and "--weights" in err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"] == "tiny"
