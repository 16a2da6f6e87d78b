"""What a model file knows about itself (input size, vocabulary, class names), and the one place that
decides which size and vocabulary a detector runs with from it and from what the user asked.

``Detector`` decides from its open backend; a labelling driver or a server decides the same way from
:func:`read_facts` before any runtime is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VocabularyError
from .manifest import Manifest, read_manifest
from .vocabulary import ClassesLike, PromptMerge, Vocabulary

#: Input size of official releases (every official config) and of own checkpoints that predate the record.
OFFICIAL_IMGSZ = 640
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class ModelFacts:
    """manifest: an export's (size, vocabulary, output form), None for a checkpoint. vocabulary /
    imgsz / class_names: what an own checkpoint stores (one prompt list per class, training size, the
    dataset's category names); None for exports and official releases."""

    manifest: Manifest | None = None
    vocabulary: list[list[str]] | None = None
    imgsz: int | None = None
    class_names: list[str] | None = None


def read_facts(weights: str | os.PathLike) -> ModelFacts:
    """The facts of a checkpoint (reads it with torch, builds no model) or of an export (its manifest)."""
    if Path(weights).suffix.lower() in CHECKPOINT_SUFFIXES:
        from .model.checkpoint import stored_facts  # torch, for checkpoints only

        return ModelFacts(**stored_facts(weights))
    return ModelFacts(manifest=read_manifest(weights))


def resolve_imgsz(imgsz: int | None, weights: str | os.PathLike, facts: ModelFacts) -> tuple[int, str]:
    """(input size, where it came from): an explicit ``imgsz`` wins where the model can run it; else an
    export's own size, a checkpoint's training size, or the official 640."""
    manifest = facts.manifest
    if manifest is not None:
        native = manifest.imgsz[0]
        if imgsz is None or imgsz == native:
            return native, "exported at"
        if manifest.dynamic_hw and imgsz < native:
            return imgsz, "option"
        raise ValueError(f"{weights} was exported at {native}x{native}"
                         + (" (inputs up to that size)" if manifest.dynamic_hw else " (that size only)")
                         + f"; imgsz {imgsz} needs a re-export with --imgsz {imgsz}")
    if imgsz is not None:
        return imgsz, "option"
    if facts.imgsz is not None:
        return int(facts.imgsz), "trained at"
    return OFFICIAL_IMGSZ, "official default"


def resolve_vocabulary(classes: ClassesLike | None, weights: str | os.PathLike, facts: ModelFacts,
                       merge: PromptMerge = "first", pad_prompt: bool = False) -> Vocabulary:
    """The vocabulary a detector runs: a folded export's own (``classes``, if given, must name the same
    classes); else ``classes``; else the vocabulary an own checkpoint stores, reported under its
    dataset's class names. ``VocabularyError`` names the file when none can be had."""
    manifest = facts.manifest
    if manifest is not None and not manifest.open_vocabulary:
        fixed = Vocabulary.from_any(manifest.prompts, manifest.prompt_merge, labels=manifest.class_names)
        given = Vocabulary.from_any(classes).names if classes is not None else None
        if given is not None and given not in (fixed.names, [p[0] for p in fixed.prompts]):
            raise VocabularyError(f"{weights} has its vocabulary folded in: {fixed.names}; the classes {given} "
                                  f"need another export (yoloworld-export)")
        return fixed
    if classes is None:
        if not facts.vocabulary:
            raise VocabularyError(f"{weights} stores no vocabulary; pass classes=[...] (--classes) or a "
                                  f"class-text JSON")
        # the dataset's category names ride along as the class names the results report
        classes = Vocabulary.from_any(facts.vocabulary, labels=facts.class_names)
    return Vocabulary.from_any(classes, merge, pad_prompt)
