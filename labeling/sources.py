"""What to label: folders, image files and manifests expanded into ``(path, key)`` pairs.

A result is keyed by the image's path and a key that changes when its content may have: ``size-mtime``
(``os.stat``, cheap on millions of files) or a sha256 of the bytes (``key="hash"``; survives copies that
reset mtimes). A rerun skips images whose (path, key) already has a result; an image replaced since is
labeled again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdk.errors import YoloWorldError
from sdk.images import IMAGE_SUFFIXES
from sdk.manifest import file_sha256

KeyMode = Literal["stat", "hash"]
MANIFEST_SUFFIXES = {".txt", ".parquet"}


class SourceError(YoloWorldError):
    """A source that cannot be listed; the message names it."""


@dataclass(frozen=True)
class SourceImage:
    """One image to label: its absolute path and its content key."""

    path: str
    key: str


def list_sources(sources: Iterable[str | os.PathLike], key: KeyMode = "stat") -> list[SourceImage]:
    """Every image of ``sources``, sorted by path, each once. A folder is searched recursively for image
    files; a ``.txt`` manifest lists one path per line (``#`` comments, blank lines; relative to the
    manifest's folder); a ``.parquet`` manifest has a ``path`` column (needs pyarrow).
    Raises :class:`SourceError` naming a source that does not exist or holds no images, or a manifest
    entry that is missing."""
    paths: set[str] = set()
    for source in sources:
        src = Path(source)
        if src.is_dir():
            found = [p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
            if not found:
                raise SourceError(f"folder {str(src)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.update(os.path.abspath(p) for p in found)
        elif src.is_file() and src.suffix.lower() in MANIFEST_SUFFIXES:
            paths.update(_read_manifest(src))
        elif src.is_file():
            if src.suffix.lower() not in IMAGE_SUFFIXES:
                raise SourceError(f"{str(src)!r} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a "
                                  f"manifest (.txt, .parquet)")
            paths.add(os.path.abspath(src))
        else:
            raise SourceError(f"source {str(src)!r} does not exist")
    return [SourceImage(p, content_key(p, key)) for p in sorted(paths)]


def _read_manifest(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SourceError(f"{path}: reading a Parquet manifest needs pyarrow (pip install pyarrow)") from None
        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise SourceError(f"{path}: a Parquet manifest needs a 'path' column; it has {table.column_names}")
        entries = [str(p) for p in table.column("path").to_pylist() if p]
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(f"cannot read manifest {path}: {e}") from None
        entries = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    root = path.parent
    out = [os.path.abspath(root / Path(e).expanduser()) for e in entries]
    missing = [e for e, p in zip(entries, out, strict=True) if not os.path.isfile(p)]
    if missing:
        raise SourceError(f"{path}: {len(missing)} listed image(s) do not exist, e.g. {missing[:3]} "
                          f"(relative paths are relative to {root})")
    return out


def content_key(path: str, mode: KeyMode = "stat") -> str:
    """``"<size>-<mtime_ns>"`` or ``"sha256:<hex>"`` of the file's bytes."""
    if mode == "hash":
        return f"sha256:{file_sha256(path)}"
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}"


def common_root(paths: list[str]) -> str:
    """The deepest folder holding every path (COCO ``file_name``s are relative to it)."""
    if not paths:
        return os.getcwd()
    return os.path.commonpath([os.path.dirname(p) for p in paths])
