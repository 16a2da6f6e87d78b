"""Atomic writes with the permissions ``open()`` gives, staged output folders, early output-path errors."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest

from sdk.atomic import atomic_path, atomic_write_text, check_can_create, removed_on_failure, staged_dir


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_new_files_get_the_umask_permissions(tmp_path, mask):
    with umask(mask):
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "sub" / "b.bin") as tmp:
            tmp.write_bytes(b"x")
        with open(tmp_path / "plain.txt", "w") as f:  # what a plain open() gives, for comparison
            f.write("x")
    assert mode(tmp_path / "a.json") == mode(tmp_path / "sub" / "b.bin") == mode(tmp_path / "plain.txt")
    assert mode(tmp_path / "a.json") == 0o666 & ~mask


def test_replacing_keeps_the_old_mode_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    os.chmod(target, 0o640)
    with umask(0o077):
        atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_staged_dir_publishes_on_success_only(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError), staged_dir(out) as stage:
        (stage / "1.jpg").write_bytes(b"x")
        raise RuntimeError("the second image was corrupt")
    assert list(tmp_path.iterdir()) == []  # neither out, nor its parents, nor the staging folder
    with umask(0o027), staged_dir(out) as stage:
        (stage / "1.jpg").write_bytes(b"x")
        atomic_write_text(stage / "predictions.json", "{}")
    assert sorted(p.name for p in out.iterdir()) == ["1.jpg", "predictions.json"]
    assert mode(out / "predictions.json") == 0o640 and mode(out) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and list((tmp_path / "a" / "b").iterdir()) == [out]
    # an existing folder keeps what it had; a failure there changes nothing in it
    (out / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError), staged_dir(out) as stage:
        (stage / "1.jpg").write_bytes(b"y")
        raise RuntimeError
    assert (out / "1.jpg").read_bytes() == b"x" and sorted(p.name for p in out.iterdir()) == [
        "1.jpg", "mine.txt", "predictions.json"]
    with staged_dir(out) as stage:
        (stage / "1.jpg").write_bytes(b"z")
    assert (out / "1.jpg").read_bytes() == b"z" and (out / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_outputs_that_cannot_be_created_are_named(tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    bad = tmp_path / "file.txt" / "out" if where == "under_a_file" else "/proc/yoloworld-test/out"
    expected = "file.txt is a file" if where == "under_a_file" else "creating a f"
    with pytest.raises(OSError, match=expected) as err:
        check_can_create(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(OSError, match=expected), staged_dir(bad):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_removed_on_failure_removes_only_what_the_block_created(tmp_path):
    old, new, new_dir = tmp_path / "old.onnx", tmp_path / "new.onnx", tmp_path / "repo"
    old.write_text("keep")
    with pytest.raises(ValueError), removed_on_failure(old, new, new_dir):
        old.write_text("changed")
        new.write_text("half")
        (new_dir / "1").mkdir(parents=True)
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]
    with removed_on_failure(new):
        new.write_text("done")
    assert new.read_text() == "done"
