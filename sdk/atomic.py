"""Atomic file writes: write to a temporary file in the target folder, then rename over the target.

The temporary file is created the way a plain ``open(path, "w")`` creates a file (mode 0o666 less the
process umask), and an existing target's mode is kept, so what lands on disk has the permissions the
user expects: ``tempfile.mkstemp`` would give 0600 and leave a deployed model unreadable to a server
running as another user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path


def _create_like_open(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file in ``folder`` with a unique name, created with mode 0o666 (the kernel applies
    the umask, as for ``open(path, "w")``)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"cannot create a temporary file in {folder}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, else it is removed.

    Readers never see a half-written file, and an interrupted write leaves the old file intact.
    ``suffix`` ends the temporary name (writers that pick a format by extension need the real one).
    The result has the permissions ``open()`` would give: the umask's for a new file, the old mode for
    a file that is replaced.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_like_open(target.parent, f".{target.name}.", suffix)
    try:
        yield tmp
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _deepest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def check_can_create(folder: str | os.PathLike) -> None:
    """Fail early, with one line naming ``folder``, when files cannot be created in it (or in the folder
    that would hold it): a path under a file, a read-only or virtual file system such as ``/proc``.
    Creates nothing that stays."""
    folder = Path(folder)
    base = _deepest_existing(folder)
    if not base.is_dir():
        raise NotADirectoryError(f"cannot create output folder {folder}: {base} is a file")
    try:
        _create_like_open(base, ".yoloworld-probe-", "").unlink()
    except OSError as e:
        raise OSError(f"cannot write output to {folder}: creating a file in {base} failed ({e.strerror or e})"
                      ) from None


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder for everything a run writes into ``out``; on success its files
    are moved into ``out`` (created then, with its parents), on failure it is removed. A failed run
    leaves neither ``out`` nor anything in it.

    The staging folder sits in the deepest folder of ``out``'s path that exists, so the final moves are
    renames on one file system. Raises :class:`OSError` naming ``out`` when nothing can be written there
    (a path under a file, a read-only or virtual file system).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} exists and is not a folder")
    base = _deepest_existing(out)
    if not base.is_dir():
        raise NotADirectoryError(f"cannot create output folder {out}: {base} is a file")
    try:
        stage = Path(_mkdtemp_like_mkdir(base, f".{out.name or 'out'}.staging-"))
    except OSError as e:
        raise OSError(f"cannot create output folder {out}: creating a folder in {base} failed "
                      f"({e.strerror or e})") from None
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(stage.iterdir()):
            try:
                os.replace(item, out / item.name)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                shutil.move(str(item), str(out / item.name))  # out is a mount point: copy, then remove
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _mkdtemp_like_mkdir(folder: Path, prefix: str) -> str:
    """A new uniquely named folder in ``folder`` with mode 0o777 less the umask (as ``mkdir``), so
    what is moved out of it keeps the permissions a plain run would give."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return str(path)
    raise FileExistsError(f"cannot create a staging folder in {folder}")


@contextlib.contextmanager
def removed_on_failure(*paths: str | os.PathLike) -> Iterator[None]:
    """On an exception inside the block, delete those of ``paths`` (files or folders) that did not exist
    when it began: a run that writes several outputs leaves none of them half-made."""
    new = [Path(p) for p in paths if not os.path.lexists(p)]
    try:
        yield
    except BaseException:
        for p in new:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                p.unlink()
        raise
