"""The CNN autoencoder of the BSQ tokenizer (`infinity_vae_d32reg`), named as released.

Encoder: conv_in -> per level `num_res_blocks` ResNet blocks (+ a stride-2 downsample on
every level but the last) -> mid (2 ResNet blocks) -> GroupNorm, SiLU, conv_out to `bits`
channels. Decoder mirrors it with one more ResNet block per level and nearest 2x
upsampling + conv. No attention. GroupNorm uses 32 groups (24 where 32 do not divide).

Module names reproduce the released wrappers: every convolution sits at `<name>.conv`
and every GroupNorm at `<name>.norm`, so keys read e.g. `encoder.conv_in.conv.weight`,
`decoder.up.4.upsample.conv.conv.weight`, `encoder.down.0.block.0.norm1.norm.weight`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from varbench.models.infinity.architecture import TokenizerConfig


class Conv(nn.Module):
    """A Conv2d held at `.conv` (the release wraps 2D/3D convolutions this way)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Normalize(nn.Module):
    """A GroupNorm held at `.norm`."""

    def __init__(self, channels: int):
        super().__init__()
        groups = 32 if channels % 32 == 0 else 24
        if channels % groups:
            raise ValueError(f"{channels} channels divide into neither 32 nor 24 groups")
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = Conv(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.conv2 = Conv(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = Conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding: right and bottom only


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _level() -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList()
    level.attn = nn.ModuleList()  # always empty: the d32reg tokenizer has no attention
    return level


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


class Encoder(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        ch, mult = config.base_channels, config.channel_mult
        self.conv_in = Conv(config.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for index, factor in enumerate(mult):
            level = _level()
            for _ in range(config.num_res_blocks):
                level.block.append(ResnetBlock(block_in, ch * factor))
                block_in = ch * factor
            if index < len(mult) - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = _mid(block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, config.bits, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        ch, mult = config.base_channels, config.channel_mult
        block_in = ch * mult[-1]
        self.conv_in = Conv(config.bits, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        levels = []
        for index in reversed(range(len(mult))):
            level = _level()
            for _ in range(config.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, ch * mult[index]))
                block_in = ch * mult[index]
            if index > 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up[i] works at the resolution of encoder level i
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
