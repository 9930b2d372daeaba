"""Parallel image decoding: paths -> batches of uint8 pixel views on the device.

Decoding bounds scoring throughput (DESIGN.md section 9: the encoders run at ~19,000
images/s on an H100), so images are decoded in a thread pool that works up to two
batches ahead of the batch being encoded. Where the resizes run depends on the device:

* CPU: each thread decodes with PIL and cuts the small views (`cpu_views`); a batch is
  one stacked uint8 tensor per view.
* GPU: threads only decode (torchvision's libpng binding holds no GIL); each batch of
  full images is stacked into pinned memory, copied to the GPU and resized there
  (`device_views`, equal to the PIL views bit for bit). The resizes were half of the
  CPU time per image: scoring on an H100 host went from 495 to 1,044 images/s
  (benchmarks/NOTES-scoring.md).
"""
from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varbench.metrics.preprocess import Pixels, cpu_views, decode_image, decode_pixels, device_views

PREFETCH_BATCHES = 2


def default_threads() -> int:
    return max(1, min(32, os.cpu_count() or 1))


class ViewLoader:
    """Decodes images for one mode's pixel pipeline; reuse it across cells.

    `resize_on_device`: None resizes on the device when it is a GPU; True or False forces
    either path (the tests check that both give the same views)."""

    def __init__(self, pixels: Pixels, exif_and_alpha: bool = False, threads: int | None = None,
                 resize_on_device: bool | None = None):
        self.pixels = pixels
        self.exif_and_alpha = exif_and_alpha
        self.threads = threads or default_threads()
        self.resize_on_device = resize_on_device
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="varbench-decode")

    def views(self, path: Path, with_square: bool = False) -> dict[str, np.ndarray]:
        """The uint8 views of one image, cut on the CPU (runs in a pool thread)."""
        return cpu_views(decode_image(path, self.exif_and_alpha), self.pixels, with_square)

    def pixels_for_upload(self, path: Path) -> torch.Tensor:
        """The whole decoded image as contiguous uint8 (3, H, W), libpng's own layout (so
        no transposing copy on the host); runs in a pool thread. (Pinning each image here
        halved the threads' throughput on an H100 host: pinned allocations serialise.)"""
        return decode_pixels(path, self.exif_and_alpha).permute(2, 0, 1).contiguous()

    def batches(self, paths: Sequence[Path], batch_size: int, device: torch.device,
                with_square: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Yield {view name: uint8 (B, H, W, 3) tensor on `device`} for consecutive batches."""
        on_device = self.resize_on_device if self.resize_on_device is not None else device.type == "cuda"
        work: Callable[[Path], Any]
        if on_device:
            work = self.pixels_for_upload
            finish = functools.partial(_resize_batch, device=device, pixels=self.pixels, with_square=with_square)
        else:
            work = functools.partial(self.views, with_square=with_square)
            finish = functools.partial(_stack, device=device)
        chunks = [list(paths[start:start + batch_size]) for start in range(0, len(paths), batch_size)]
        pending: deque[list[Future]] = deque()
        for chunk in chunks[:PREFETCH_BATCHES]:
            pending.append([self.pool.submit(work, path) for path in chunk])
        for index in range(len(chunks)):
            futures = pending.popleft()
            if index + PREFETCH_BATCHES < len(chunks):
                pending.append([self.pool.submit(work, path) for path in chunks[index + PREFETCH_BATCHES]])
            yield finish([future.result() for future in futures])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _stack(views: list[dict[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    batch = {}
    for name in views[0]:
        host = torch.from_numpy(np.stack([view[name] for view in views]))
        if device.type == "cuda":
            host = host.pin_memory()  # lets the copy run asynchronously
        batch[name] = host.to(device, non_blocking=True)
    return batch


def _resize_batch(images: list[torch.Tensor], device: torch.device, pixels: Pixels,
                  with_square: bool) -> dict[str, torch.Tensor]:
    """Upload whole (3, H, W) images and cut their views on the device, one group per
    image size, then put the rows back in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(index)
    order: list[int] = []
    parts: dict[str, list[torch.Tensor]] = {}
    for indices in groups.values():
        order += indices
        group = _upload([images[i] for i in indices], device).permute(0, 2, 3, 1)  # (N, H, W, 3) view
        for name, view in device_views(group, pixels, with_square).items():
            parts.setdefault(name, []).append(view)
    if len(groups) == 1:
        return {name: views[0] for name, views in parts.items()}
    inverse = torch.argsort(torch.tensor(order)).to(device)
    return {name: torch.cat(views)[inverse] for name, views in parts.items()}


def _upload(images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Same-size host images -> one (N, 3, H, W) tensor on `device`: stacked straight into
    pinned memory on a GPU, so the copy runs asynchronously (a copy from pageable memory
    would first wait for all queued GPU work)."""
    if device.type != "cuda":
        return torch.stack(images).to(device)
    staged = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=True)
    return torch.stack(images, out=staged).to(device, non_blocking=True)
