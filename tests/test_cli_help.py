"""Every command-line option of every CLI says what it does (``--help`` lists no bare flags), and no
description shows RST markup from a docstring."""

from __future__ import annotations

import argparse
import importlib

import pytest


def _finetune_parser() -> argparse.ArgumentParser:
    from training.config import add_arguments

    return add_arguments(argparse.ArgumentParser(prog="python -m training.finetune"))


# (entry point, "module:function" building its parser)
PARSERS = [
    ("yoloworld-predict", "sdk.cli:predict_parser"),
    ("yoloworld-eval", "sdk.cli:eval_parser"),
    ("yoloworld-data", "sdk.cli:data_parser"),
    ("yoloworld-export", "export.main:parser"),
    ("yoloworld-label", "labeling.cli:label_parser"),
    ("yoloworld-bench", "bench.cli:bench_parser"),
    ("python -m training.finetune", "tests.test_cli_help:_finetune_parser"),
]

# (command, "module:main" that prints --help)
MAINS = [
    ("yoloworld-predict", "sdk.cli:predict_main"),
    ("yoloworld-eval", "sdk.cli:eval_main"),
    ("yoloworld-data", "sdk.cli:data_main"),
    ("yoloworld-export", "export.main:main"),
    ("yoloworld-label", "labeling.cli:label_main"),
    ("yoloworld-bench", "bench.cli:main"),
    ("python -m training.finetune", "training.finetune:main"),
]


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("command", "target"), PARSERS, ids=[c for c, _ in PARSERS])
def test_every_option_has_a_help_line(command, target):
    parser = _load(target)()
    bare = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not bare, f"{command}: options without a help line: {bare}"
    parser.format_help()  # a stray % in a help text fails here, not in front of a user


@pytest.mark.parametrize(("command", "target"), MAINS, ids=[c for c, _ in MAINS])
def test_help_shows_no_rst_markup(command, target, capsys):
    with pytest.raises(SystemExit) as exit_:
        _load(target)(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage:") and "``" not in text, f"{command} --help:\n{text[:2000]}"


IMGSZ_HELP = ("network input size, a multiple of 32; default: the size the model was trained or exported at "
              "(640 for official checkpoints)")


@pytest.mark.parametrize("target", ["export.main:parser", "labeling.cli:label_parser", "bench.cli:bench_parser"])
def test_imgsz_defaults_to_the_models_own_size(target):
    parser = _load(target)()
    imgsz = next(a for a in parser._actions if "--imgsz" in a.option_strings)
    assert imgsz.default is None and imgsz.help == IMGSZ_HELP
