"""Pillow's 8-bit bicubic resize, bit for bit, as two matrix products on any device.

The canonical metric pipelines resize with PIL (torchvision's Resize on PIL images).
PIL's resampler is separable and works in fixed point: per output pixel a window of
double-precision filter weights is normalised to sum 1, scaled by 2^22 and rounded
half away from zero to integers; a pass sums pixel x weight in integers, adds 2^21 and
shifts right by 22 (a floor), then clamps to 0..255. One dimension is resampled, the
intermediate stored as uint8, then the other. Which one first depends on the Pillow
version: older ones always do the width first; newer ones (13 does) do the height first
when the height shrinks and (in_height - out_height) > 2 * (in_width - out_width), i.e.
for most portrait images (the rule was found by comparing both orders with Pillow 13 on
~560 random shapes where they differ: it predicted every one). `height_first` follows the installed Pillow, found once by resizing a probe
image both ways (the orders differ by up to 5 grey levels, so the choice matters).

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


def _round_pass(sums: torch.Tensor) -> torch.Tensor:
    """PIL's end of a pass, in place: add 2^21, shift right by 22 (a floor; multiplying
    by 2^-22 is exact in float64), clamp to 0..255. The values stay float64 integers."""
    return sums.add_(1 << (PRECISION_BITS - 1)).mul_(2.0 ** -PRECISION_BITS).floor_().clamp_(0, 255)


def resize_bicubic(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, height, width, C), equal to PIL's
    `Image.resize((width, height), Image.BICUBIC)` on each image.

    The passes run on planar (N, C, H, W) float64 so both contract a contiguous axis with
    no transposing copy, and the intermediate stays float64 (its values are the uint8
    ones): on an H100 this cut the GPU time of decoding 4,096 images for scoring (uploads
    + resizes) from 1.41 to 0.28 s, and the GPU had been what bounded scoring."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 (N, H, W, C) images, got {images.dtype} {tuple(images.shape)}")
    _, in_height, in_width, channels = images.shape
    chunks = []
    for chunk in images.split(CHUNK):
        planes = torch.empty((len(chunk), channels, in_height, in_width), dtype=torch.float64, device=images.device)
        planes.copy_(chunk.permute(0, 3, 1, 2))
        if height_first(in_height, height, in_width, width):
            planes = _width_pass(_height_pass(planes, height), width)
        else:
            planes = _height_pass(_width_pass(planes, width), height)
        chunks.append(planes.to(torch.uint8))
    return torch.cat(chunks).permute(0, 2, 3, 1)


def _width_pass(planes: torch.Tensor, width: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H, width); PIL skips a pass whose size does not change."""
    if width == planes.shape[-1]:
        return planes
    return _round_pass(planes @ _weights_on(planes.shape[-1], width, planes.device).T)


def _height_pass(planes: torch.Tensor, height: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, height, W), as one batched product over all planes."""
    n, channels, in_height, in_width = planes.shape
    if height == in_height:
        return planes
    rows = _weights_on(in_height, height, planes.device)  # (height, in_height), shared by all planes
    flat = planes.reshape(-1, in_height, in_width)
    return _round_pass(torch.bmm(rows.expand(len(flat), -1, -1), flat)).view(n, channels, height, in_width)


def height_first(in_height: int, height: int, in_width: int, width: int) -> bool:
    """Whether the installed Pillow resamples the height before the width for this shape."""
    shrinks = height < in_height
    return shrinks and (in_height - height) > 2 * (in_width - width) and pillow_orders_by_shape()


@functools.lru_cache(maxsize=1)
def pillow_orders_by_shape() -> bool:
    """True when the installed Pillow picks the pass order by shape (see the module
    docstring), found by resizing a probe image on which the two orders differ."""
    from PIL import Image

    probe = np.random.default_rng(0).integers(0, 256, (300, 100, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(probe).resize((64, 64), Image.BICUBIC))
    planes = torch.from_numpy(probe.copy()).permute(2, 0, 1)[None].to(torch.float64)
    by_shape = _width_pass(_height_pass(planes, 64), 64)[0].permute(1, 2, 0).to(torch.uint8).numpy()
    return bool(np.array_equal(by_shape, expected))
