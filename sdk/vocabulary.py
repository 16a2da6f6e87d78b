"""The vocabulary: class names, their prompts, and how several prompts per class are combined.

Official behaviour (``merge="first"``): each class is represented by its first prompt. ``"mean"``
averages the L2-normalised prompt embeddings of a class (then re-normalises); ``"max"`` feeds every
prompt to the model and takes, per class, the max of its prompts' scores. ``pad_prompt`` appends the
official demo's ``' '`` prompt; its detections are never reported.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np

from .errors import VocabularyError

PromptMerge = Literal["first", "mean", "max"]
PAD_PROMPT = " "
ClassesLike = Union[str, os.PathLike, Sequence[str], Sequence[Sequence[str]], "Vocabulary"]


def read_class_texts(path: str | os.PathLike) -> list[list[str]]:
    """A class-text JSON: a list with one entry per class, each a list of prompts (or a string)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabularyError(f"class-text file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VocabularyError(f"class-text file {str(path)!r} is not valid JSON: {e}") from None
    return _validate(data, source=str(path))


def _validate(data: object, source: str) -> list[list[str]]:
    if not isinstance(data, list) or not data:
        raise VocabularyError(f"{source}: expected a non-empty list of classes, each a list of "
                              f"prompts like [[\"person\"], [\"car\", \"automobile\"]]; got "
                              f"{type(data).__name__ if data else 'an empty list'}")
    out = []
    for i, entry in enumerate(data):
        prompts = [entry] if isinstance(entry, str) else entry
        if not isinstance(prompts, list) or not prompts or not all(
                isinstance(p, str) and p.strip() for p in prompts):
            raise VocabularyError(f"{source}: class {i} is {entry!r}; expected a non-empty string "
                                  f"or a non-empty list of non-empty strings")
        out.append(list(prompts))
    return out


@dataclass(frozen=True)
class Vocabulary:
    """Classes in label order; ``prompts[i]`` are class i's prompts. ``labels``: the class names results
    and evaluation report (a dataset's category names, which its prompts need not start with); None:
    each class's first prompt."""

    prompts: tuple[tuple[str, ...], ...]
    merge: PromptMerge = "first"
    pad_prompt: bool = False
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _validate([list(p) for p in self.prompts], source="vocabulary")
        if self.merge not in ("first", "mean", "max"):
            raise VocabularyError(f"prompt merge {self.merge!r}; expected 'first', 'mean' or 'max'")
        if self.labels is not None and (len(self.labels) != len(self.prompts) or not all(
                isinstance(n, str) and n.strip() for n in self.labels)):
            raise VocabularyError(f"vocabulary: {len(self.prompts)} classes need as many non-empty class names; "
                                  f"got {list(self.labels)[:10]}")

    @classmethod
    def from_any(cls, classes: ClassesLike, merge: PromptMerge = "first", pad_prompt: bool = False,
                 labels: Sequence[str] | None = None) -> Vocabulary:
        """From a Vocabulary, a class-text JSON path, ``"a,b,c"``, or a list of names / prompt lists;
        ``labels`` (class names) default to a Vocabulary's own, else to the first prompts."""
        if isinstance(classes, Vocabulary):
            return cls(classes.prompts, merge, pad_prompt, tuple(labels) if labels else classes.labels)
        if isinstance(classes, os.PathLike) or (
                isinstance(classes, str) and classes.lower().endswith(".json")):
            data = read_class_texts(classes)
        elif isinstance(classes, str):
            data = _validate([c.strip() for c in classes.split(",") if c.strip()] or [],
                             source="classes string")
        else:
            data = _validate(list(classes) if classes is not None else None, source="classes")
        return cls(tuple(tuple(p) for p in data), merge, pad_prompt, tuple(labels) if labels else None)

    @property
    def names(self) -> list[str]:
        """Class names in label order: ``labels``, else the first prompts."""
        return list(self.labels) if self.labels is not None else [p[0] for p in self.prompts]

    def __len__(self) -> int:
        return len(self.prompts)

    def model_texts(self) -> list[str]:
        """Texts to encode, in order: first prompts, or all prompts (mean/max), then the pad."""
        texts = [p[0] for p in self.prompts] if self.merge == "first" else \
            [t for p in self.prompts for t in p]
        return texts + ([PAD_PROMPT] if self.pad_prompt else [])

    def embeddings(self, encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Text embeddings fed to the model: float32 ``(T, D)``, L2-normalised, T = model columns."""
        emb = np.asarray(encode(self.model_texts()), dtype=np.float32)
        if self.merge != "mean":
            return emb
        groups = np.cumsum([0] + [len(p) for p in self.prompts])
        merged = np.stack([emb[a:b].mean(0) for a, b in itertools.pairwise(groups)])
        merged /= np.linalg.norm(merged, axis=1, keepdims=True)
        return np.concatenate([merged, emb[groups[-1]:]]).astype(np.float32)  # pad row kept

    def reduce_scores(self, scores: np.ndarray) -> np.ndarray:
        """Model score columns ``(..., T)`` -> class scores ``(..., C)``: max over a class's prompts
        for ``merge="max"``; the padding column dropped."""
        if self.merge == "max":
            starts = np.cumsum([0] + [len(p) for p in self.prompts[:-1]])
            return np.maximum.reduceat(scores[..., : starts[-1] + len(self.prompts[-1])], starts,
                                       axis=-1)
        return scores[..., : len(self.prompts)]
