"""Per-cell locks, so two `varbench run` processes never work on the same cell.

The lock is an OS file lock (flock through `filelock`): the kernel releases it when its
process dies, even by SIGKILL, so a lock left by a dead process is recovered simply by
the next attempt succeeding. An `owner.json` beside it says who holds it, for
`varbench status`.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from varbench.fileio import read_json, write_json

LOCK_NAME = ".lock"
OWNER_NAME = "owner.json"


@contextmanager
def cell_lock(cell_dir: Path, session: str) -> Iterator[bool]:
    """Try to take the cell's lock without waiting; yields whether it was taken."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cell_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        write_json(cell_dir / OWNER_NAME, {"pid": os.getpid(), "host": socket.gethostname(), "session": session})
        yield True
    finally:
        (cell_dir / OWNER_NAME).unlink(missing_ok=True)
        lock.release()


def is_locked(cell_dir: Path) -> bool:
    """Whether a live process holds the cell's lock right now."""
    if not (cell_dir / LOCK_NAME).exists():
        return False
    lock = FileLock(str(cell_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def owner(cell_dir: Path) -> dict | None:
    return read_json(cell_dir / OWNER_NAME)
