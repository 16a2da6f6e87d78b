"""What the two stand-ins of the ``tensorrt`` module share (TensorRT 10/11 Python API names): the module
shell and an engine's IO-tensor introspection. The builder's stand-in (tests/export/test_tensorrt.py)
adds the network, parser and builder; the runtime's (tests/sdk/test_tensorrt_backend.py) runs the
engine's ONNX on ONNX Runtime. tests/test_tensorrt_api.py checks the names against real releases."""

from __future__ import annotations

import enum
import types
from collections.abc import Callable

import numpy as np

INPUT = "images"


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class Logger:
    WARNING = 2

    def __init__(self, severity):
        self.severity = severity


class FakeEngine:
    """``ICudaEngine``'s IO introspection: ``images`` in, ``names[1:]`` out, dtype names and shapes
    with the batch axis -1."""

    def __init__(self, names: list[str], dtypes: dict[str, str], item_shapes: dict[str, tuple[int, ...]]):
        self.names, self.dtypes, self.item_shapes = names, dtypes, item_shapes

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == INPUT else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_shape(self, name):
        return (-1, *self.item_shapes[name])


def module(version: str, on_plugins: Callable[[str], None] = lambda namespace: None) -> types.ModuleType:
    """A ``tensorrt`` module with ``__version__``, ``Logger``, ``TensorIOMode``, ``nptype`` and
    ``init_libnvinfer_plugins``; each stand-in adds the classes its code under test uses."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger, trt.TensorIOMode = Logger, TensorIOMode
    trt.nptype = lambda dtype: np.dtype(dtype).type

    def init_libnvinfer_plugins(logger, namespace):
        on_plugins(namespace)
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    return trt
