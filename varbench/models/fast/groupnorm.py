"""GroupNorm from per-channel statistics: the same function, a faster reduction order
under torch.compile.

`F.group_norm` reduces each (sample, group) block in one pass. When the activations are
channels-last (NHWC), as inductor lays out the VAE decoders' convolutions, a group's
channels are scattered across every pixel row and the compiled reduction is slow (in
the compiled Infinity decoder, GroupNorm kernels took more GPU time than the
convolutions; benchmarks/NOTES-infinity.md). Here each channel's mean and variance come
first (a reduction over pixels, coalesced in either layout; one Welford pass under
inductor), and a group's variance is combined exactly from its channels':
var_group = mean over its channels of (var_c + (mean_c - mean_group)^2).

Eager PyTorch runs its own GroupNorm kernel faster (one kernel instead of several), so
`ChannelStatsGroupNorm` uses these statistics only while torch.compile traces it; eager
calls run torch's kernel. Figures: benchmarks/NOTES-infinity.md, NOTES-baselines.md.
"""
from __future__ import annotations

import torch
from torch import nn


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float) -> torch.Tensor:
    """`F.group_norm(x, groups, weight, bias, eps)` for (B, C, *) x, computed in at least
    fp32 and returned as torch returns it: in x's dtype, or in fp32 under CUDA autocast
    (which runs GroupNorm in fp32; CPU autocast leaves it alone)."""
    if x.dim() == 2:  # (B, C): one pixel per channel (an empty reduction below would mean "all dims")
        return group_norm(x[..., None], groups, weight, bias, eps)[..., 0]
    batch, channels = x.shape[:2]
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    var_c, mean_c = torch.var_mean(wide, dim=tuple(range(2, x.dim())), correction=0)  # (B, C)
    mean_c, var_c = mean_c.view(batch, groups, -1), var_c.view(batch, groups, -1)
    mean_g = mean_c.mean(-1, keepdim=True)  # channels have equal pixel counts: plain means combine
    var_g = (var_c + (mean_c - mean_g).square()).mean(-1, keepdim=True)
    scale = torch.rsqrt(var_g + eps).expand_as(mean_c).reshape(batch, channels)
    if weight is not None:
        scale = scale * weight
    shift = -mean_g.expand_as(mean_c).reshape(batch, channels) * scale
    if bias is not None:
        shift = shift + bias
    spatial = (1,) * (x.dim() - 2)
    out = wide * scale.view(batch, channels, *spatial) + shift.view(batch, channels, *spatial)
    return out if x.is_cuda and torch.is_autocast_enabled("cuda") else out.to(x.dtype)


class ChannelStatsGroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters, same state-dict keys) that torch.compile traces as
    `group_norm` above; eager calls run torch's kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def use_channel_stats(model: nn.Module) -> int:
    """Make every plain `nn.GroupNorm` in `model` a `ChannelStatsGroupNorm`, in place (the
    class changes, the module and its parameters stay). Returns how many changed."""
    plain = [module for module in model.modules() if type(module) is nn.GroupNorm]
    for module in plain:
        module.__class__ = ChannelStatsGroupNorm
    return len(plain)
