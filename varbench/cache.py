"""A shared, content-addressed cache of built things (class images, teacher pools).

`get_or_build(cache_dir, kind, key, build)` returns `cache_dir/kind/<hash of key>`,
building it once: under a file lock (so two workers never build the same entry) into a
temporary folder that is renamed into place when `build` returns. A crash mid-build
leaves no entry, and the next caller builds it again.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from varbench.fileio import TMP_MARK, atomic_dir, write_json
from varbench.hashing import content_hash

KEY_FILE = "key.json"


def get_or_build(cache_dir: Path, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
    final = Path(cache_dir) / kind / content_hash(key, length=16)
    if (final / KEY_FILE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / KEY_FILE).is_file():  # another worker finished it while we waited
            return final
        remove_dead_builds(final)

        def build_with_key(tmp: Path) -> None:
            build(tmp)
            write_json(tmp / KEY_FILE, key)  # written last: marks the entry complete

        atomic_dir(final, build_with_key)
    return final


def remove_dead_builds(final: Path) -> None:
    """Temporary folders of this entry left by a build that was killed (we hold its lock,
    so no live build owns them)."""
    for leftover in final.parent.glob(f"{final.name}{TMP_MARK}*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
