"""Pillow's 8-bit bicubic resize, bit for bit, as two matrix products on any device.

The canonical metric pipelines resize with PIL (torchvision's Resize on PIL images).
PIL's resampler is separable and works in fixed point: per output pixel a window of
double-precision filter weights is normalised to sum 1, scaled by 2^22 and rounded
half away from zero to integers; a pass sums pixel x weight in integers, adds 2^21 and
shifts right by 22 (a floor), then clamps to 0..255. The width is resampled first, the
intermediate is stored as uint8, then the height.

Every quantity in a pass is an integer below 2^35, so a float64 matrix product against
a dense (out, in) matrix of those integer weights is exact whatever the summation
order, and the same floor and clamp reproduce PIL's output exactly. On a GPU this moves
the resizes, half of the CPU work per scored image, off the decoding threads.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

PRECISION_BITS = 22  # 32 bits - 8 for the pixel - 2 for overshoot, as in PIL
BICUBIC_SUPPORT = 2.0
# Images per float64 chunk: bounds the temporary memory (~50 MB per 512x512 image).
CHUNK = 16


def _bicubic(x: float) -> float:
    """Keys' cubic convolution kernel with a = -0.5 (PIL's BICUBIC)."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


@functools.lru_cache(maxsize=64)
def pillow_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of PIL's integer fixed-point bicubic weights."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)  # widen the filter when shrinking (antialiasing)
    support = BICUBIC_SUPPORT * filter_scale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        # C's (int) cast truncates toward zero; the clamp makes the sign irrelevant
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        inverse = 1.0 / filter_scale  # PIL multiplies by the reciprocal; dividing can differ in the last bit
        taps = [_bicubic((x - center + 0.5) * inverse) for x in range(first, last)]
        total = sum(taps)
        if total != 0.0:
            taps = [tap / total for tap in taps]
        # to fixed point, rounding half away from zero
        weights[out, first:last] = [math.trunc(tap * (1 << PRECISION_BITS) + (0.5 if tap >= 0 else -0.5))
                                    for tap in taps]
    return weights


@functools.lru_cache(maxsize=64)
def _weights_on(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    # Kept on the device: copying from pageable host memory at every pass would make the
    # host wait for all queued GPU work (the encoders of the previous batch).
    return torch.from_numpy(pillow_weights(in_size, out_size)).to(device)


def _pass(pixels: torch.Tensor, in_size: int, out_size: int, axis: int) -> torch.Tensor:
    """One PIL pass over `axis` (1 = height, 2 = width) of uint8 (N, H, W, C)."""
    matrix = _weights_on(in_size, out_size, pixels.device)
    moved = pixels.movedim(axis, -1).to(torch.float64)  # (N, ., C, in)
    summed = moved @ matrix.T  # exact: integers below 2^53
    rounded = torch.floor((summed + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS))
    return rounded.clamp_(0, 255).to(torch.uint8).movedim(-1, axis)


def resize_bicubic(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, height, width, C), equal to PIL's
    `Image.resize((width, height), Image.BICUBIC)` on each image."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 (N, H, W, C) images, got {images.dtype} {tuple(images.shape)}")
    _, in_height, in_width, _ = images.shape
    chunks = []
    for chunk in images.split(CHUNK):
        if width != in_width:  # PIL skips a pass whose size does not change
            chunk = _pass(chunk, in_width, width, axis=2)
        if height != in_height:
            chunk = _pass(chunk, in_height, height, axis=1)
        chunks.append(chunk)
    return torch.cat(chunks)
