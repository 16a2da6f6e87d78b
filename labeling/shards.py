"""Result shards: ``DIR/shards/part-*.jsonl``, one JSON record per line, each file written atomically.

A shard appears whole or not at all (temporary file, then rename), so a run killed at any moment loses
only the results not yet flushed, and a rerun labels exactly those images. ``settings.json`` beside the
shards records the settings that made them: results made with other settings are never mixed in.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.atomic import atomic_write_text
from sdk.errors import YoloWorldError

SETTINGS_FILE = "settings.json"


class ShardError(YoloWorldError):
    """Existing shards that cannot be continued (other settings, duplicate results); names the files."""


class ShardWriter:
    """Buffers records and writes them as one shard when ``max_records`` are buffered or ``max_seconds``
    passed since the last write (and on :meth:`flush`)."""

    def __init__(self, folder: str | os.PathLike, max_records: int = 1000, max_seconds: float = 30.0) -> None:
        self.folder = Path(folder)
        self.max_records, self.max_seconds = max_records, max_seconds
        self._buffer: list[dict[str, Any]] = []
        self._last = time.monotonic()
        self.written = 0  # records in shards written by this writer

    def add(self, records: list[dict[str, Any]]) -> None:
        self._buffer.extend(records)
        if len(self._buffer) >= self.max_records or time.monotonic() - self._last >= self.max_seconds:
            self.flush()

    def __len__(self) -> int:
        """Records buffered, not yet in a shard."""
        return len(self._buffer)

    def flush(self) -> None:
        if self._buffer:
            name = f"part-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.jsonl"
            atomic_write_text(self.folder / name, "".join(json.dumps(r) + "\n" for r in self._buffer))
            self.written += len(self._buffer)
            self._buffer = []
        self._last = time.monotonic()


@dataclass
class ShardIndex:
    """Every record of a shard folder by path: ``records[path]`` lists ``(shard name, record)``; ``bad``
    names the shards that could not be read (set aside as ``*.bad``; their images are labeled again)."""

    records: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)

    def result(self, path: str, key: str) -> dict[str, Any] | None:
        """The one record of (path, key); :class:`ShardError` when there are several."""
        found = [(name, r) for name, r in self.records.get(path, ()) if r.get("key") == key]
        if len(found) > 1:
            raise ShardError(f"{path} has {len(found)} results (in {sorted(n for n, _ in found)}); each image "
                             f"must have exactly one: remove the duplicate shard(s) or start a new --out")
        return found[0][1] if found else None

    def __len__(self) -> int:
        return sum(len(v) for v in self.records.values())


def read_shards(folder: str | os.PathLike) -> ShardIndex:
    """Read every ``part-*.jsonl`` of ``folder`` (a missing folder is empty). A shard with a line that is
    not a record is renamed ``<name>.bad`` and reported, never half-used."""
    index = ShardIndex()
    folder = Path(folder)
    if not folder.is_dir():
        return index
    for shard in sorted(folder.glob("part-*.jsonl")):
        try:
            records = [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines() if line]
            if not all(isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("key"), str)
                       for r in records):
                raise ValueError("a line without 'path' and 'key'")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            os.replace(shard, shard.with_name(shard.name + ".bad"))
            index.bad.append(f"{shard.name} ({e})")
            continue
        for r in records:
            index.records.setdefault(r["path"], []).append((shard.name, r))
    return index


def check_settings(folder: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
    """Record ``fingerprint`` beside new shards, or check that existing shards were made with it.
    A lower score floor than the shards were made with cannot be served from them either."""
    folder = Path(folder)
    path = folder / SETTINGS_FILE
    if not path.exists():
        if any(folder.glob("part-*.jsonl")):
            raise ShardError(f"{folder} holds shards but no {SETTINGS_FILE}; start a new --out")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(fingerprint, indent=1))
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"cannot read {path}: {e}") from None
    changed = {k: (old.get(k), v) for k, v in fingerprint.items() if k != "conf" and old.get(k) != v}
    if changed:
        what = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(changed.items()))
        raise ShardError(f"the results in {folder} were made with other settings ({what}); use the same "
                         f"settings to continue, or a new --out")
    if fingerprint["conf"] < old.get("conf", 0.0):
        raise ShardError(f"the results in {folder} hold detections scoring >= {old['conf']} only; a threshold "
                         f"of {fingerprint['conf']} needs a new --out")
