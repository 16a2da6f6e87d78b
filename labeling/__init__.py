"""Labeling image collections with text prompts, in one process or on a Ray cluster (``yoloworld-label``).

>>> from labeling import LabelJob, LabelSettings, label_collection  # doctest: +SKIP
>>> settings = LabelSettings("model.onnx", (("person",), ("car",)))  # doctest: +SKIP
>>> summary = label_collection(LabelJob(("photos/",), "labels", settings))  # doctest: +SKIP
"""

from .run import LabelJob, label_collection
from .worker import LabelSettings, LabelWorker

__all__ = ["LabelJob", "LabelSettings", "LabelWorker", "label_collection"]
