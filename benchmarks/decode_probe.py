"""How fast can this machine decode PNGs? Threads vs processes, PIL vs torchvision (probe).

    python benchmarks/decode_probe.py --images 1024
"""
from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from varbench.metrics.bench import write_synthetic_images


def pil_decode(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"))


def tv_decode(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_png, read_file

    return decode_png(read_file(str(path)), ImageReadMode.RGB)


def tv_decode_pinned(path: Path) -> torch.Tensor:
    """What the GPU loader's threads do: decode, then copy into pinned memory."""
    pixels = tv_decode(path)
    return torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True).copy_(pixels)


def pil_chunk(paths: list[Path]) -> int:
    return sum(pil_decode(p).shape[0] for p in paths)


def rate(pool_cls, workers: int, fn, items: list) -> float:
    with pool_cls(workers) as pool:
        list(pool.map(fn, items[: workers * 2]))  # warm the workers
        start = time.perf_counter()
        list(pool.map(fn, items))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_synthetic_images(Path(tmp), 256, args.size, 16)
        items = [paths[i % len(paths)] for i in range(args.images)]
        for workers in (1, 16):
            for name, fn in (("pil", pil_decode), ("torchvision", tv_decode)):
                seconds = rate(ThreadPoolExecutor, workers, fn, items)
                print(f"threads {workers:2d} {name:12s} {args.images / seconds:8.0f} images/s", flush=True)
        if torch.cuda.is_available():
            seconds = rate(ThreadPoolExecutor, 16, tv_decode_pinned, items)
            print(f"threads 16 torchvision + pinned copy {args.images / seconds:8.0f} images/s", flush=True)
        chunks = [items[i:i + 16] for i in range(0, len(items), 16)]
        for workers in (8, 16):
            seconds = rate(ProcessPoolExecutor, workers, pil_chunk, chunks)
            print(f"processes {workers:2d} pil (decode only, no transfer) {args.images / seconds:8.0f} images/s")


if __name__ == "__main__":
    main()
