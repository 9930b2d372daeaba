"""GroupNorm from per-channel statistics (varbench.models.fast.groupnorm) equals torch's, in
values and dtype, for every layout and rank; ChannelStatsGroupNorm is torch's module when
eager and the per-channel form when compiled; the swap keeps parameters and keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varbench.models.fast import groupnorm
from varbench.models.fast.groupnorm import ChannelStatsGroupNorm, group_norm, use_channel_stats


@pytest.mark.parametrize("shape, groups", [((3, 12, 5, 7), 4), ((2, 12, 9), 3), ((1, 8, 4, 4), 8), ((2, 6, 3, 2), 1),
                                           ((4, 6), 3)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_equals_torch_group_norm(shape, groups, channels_last, affine):
    generator = torch.Generator().manual_seed(len(shape) + groups)
    # a large mean against a small spread: what a one-pass E[x^2] - E[x]^2 would get wrong
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * 0.5 + 40.0
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(shape[1], dtype=torch.float64, generator=generator) if affine else None
    bias = torch.randn(shape[1], dtype=torch.float64, generator=generator) if affine else None
    torch.testing.assert_close(group_norm(x, groups, weight, bias, 1e-6), F.group_norm(x, groups, weight, bias, 1e-6),
                               rtol=0, atol=1e-10)


def test_dtype_follows_torch_with_and_without_autocast():
    x = (torch.randn(2, 16, 6, 6) * 3 + 1).to(torch.bfloat16)
    norm = nn.GroupNorm(4, 16).to(torch.bfloat16)
    out = group_norm(x, 4, norm.weight, norm.bias, norm.eps)
    assert out.dtype == norm(x).dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x).float(), rtol=0, atol=0.04)  # bf16 rounding of the output
    norm = nn.GroupNorm(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # CPU autocast leaves GroupNorm in the input's dtype
        expected = norm(x)
        got = group_norm(x, 4, norm.weight, norm.bias, norm.eps)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=0.04)


def test_module_is_torchs_when_eager_and_channel_stats_when_compiled(monkeypatch):
    torch.manual_seed(0)
    plain = nn.GroupNorm(4, 16)
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    ours = ChannelStatsGroupNorm(4, 16)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 8, 8) * 2 + 3
    assert torch.equal(ours(x), plain(x))  # eager: the very same kernel
    traced = []

    def recording(*args, **kwargs):
        traced.append(args[1])
        return group_norm(*args, **kwargs)

    monkeypatch.setattr(groupnorm, "group_norm", recording)
    torch._dynamo.reset()
    compiled = torch.compile(ours)(x)
    assert traced == [4]  # traced through the per-channel form, with the module's groups
    torch.testing.assert_close(compiled, plain(x), rtol=0, atol=1e-5)


def test_use_channel_stats_swaps_every_plain_group_norm_in_place():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Sequential(nn.GroupNorm(4, 8)), nn.LayerNorm(4))
    keys, parameters = list(model.state_dict()), [id(p) for p in model.parameters()]
    assert use_channel_stats(model) == 2
    assert [type(m) for m in model.modules()].count(ChannelStatsGroupNorm) == 2
    assert list(model.state_dict()) == keys and [id(p) for p in model.parameters()] == parameters
    assert use_channel_stats(model) == 0  # already swapped
