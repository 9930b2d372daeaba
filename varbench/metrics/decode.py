"""Parallel image decoding: paths -> batches of uint8 pixel views on the device.

Decoding bounds scoring throughput (the encoders run at ~8,500 images/s on an H100, one
core decodes ~150 512x512 PNGs/s), so images are decoded in parallel, up to two batches
ahead of the batch being encoded. Where depends on the device:

* CPU: a thread pool; each thread decodes with PIL and cuts the small views
  (`cpu_views`); a batch is one stacked uint8 tensor per view.
* GPU: worker processes (`decode_pool`) decode whole images into shared page-locked
  memory; each batch is copied to the GPU and its views are cut there (`device_views`,
  equal to the PIL views bit for bit). On a 16-core H100 host this took scoring from
  1,081 images/s (decoding threads) to 2,220 (benchmarks/NOTES-scoring.md).
"""
from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varbench.metrics.decode_pool import DecodePool, PendingBatch, default_workers
from varbench.metrics.imagefile import decode_image
from varbench.metrics.preprocess import Pixels, cpu_views, device_views
from varbench.provenance import usable_cores

PREFETCH_BATCHES = 2


def default_threads() -> int:
    return max(1, min(32, usable_cores()))


class ViewLoader:
    """Decodes images for one mode's pixel pipeline; reuse it across cells.

    `resize_on_device`: None takes the device path when the device is a GPU; True or
    False forces either path (the tests check that both give the same views). `threads`
    sizes the CPU path's pool, `workers` the device path's processes."""

    def __init__(self, pixels: Pixels, exif_and_alpha: bool = False, threads: int | None = None,
                 resize_on_device: bool | None = None, workers: int | None = None):
        self.pixels = pixels
        self.exif_and_alpha = exif_and_alpha
        self.threads = threads or default_threads()
        self.resize_on_device = resize_on_device
        self.workers = workers or default_workers()
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="varbench-decode")
        self.processes: DecodePool | None = None

    def on_device(self, device: torch.device) -> bool:
        return self.resize_on_device if self.resize_on_device is not None else device.type == "cuda"

    def start(self, device: torch.device) -> None:
        """Start the worker processes now if `device` takes the device path (a few seconds
        once; the Scorer does it while loading, so no cell's scoring time includes it)."""
        if self.on_device(device) and self.processes is None:
            self.processes = DecodePool(self.workers, self.exif_and_alpha, arenas=PREFETCH_BATCHES + 1)

    def views(self, path: Path, with_square: bool = False) -> dict[str, np.ndarray]:
        """The uint8 views of one image, cut on the CPU (runs in a pool thread)."""
        return cpu_views(decode_image(path, self.exif_and_alpha), self.pixels, with_square)

    def batches(self, paths: Sequence[Path], batch_size: int, device: torch.device,
                with_square: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Yield {view name: uint8 (B, H, W, 3) tensor on `device`} for consecutive batches."""
        chunks = [list(paths[start:start + batch_size]) for start in range(0, len(paths), batch_size)]
        if self.on_device(device):
            yield from self._process_batches(chunks, device, with_square)
            return
        work = functools.partial(self.views, with_square=with_square)
        pending: deque[list[Future]] = deque()
        for chunk in chunks[:PREFETCH_BATCHES]:
            pending.append([self.pool.submit(work, path) for path in chunk])
        for index in range(len(chunks)):
            futures = pending.popleft()
            if index + PREFETCH_BATCHES < len(chunks):
                pending.append([self.pool.submit(work, path) for path in chunks[index + PREFETCH_BATCHES]])
            yield _stack([future.result() for future in futures], device)

    def _process_batches(self, chunks: list[list[Path]], device: torch.device,
                         with_square: bool) -> Iterator[dict[str, torch.Tensor]]:
        """The device path with worker processes: batch i decodes into shared buffer
        i % (PREFETCH_BATCHES + 1) while the batches before it are encoded."""
        self.start(device)
        pool = self.processes
        assert pool is not None
        pending: deque[PendingBatch] = deque()
        current: list[PendingBatch] = []
        try:
            for index in range(len(chunks)):
                while len(pending) < PREFETCH_BATCHES and index + len(pending) < len(chunks):
                    position = index + len(pending)
                    pending.append(pool.submit(chunks[position], position % len(pool.arenas), device))
                current = [pending.popleft()]
                batch = current[0]
                shapes = pool.shapes(batch)
                views = _cut_views(shapes, _arena_upload(batch, device), self.pixels, with_square, device)
                batch.arena.record_copy(device)
                yield views
        finally:
            pool.settle(current + list(pending))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.processes is not None:
            self.processes.close()
            self.processes = None


def _stack(views: list[dict[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    batch = {}
    for name in views[0]:
        host = torch.from_numpy(np.stack([view[name] for view in views]))
        if device.type == "cuda":
            host = host.pin_memory()  # lets the copy run asynchronously
        batch[name] = host.to(device, non_blocking=True)
    return batch


def _arena_upload(batch: PendingBatch, device: torch.device) -> Callable[[list[int], Any], torch.Tensor]:
    return lambda indices, shape: batch.arena.upload([batch.offsets[i] for i in indices], shape, device)


def _cut_views(shapes: list[tuple[int, ...]], upload: Callable[[list[int], Any], torch.Tensor],
               pixels: Pixels, with_square: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """Views of a batch cut on the device: `upload(indices, shape)` gives the same-size
    images at `indices` as one (N, H, W, 3) device tensor; one group per image size, then
    the rows are put back in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(index)
    order: list[int] = []
    parts: dict[str, list[torch.Tensor]] = {}
    for shape, indices in groups.items():
        order += indices
        for name, view in device_views(upload(indices, shape), pixels, with_square).items():
            parts.setdefault(name, []).append(view)
    if len(groups) == 1:
        return {name: views[0] for name, views in parts.items()}
    inverse = torch.argsort(torch.tensor(order)).to(device)
    return {name: torch.cat(views)[inverse] for name, views in parts.items()}
