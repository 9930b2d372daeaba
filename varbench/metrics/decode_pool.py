"""Decoding in worker processes, into shared memory the GPU copies from directly.

Why processes: one core of an H100 host decodes ~130 512x512 PNGs/s with libpng, and
decoding threads topped out at ~1,250 images/s on 16 cores (GIL hand-offs with the main
thread; benchmarks/NOTES-scoring.md). Worker processes decode with libspng (faster, but
it holds the GIL, so it only pays in processes) and write the pixels straight into a
shared-memory buffer ("arena") that this process has registered with CUDA as
page-locked: a batch of same-size images reaches the GPU in one asynchronous copy, with
no copy on the host at all.

Batches take the pool's buffers in turn; before workers write into a buffer again, the
copy out of its previous batch must have finished (a CUDA event).
"""
from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varbench.metrics.decode_worker import serve
from varbench.metrics.imagefile import decoded_size
from varbench.provenance import usable_cores

STARTUP_SECONDS = 300
WORKER_CHECK_SECONDS = 30  # how long to wait for an answer before checking that the workers live
IMAGES_PER_TASK = 8  # small enough to balance the workers, large enough to amortise a task's IPC


def default_workers() -> int:
    """$VARBENCH_DECODE_WORKERS, else one worker per usable core: the main process mostly
    waits for the workers (on a 16-core H100 host, 16 workers scored 2,180-2,220 images/s,
    15 workers 1,990). The local launcher sets the variable so that the processes of
    several GPUs on one host share its cores."""
    if os.environ.get("VARBENCH_DECODE_WORKERS"):
        return max(1, int(os.environ["VARBENCH_DECODE_WORKERS"]))
    return max(1, min(32, usable_cores()))


class Arena:
    """One shared-memory buffer, page-locked for CUDA when `pin` is set."""

    def __init__(self, nbytes: int, pin: bool):
        self.memory = SharedMemory(create=True, size=nbytes)
        self.tensor = torch.frombuffer(self.memory.buf, dtype=torch.uint8)
        self.pinned = pin and _register(self.tensor)
        self.copied: torch.cuda.Event | None = None  # recorded after the last copy out of it

    @property
    def nbytes(self) -> int:
        return self.tensor.numel()

    def ready(self) -> None:
        """Wait until the previous batch has left the buffer, so workers may overwrite it."""
        if self.copied is not None:
            self.copied.synchronize()
            self.copied = None

    def upload(self, offsets: list[int], shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The same-size images at `offsets` as one uint8 (N, H, W, 3) tensor on `device`."""
        size = shape[0] * shape[1] * 3
        if all(offset == offsets[0] + index * size for index, offset in enumerate(offsets)):
            host = self.tensor[offsets[0]:offsets[0] + len(offsets) * size]
        else:  # images of several sizes interleaved: gather this size's rows first
            host = torch.cat([self.tensor[offset:offset + size] for offset in offsets])
            if device.type == "cuda":
                host = host.pin_memory()
        host = host.view(len(offsets), shape[0], shape[1], 3)
        if device.type != "cuda":
            return host.to(device, copy=True)  # never hand out a view of a buffer that gets reused
        return host.to(device, non_blocking=True)

    def record_copy(self, device: torch.device) -> None:
        if device.type == "cuda":
            self.copied = torch.cuda.Event()
            self.copied.record(torch.cuda.current_stream(device))

    def close(self) -> None:
        self.ready()
        if self.pinned:
            torch.cuda.cudart().cudaHostUnregister(self.tensor.data_ptr())
        del self.tensor  # the tensor exports the buffer; it must go before the mapping closes
        self.memory.close()
        self.memory.unlink()


@dataclass
class PendingBatch:
    number: int
    arena: Arena
    offsets: list[int]
    tasks: int
    # task index -> ("ok", [(height, width), ...]) or ("error", exception)
    answers: dict[int, tuple[str, Any]] = field(default_factory=dict)


class DecodePool:
    """Worker processes that decode batches of images into rotating shared buffers.

    The workers read tasks from one queue and answer on another; this process reads the
    answers only when it needs a batch. (A `ProcessPoolExecutor` feeds its workers from a
    thread that needs the GIL for every task; while the main thread launched the
    encoders, the workers ran dry, and scoring reached 1,500 images/s where decoding
    alone reached 2,000.)"""

    def __init__(self, workers: int, exif_and_alpha: bool, arenas: int):
        begun = time.perf_counter()
        self.workers = workers
        self.exif_and_alpha = exif_and_alpha
        # spawn, not fork: this process runs CUDA and threads, which a fork must not copy
        context = multiprocessing.get_context("spawn")
        started = context.Barrier(workers + 1)
        self.tasks, self.results = context.Queue(), context.Queue()
        self.processes = [context.Process(target=serve, args=(started, self.tasks, self.results, exif_and_alpha),
                                          name=f"varbench-decode-{index}", daemon=True)
                          for index in range(workers)]
        self.arenas: list[Arena | None] = [None] * arenas
        # also at garbage collection and interpreter exit: shared buffers outlive a process
        # that forgets to close them (until reboot), so they must not depend on close()
        self._finalizer = weakref.finalize(self, _release, self.processes, self.tasks, self.arenas)
        for process in self.processes:
            process.start()
        try:  # every worker has imported its modules: none boots beside the first batches
            started.wait(timeout=STARTUP_SECONDS)
        except threading.BrokenBarrierError:
            self.close()
            raise RuntimeError(f"{workers} image-decoding worker processes did not start within "
                               f"{STARTUP_SECONDS} s") from None
        self.start_seconds = time.perf_counter() - begun
        self._numbers = itertools.count()
        self._open: dict[int, PendingBatch] = {}  # submitted batches still missing answers

    def submit(self, paths: Sequence[Path], slot: int, device: torch.device) -> PendingBatch:
        """Start decoding `paths` into arena `slot` (sized from the files' headers)."""
        sizes = [width * height * 3 for width, height in (decoded_size(p, self.exif_and_alpha) for p in paths)]
        offsets = [int(offset) for offset in np.cumsum([0] + sizes[:-1])]
        arena = self._arena(slot, sum(sizes), device)
        jobs = [(str(path), offset, size) for path, offset, size in zip(paths, offsets, sizes)]
        # at most IMAGES_PER_TASK, but every worker gets a share of a small batch
        per_task = max(1, min(IMAGES_PER_TASK, math.ceil(len(jobs) / self.workers)))
        chunks = [jobs[start:start + per_task] for start in range(0, len(jobs), per_task)]
        batch = PendingBatch(next(self._numbers), arena, offsets, len(chunks))
        self._open[batch.number] = batch
        for index, chunk in enumerate(chunks):
            self.tasks.put((batch.number, index, arena.memory.name, chunk))
        return batch

    def _arena(self, slot: int, nbytes: int, device: torch.device) -> Arena:
        arena = self.arenas[slot]
        if arena is not None and arena.nbytes >= nbytes:
            arena.ready()
            return arena
        if arena is not None:
            arena.close()
        self.arenas[slot] = Arena(max(nbytes, 1), pin=device.type == "cuda")
        return self.arenas[slot]

    def shapes(self, batch: PendingBatch) -> list[tuple[int, int]]:
        """Each image's (height, width) once its workers are done; a worker's `UserError`
        (a missing or corrupt file) is raised here."""
        self._collect(batch)
        for index in range(batch.tasks):
            status, value = batch.answers[index]
            if status == "error":
                raise value
        return [shape for index in range(batch.tasks) for shape in batch.answers[index][1]]

    def settle(self, batches: Sequence[PendingBatch]) -> None:
        """Let abandoned batches finish, so no worker writes into a buffer that a later
        batch reuses (after an error, or when the caller stops iterating early)."""
        for batch in batches:
            self._collect(batch)

    def _collect(self, batch: PendingBatch) -> None:
        """Read answers until `batch` has all of its own (keeping other batches' answers)."""
        while len(batch.answers) < batch.tasks:
            try:
                number, index, answer = self.results.get(timeout=WORKER_CHECK_SECONDS)
            except queue.Empty:
                self._check_workers()
                continue
            owner = self._open[number]
            owner.answers[index] = answer
            if len(owner.answers) == owner.tasks:
                del self._open[number]

    def _check_workers(self) -> None:
        dead = [process for process in self.processes if not process.is_alive()]
        if dead:
            raise RuntimeError(f"image-decoding worker {dead[0].name} died (exit code {dead[0].exitcode}) "
                               "with images in hand; rerun the command to score the cell again")

    def close(self) -> None:
        self._finalizer()


def _release(processes: list[multiprocessing.process.BaseProcess], tasks: Any, arenas: list[Arena | None]) -> None:
    for process in processes:
        if process.is_alive():
            tasks.put(None)
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()
    tasks.cancel_join_thread()  # tasks left for a dead worker must not hold up this process's exit
    for slot, arena in enumerate(arenas):
        if arena is not None:
            arena.close()
            arenas[slot] = None


def _register(tensor: torch.Tensor) -> bool:
    """Page-lock a shared buffer for CUDA, so copies from it run asynchronously."""
    error = torch.cuda.cudart().cudaHostRegister(tensor.data_ptr(), tensor.numel(), 0)
    if int(error) != 0:
        warnings.warn(f"cudaHostRegister failed ({error}): decoded images are copied to the GPU "
                      "from pageable memory, more slowly", stacklevel=3)
        return False
    return True
