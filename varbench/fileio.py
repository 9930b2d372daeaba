"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary file in the same folder, is flushed to disk, then
renamed over the target (rename is atomic within one filesystem). A crash leaves at
most a stray `*.tmp-*` file, which readers ignore and `sweep_temporaries` removes.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(handle)` on a temp file next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + TMP_MARK, dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and caches may be shared
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_or_none(path: Path) -> Any:
    """A JSON file's content, or None when it is missing, not a regular file, or not
    valid UTF-8 JSON: for store files, where garbage must read as damage, not crash."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def write_png(path: Path, image: Any) -> None:
    """Save a PIL image as PNG atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())


def atomic_dir(final: Path, build: Callable[[Path], None]) -> None:
    """Build a folder under a temporary name, then rename it to `final`.

    An older `final` (e.g. a half-built one from before a crash) is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + TMP_MARK, dir=final.parent))
    try:
        build(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep_temporaries(folder: Path) -> int:
    """Remove temp files and folders left by crashed writers; returns how many."""
    removed = 0
    for path in Path(folder).rglob(f"*{TMP_MARK}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed
