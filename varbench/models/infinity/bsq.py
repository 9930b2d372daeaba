"""The BSQ tokenizer: CNN autoencoder + multi-scale residual binary spherical quantization.

Encoding an image (B, 3, H, W) in [-1, 1] gives a latent z (B, d, H/s, W/s), d = 32 bits.
Quantizing z on a scale schedule, coarse to fine:

    summed = 0
    for each scale k with grid (h, w):
        r_k    = area-resize(z - summed) to (h, w)          (no resize at the final grid)
        bits_k = normalize(r_k over the d channels) > 0       (B, h, w, d) -- the labels
        code_k = (+1 if bit else -1) / sqrt(d)                (a point on the unit sphere)
        summed = summed + upsample(code_k) to the final grid  ("trilinear" = bilinear here)
        input of scale k+1 = resize(summed) to scale k+1's grid

Decoding: decoder(summed), clamped to [-1, 1]; to 8 bits by rounding (varbench) or, as
both releases do (`(img + 1) / 2`, `.mul_(255).to(torch.uint8)`), by truncation: a
pixel then reads on average half a level darker. The transformer sees the inputs and
predicts the bits. Bitwise self-correction (training): after computing bits_k, flip each
bit with probability p_k drawn per scale from U{0, 0.01, ..., max}, and build `summed` (and
so every later residual, label and input) from the flipped code; the labels of scale k
stay the clean bits_k. The model thus learns to correct its own earlier mistakes.

Next-scale inputs are resized with bilinear interpolation ("trilinear" in the release,
whose tensors carry a time axis of size 1: identical) in training and in the release's
sampler; ARBooth's teacher used "area" (quirk 2, see `sampler.SamplingConfig`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from varbench.models.infinity.autoencoder import Decoder, Encoder
from varbench.models.infinity.architecture import TokenizerConfig
from varbench.models.infinity.schedule import ScaleSchedule

Interpolation = Literal["trilinear", "area"]
ToUint8 = Literal["round", "truncate"]


# ---- bits, codes and resizing (shared with the sampler) ---------------------------------
def bits_to_codes(bits: torch.Tensor) -> torch.Tensor:
    """Bits (B, h, w, d) (bool or 0/1) -> codes (B, d, h, w) = +-1/sqrt(d), fp32."""
    d = bits.shape[-1]
    codes = torch.where(bits.bool(), 1.0, -1.0).to(torch.float32) * d**-0.5
    return codes.permute(0, 3, 1, 2)


def quantize_scale(residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual (B, d, h, w) -> (bits (B, h, w, d) bool, codes (B, d, h, w))."""
    normed = F.normalize(residual.float(), dim=1)
    bits = (normed > 0).permute(0, 2, 3, 1)
    return bits, bits_to_codes(bits)


def resize(x: torch.Tensor, size: tuple[int, int], mode: Interpolation) -> torch.Tensor:
    """Resize (B, d, h, w); "trilinear" is bilinear without corner alignment."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def flatten_grid(x: torch.Tensor) -> torch.Tensor:
    """(B, d, h, w) -> (B, h*w, d), row-major tokens."""
    return x.flatten(2).transpose(1, 2)


@dataclass
class TokenMaps:
    """Result of quantizing a batch on a schedule."""

    bits: list[torch.Tensor]  # per scale (B, h, w, d) bool: the labels
    used_bits: list[torch.Tensor]  # per scale: the bits summed (= bits, or flipped by self-correction)
    inputs: torch.Tensor  # (B, L - 1, d) fp32: teacher-forcing inputs of scales 2..K
    summed: torch.Tensor  # (B, d, H, W): sum of the (possibly corrupted) upsampled codes

    def labels(self) -> torch.Tensor:
        """(B, L, d) int64 bit labels, scales concatenated."""
        return torch.cat([b.flatten(1, 2) for b in self.bits], dim=1).long()


def multiscale_quantize(z: torch.Tensor, schedule: ScaleSchedule, flip_max: float = 0.0,
                        flip_scales: int | None = None, generator: torch.Generator | None = None,
                        next_input: Interpolation = "trilinear") -> TokenMaps:
    """Quantize latents z (B, d, H, W) on `schedule` (see the module docstring).

    flip_max > 0 turns on bitwise self-correction on the first `flip_scales` scales (all
    by default); the flip probabilities and masks come from `generator`.
    """
    z = z.float()
    final = schedule.final
    if tuple(z.shape[-2:]) != tuple(final):
        raise ValueError(f"latent grid {tuple(z.shape[-2:])} does not match the schedule's final {final}")
    count = schedule.num_scales if flip_scales is None else min(flip_scales, schedule.num_scales)
    if flip_max > 0:
        steps = round(flip_max * 100) + 1  # U{0, 0.01, ..., flip_max}, one draw per scale
        strengths = torch.randint(0, steps, (count,), generator=generator, device=_device(generator, z)) * 0.01
    summed = torch.zeros_like(z)
    bits_per_scale, used_bits, inputs = [], [], []
    for k, size in enumerate(schedule.scales):
        bits, codes = quantize_scale(resize(z - summed, size, "area"))
        bits_per_scale.append(bits)
        if flip_max > 0 and k < count:
            noise = torch.rand(bits.shape, generator=generator, device=_device(generator, z))
            flipped = bits ^ (noise.to(z.device) < strengths[k].to(z.device))
            codes = bits_to_codes(flipped)
            used_bits.append(flipped)
        else:
            used_bits.append(bits)
        summed = summed + resize(codes, final, "trilinear")
        if k + 1 < schedule.num_scales:
            inputs.append(flatten_grid(resize(summed, schedule.scales[k + 1], next_input)))
    width = z.shape[1]
    joined = torch.cat(inputs, dim=1) if inputs else z.new_zeros(z.shape[0], 0, width)
    return TokenMaps(bits_per_scale, used_bits, joined, summed)


def _device(generator: torch.Generator | None, fallback: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else fallback.device


def codes_from_bits(bits: Sequence[torch.Tensor], final: tuple[int, int]) -> torch.Tensor:
    """Sum of the upsampled codes of per-scale bits: the decoder input (B, d, H, W)."""
    return sum(resize(bits_to_codes(b), final, "trilinear") for b in bits)


class BitCode(nn.Module):
    """Holds the released quantizer's only state: `mask`, the weight of each bit in an
    integer code (2^(d-1) .. 1). Kept so the checkpoint's `quantizer.lfq.mask` has a home."""

    def __init__(self, bits: int):
        super().__init__()
        self.register_buffer("mask", 2 ** torch.arange(bits - 1, -1, -1))


class MultiScaleBSQ(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.lfq = BitCode(bits)


class BSQTokenizer(nn.Module):
    """encoder / decoder / quantizer, as in `infinity_vae_d32reg.pth` (key "vae")."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = MultiScaleBSQ(config.bits)
        self.quantize = self.quantizer  # the release aliases it, so its buffer is saved under both names

    @property
    def stride(self) -> int:
        return self.config.stride

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents (B, d, H/s, W/s), fp32 (no autocast)."""
        with torch.autocast(images.device.type, enabled=False):
            weight = self.encoder.conv_in.conv.weight
            return self.encoder(images.to(weight.dtype)).float()

    def tokenize(self, images: torch.Tensor, schedule: ScaleSchedule, **quantize_options) -> TokenMaps:
        """encode + multiscale_quantize (options: flip_max, flip_scales, generator, next_input)."""
        return multiscale_quantize(self.encode(images), schedule, **quantize_options)

    def decode(self, summed: torch.Tensor) -> torch.Tensor:
        """Summed codes (B, d, H, W) -> images (B, 3, H*s, W*s) in [-1, 1]."""
        weight = self.decoder.conv_in.conv.weight
        return self.decoder(summed.to(weight.dtype)).float().clamp(-1, 1)

    def decode_bits(self, bits: Sequence[torch.Tensor], schedule: ScaleSchedule) -> torch.Tensor:
        return self.decode(codes_from_bits(bits, schedule.final))

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> BSQTokenizer:
        """Deterministic random weights (tests, smoke runs, benchmarks)."""
        generator = torch.Generator(device=self.decoder.conv_in.conv.weight.device).manual_seed(seed)
        for name, tensor in self.named_parameters():
            if name.endswith("bias"):
                tensor.zero_()
            elif ".norm" in name or name.startswith(("encoder.norm", "decoder.norm")):
                tensor.fill_(1.0)
            else:
                fan_in = tensor[0].numel()
                tensor.normal_(0.0, (1.0 / fan_in) ** 0.5, generator=generator)
        return self


def images_to_uint8(images: torch.Tensor, to_uint8: ToUint8 = "round") -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded or truncated (module docstring)."""
    if to_uint8 == "truncate":  # the releases' expression, in its order of operations
        levels = ((images.float() + 1) / 2).mul(255).clamp(0, 255)
    else:
        levels = ((images.float() + 1) * 127.5).round().clamp(0, 255)
    return levels.to(torch.uint8).permute(0, 2, 3, 1)  # float -> uint8 truncates
