"""Parallel image decoding: paths -> batches of uint8 pixel views on the device.

Decoding PNGs bounds scoring throughput (DESIGN.md section 9: the encoders run at
~19,000 images/s on an H100), so images are decoded and resized in a thread pool (PIL
releases the GIL while it decodes and resamples) and the pool works up to two batches
ahead of the batch being encoded. Each batch leaves the host as one stacked uint8
tensor per view; everything after that happens on the device.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from varbench.metrics.preprocess import Pixels, cpu_views, decode_image

PREFETCH_BATCHES = 2


def default_threads() -> int:
    return max(1, min(32, os.cpu_count() or 1))


class ViewLoader:
    """Decodes images for one mode's pixel pipeline; reuse it across cells."""

    def __init__(self, pixels: Pixels, exif_and_alpha: bool = False, threads: int | None = None):
        self.pixels = pixels
        self.exif_and_alpha = exif_and_alpha
        self.threads = threads or default_threads()
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="varbench-decode")

    def views(self, path: Path, with_square: bool = False) -> dict[str, np.ndarray]:
        """The uint8 views of one image (runs in a pool thread)."""
        return cpu_views(decode_image(path, self.exif_and_alpha), self.pixels, with_square)

    def batches(self, paths: Sequence[Path], batch_size: int, device: torch.device,
                with_square: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Yield {view name: uint8 (B, H, W, 3) tensor on `device`} for consecutive batches."""
        chunks = [list(paths[start:start + batch_size]) for start in range(0, len(paths), batch_size)]
        pending: deque[list[Future]] = deque()
        for chunk in chunks[:PREFETCH_BATCHES]:
            pending.append(self._submit(chunk, with_square))
        for index in range(len(chunks)):
            futures = pending.popleft()
            if index + PREFETCH_BATCHES < len(chunks):
                pending.append(self._submit(chunks[index + PREFETCH_BATCHES], with_square))
            yield _stack([future.result() for future in futures], device)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, chunk: list[Path], with_square: bool) -> list[Future]:
        return [self.pool.submit(self.views, path, with_square) for path in chunk]


def _stack(views: list[dict[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    batch = {}
    for name in views[0]:
        host = torch.from_numpy(np.stack([view[name] for view in views]))
        if device.type == "cuda":
            host = host.pin_memory()  # lets the copy run asynchronously
        batch[name] = host.to(device, non_blocking=True)
    return batch
