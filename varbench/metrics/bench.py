"""Scoring throughput: images/s for decode + DINO + CLIP-I + CLIP-T, decoding included.

Synthetic PNGs (smooth colour fields with mild noise, so they compress like generated
images rather than like white noise) are written to a temporary folder and scored by
the real `Scorer` code path. Encoders have random weights: at size "real" they are the
real architectures (DINO ViT-S/16, CLIP ViT-B/32) built without pretrained weights, so
the arithmetic is the real one; at size "tiny" they are the test encoders (a CPU check
that the benchmark runs). The numbers measure speed only; no score is reported.

Beside the measured rates the result gives the encoders' floor: their FLOPs per image
(counted by torch's FlopCounterMode) divided by a matmul rate measured on the same
device (bf16 on CUDA, fp32 on CPU), i.e. the images/s the encoders could not beat.

Run on a GPU machine:
    uv run python -m varbench.metrics.bench --device cuda --images 4096 --image-size 512
(DESIGN.md section 9 targets >= 2,000 images/s on one H100 for 512 px images.)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from varbench.data.subject import Subject
from varbench.metrics.settings import MetricsConfig
from varbench.metrics.preprocess import clip_input, dino_input
from varbench.metrics.scoring import GeneratedImage, Scorer
from varbench.timing import matmul_rate, synchronize

DISTINCT_FILES = 256  # files on disk; longer runs cycle through them (each one is decoded again)
SAMPLES_PER_PROMPT = 4


def synthetic_png(path: Path, size: int, seed: int) -> None:
    """A size x size RGB PNG: an upsampled 8x8 colour grid plus mild noise."""
    rng = np.random.default_rng(seed)
    colours = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    grid = colours.resize((size, size), Image.BICUBIC)
    pixels = np.asarray(grid).astype(np.int16) + rng.integers(-6, 7, (size, size, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def write_synthetic_images(folder: Path, count: int, size: int, threads: int) -> list[Path]:
    paths = [folder / f"img{index:04d}.png" for index in range(count)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: synthetic_png(item[1], size, item[0]), enumerate(paths)))
    return paths


def measure_throughput(device: torch.device | str = "cuda", size: str = "real", images: int = 4096,
                       image_size: int = 512, batch_size: int = 256, mode: str = "canonical",
                       threads: int | None = None, resize_on_device: bool | None = None) -> dict[str, Any]:
    """Images per second of `Scorer.score_cell` (decode + DINO + CLIP-I + CLIP-T), and of
    decoding alone and encoding alone, after one warm-up pass. Random weights.
    `resize_on_device`: where the views are cut (None: on the device when it is a GPU)."""
    device = torch.device(device)
    config = MetricsConfig(mode=mode, backbones=size, div=False,  # type: ignore[arg-type]
                           batch_size=batch_size)
    scorer = Scorer(config, device, pretrained=False, threads=threads, resize_on_device=resize_on_device)
    with tempfile.TemporaryDirectory(prefix="varbench-bench-") as tmp:
        folder = Path(tmp)
        files = write_synthetic_images(folder, min(images, DISTINCT_FILES) + 4, image_size,
                                       scorer.loader.threads)
        subject = Subject("bench", "dog", True, tuple(files[-4:]))
        cell = [_generated(files[index % (len(files) - 4)], index) for index in range(images)]
        scorer.score_cell(subject, cell[:batch_size])  # warm-up: kernels, references, texts
        synchronize(device)
        start = time.perf_counter()
        rows = scorer.score_cell(subject, cell)
        synchronize(device)
        score_seconds = time.perf_counter() - start
        decode_seconds = _time_decoding(scorer, [image.path for image in cell], device)
        encode_seconds = _time_encoding(scorer, [image.path for image in cell[:batch_size]], images)
    flops = encoder_flops_per_image(scorer)
    rate = matmul_rate(device)
    processes = scorer.loader.processes  # None on the CPU path
    scorer.close()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": size, "mode": mode, "random_init": True, "images": images, "image_size": image_size,
        "batch_size": batch_size, "threads": scorer.loader.threads, "rows": len(rows),
        "decode_workers": processes.workers if processes else None,
        "workers_start_seconds": processes.start_seconds if processes else None,
        "resize_on_device": scorer.loader.on_device(device),
        "seconds": score_seconds, "images_per_second": images / score_seconds,
        "decode_images_per_second": images / decode_seconds,
        "encode_images_per_second": images / encode_seconds,
        "encoder_gflops_per_image": flops / 1e9, "matmul_tflops_per_second": rate / 1e12,
        "encoder_floor_images_per_second": rate / flops,
    }


def _generated(path: Path, index: int) -> GeneratedImage:
    prompt, sample = divmod(index, SAMPLES_PER_PROMPT)
    return GeneratedImage(path=path, name=path.name, kind="eval", prompt_index=prompt % 25,
                          sample_index=sample, clip_text="a dog in the jungle", template="a {} in the jungle")


def _time_decoding(scorer: Scorer, paths: list[Path], device: torch.device) -> float:
    """Decode + resize + copy to the device, no encoders."""
    start = time.perf_counter()
    for _ in scorer.loader.batches(paths, scorer.config.batch_size, device):
        pass
    synchronize(device)
    return time.perf_counter() - start


def _time_encoding(scorer: Scorer, paths: list[Path], images: int) -> float:
    """DINO + CLIP image towers on one decoded batch, repeated to `images` images."""
    views = next(scorer.loader.batches(paths, len(paths), scorer.device))
    pixels = scorer.mode.pixels
    repeats = max(1, images // len(paths))
    synchronize(scorer.device)
    start = time.perf_counter()
    for _ in range(repeats):
        with scorer.autocast():
            scorer.dino(dino_input(views, pixels))
            scorer.clip.encode_image(clip_input(views, pixels))
    synchronize(scorer.device)
    return (time.perf_counter() - start) * images / (repeats * len(paths))


def encoder_flops_per_image(scorer: Scorer) -> float:
    """FLOPs of one image through the DINO and CLIP image towers."""
    from torch.utils.flop_counter import FlopCounterMode

    dino_size = scorer.mode.dino_input_size
    with FlopCounterMode(display=False) as counter, scorer.autocast():
        scorer.dino(torch.zeros(1, 3, dino_size, dino_size, device=scorer.device))
        scorer.clip.encode_image(torch.zeros(1, 3, 224, 224, device=scorer.device))
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="real", choices=["real", "tiny"])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mode", default="canonical")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resize-on", choices=["auto", "host", "device"], default="auto",
                        help="where the views are cut: decoding threads (PIL) or the device")
    args = parser.parse_args(argv)
    resize_on_device = {"auto": None, "host": False, "device": True}[args.resize_on]
    result = measure_throughput(args.device, args.size, args.images, args.image_size, args.batch_size,
                                args.mode, args.threads, resize_on_device)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
