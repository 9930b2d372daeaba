"""The code a decoding worker process runs: decode files straight into shared memory.

Imported in the worker processes of `varbench.metrics.decode_pool`; it stays free of
torch so that a worker starts quickly (see `imagefile`).
"""
from __future__ import annotations

import multiprocessing
import queue
import traceback
from multiprocessing.queues import Queue
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np

from varbench.errors import UserError
from varbench.metrics.imagefile import decode_array

PARENT_CHECK_SECONDS = 5
ATTACHED_BUFFERS = 8  # the main process keeps 3 at a time; older ones are only replaced
_attached: dict[str, SharedMemory] = {}


def serve(started: Barrier, tasks: Queue, results: Queue, exif_and_alpha: bool) -> None:
    """A worker's life: wait until all workers have started, then decode each task
    (batch number, task index, buffer name, jobs) from `tasks` until None, answering
    (batch number, task index, ("ok", shapes) or ("error", exception)) on `results`."""
    started.wait()
    parent = multiprocessing.parent_process()
    while True:
        try:
            task = tasks.get(timeout=PARENT_CHECK_SECONDS)
        except queue.Empty:
            # a parent killed without closing the pool (SIGKILL, terminate) sends no None:
            # exit rather than wait forever, holding its shared buffers
            if parent is not None and not parent.is_alive():
                return
            continue
        if task is None:
            return
        number, index, buffer, jobs = task
        try:
            answer: tuple[str, object] = ("ok", decode_into(buffer, jobs, exif_and_alpha))
        except UserError as err:  # a missing or corrupt file: the main process raises it
            answer = ("error", err)
        except Exception:  # a bug: its traceback as text, which always crosses the pipe
            answer = ("error", RuntimeError(f"in an image-decoding worker:\n{traceback.format_exc()}"))
        results.put((number, index, answer))


def decode_into(buffer: str, jobs: list[tuple[str, int, int]], exif_and_alpha: bool) -> list[tuple[int, int]]:
    """Decode each (path, offset, byte count) job into the shared buffer named `buffer`
    as uint8 (H, W, 3) rows; return each image's (height, width)."""
    memory = _attach(buffer)
    shapes = []
    for path, offset, nbytes in jobs:
        pixels = decode_array(Path(path), exif_and_alpha)
        if pixels.nbytes != nbytes:  # the header promised another size: a bug, not a user error
            raise RuntimeError(f"{path}: decoded {pixels.shape}, expected {nbytes} bytes from its header")
        np.ndarray(pixels.shape, np.uint8, memory.buf, offset)[...] = pixels
        shapes.append((pixels.shape[0], pixels.shape[1]))
    return shapes


def _attach(name: str) -> SharedMemory:
    if name not in _attached:
        if len(_attached) >= ATTACHED_BUFFERS:  # the oldest was replaced by a larger one long ago
            _attached.pop(next(iter(_attached))).close()
        _attached[name] = SharedMemory(name)
    return _attached[name]
