"""Nearest-neighbour 2x upsampling followed by a 3x3 convolution, without the upsampling.

Infinity's VAE decoder upsamples with `conv3x3(interpolate(x, scale_factor=2,
mode="nearest"))`. After a nearest 2x upsampling each output pixel's 3x3 window covers
only 2x2 distinct input pixels, and which taps fall on the same input pixel depends only
on the output pixel's parity. So the same result is four 2x2 convolutions of the small
input (one per parity, with the 3x3 taps that land on the same input pixel summed),
interleaved: 16 multiply-adds per input pixel and channel pair instead of 36, and no
upsampled tensor written and read back. Only the rounding differs (the taps are summed
before the multiplication instead of after).

These convolutions are 2.9 of the Infinity decoder's 9.8 TFLOP per 1024^2 image; there
it is faster, compiled or eager. On SD 1.5's UNet upsamplers it was slower (small spatial
sizes starve the 4x-wide 2x2 convolution), so the diffusion baselines keep diffusers'
upsampling. Figures: benchmarks/NOTES-infinity.md, NOTES-baselines.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _tap_pairs(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along `dim` (size 3): the 2 taps seen by even outputs (rows i-1 | i, i) and by odd
    outputs (rows i, i | i+1) of a nearest 2x upsampling."""
    first, middle, last = weight.split(1, dim)
    return torch.cat([first, middle + last], dim), torch.cat([first + middle, last], dim)


def phase_weights(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (4 C_out, C_in, 2, 2): the 2x2 kernel of each output parity
    (row parity major, then column parity), summed in at least fp32."""
    rows = _tap_pairs(weight.to(torch.promote_types(weight.dtype, torch.float32)), 2)
    kernels = [column for row in rows for column in _tap_pairs(row, 3)]
    return torch.cat(kernels).to(weight.dtype)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`
    for a (C_out, C_in, 3, 3) `weight`, computed on x itself (same memory format out as in)."""
    batch, _, height, width = x.shape
    channels = weight.shape[0]
    # Output row r of a 2x2 convolution with padding 1 reads input rows r-1 and r: even
    # output rows 2i need rows (i-1, i), so r = i; odd rows 2i+1 need (i, i+1), so r = i+1.
    phases = F.conv2d(x, phase_weights(weight), None if bias is None else bias.repeat(4), padding=1)
    # The convolution picked the layout (NHWC in, NHWC out); its 4C >= 4 channels and
    # (H+1) x (W+1) >= 2x2 pixels make the channel stride say which one.
    layout = torch.channels_last if phases.stride(1) == 1 else torch.contiguous_format
    phases = phases.unflatten(1, (2, 2, channels))  # (B, row parity, column parity, C, H+1, W+1)
    out = torch.empty((batch, channels, 2 * height, 2 * width), dtype=phases.dtype, device=phases.device,
                      memory_format=layout)
    interleaved = out.view(batch, channels, height, 2, width, 2)
    for a in (0, 1):  # output (2i+a, 2j+b) is phase (a, b) at (i+a, j+b): one pass over the output
        for b in (0, 1):
            interleaved[:, :, :, a, :, b] = phases[:, a, b, :, a:a + height, b:b + width]
    return out
