"""Where does scoring time go? Host waits and GPU time per pass (probe).

    python benchmarks/scoring_probe.py --images 4096

Runs the real `Scorer` (random weights) over synthetic 512x512 PNGs twice: decoding
alone (`ViewLoader.batches`) and decoding + encoders (`Scorer.embed`). For each pass it
prints images/s, the seconds the main thread spent waiting for the decoding workers
(`DecodePool.shapes`) and for a shared buffer's previous copy (`Arena.ready`), and the
GPU time (torch.profiler), split into float64 matmuls (the resizes' products) and all
other work (the resizes' elementwise steps, uploads, and in the second pass the encoders).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from varbench.metrics import decode_pool
from varbench.metrics.bench import DISTINCT_FILES, write_synthetic_images
from varbench.metrics.settings import MetricsConfig
from varbench.metrics.scoring import Scorer

waits: dict[str, float] = defaultdict(float)


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            waits[name] += time.perf_counter() - start
    return wrapper


def run_pass(name: str, work, images: int) -> None:
    waits.clear()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        start = time.perf_counter()
        work()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    kernels = defaultdict(float)
    for event in profile.key_averages():
        key = event.key.lower()
        kernels["float64 matmuls" if "double" in key or "dgemm" in key else "other"] += event.device_time_total / 1e6
    print(f"{name}: {images / seconds:.0f} images/s over {seconds:.2f} s; main waits: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in waits.items())
          + "; GPU time: " + ", ".join(f"{k} {v:.3f} s" for k, v in kernels.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    args = parser.parse_args()
    decode_pool.DecodePool.shapes = timed("workers", decode_pool.DecodePool.shapes)
    decode_pool.Arena.ready = timed("buffer", decode_pool.Arena.ready)
    scorer = Scorer(MetricsConfig(mode="canonical", backbones="real", div=False, batch_size=256),
                    torch.device("cuda"), pretrained=False)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_synthetic_images(Path(tmp), DISTINCT_FILES, 512, 16)
        paths = [files[index % len(files)] for index in range(args.images)]
        scorer.embed(paths[:512])  # warm-up
        for _ in range(2):
            run_pass("decode", lambda: [None for _ in scorer.loader.batches(paths, 256, scorer.device)], args.images)
            run_pass("decode+encode", lambda: scorer.embed(paths), args.images)
    scorer.close()


if __name__ == "__main__":
    main()
