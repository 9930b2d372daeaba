"""Nearest 2x upsampling + 3x3 convolution computed on the small input
(varbench.models.fast.upsample) equals the plain computation, in values, layout and
gradients, and so does the Infinity decoder's sub-pixel upsampler (the speed layer's
swap for the plain one, which is the released computation itself)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varbench.models.fast.upsample import phase_weights, upsample_conv
from varbench.models.infinity.autoencoder import Upsample
from varbench.models.infinity.fast.ops import SubPixelUpsample


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 4, 6), (1, 3, 3, 1, 1), (3, 8, 4, 5, 3)])
def test_equals_upsample_then_conv(shape, channels_last):
    batch, c_in, c_out, height, width = shape
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(batch, c_in, height, width, dtype=torch.float64, generator=generator)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, generator=generator)
    bias = torch.randn(c_out, dtype=torch.float64, generator=generator)
    expected = reference(x, weight, bias)
    got = upsample_conv(x, weight, bias)
    assert got.shape == expected.shape == (batch, c_out, 2 * height, 2 * width)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for layout in (torch.channels_last, torch.contiguous_format):  # the layout the plain computation gives
        assert got.is_contiguous(memory_format=layout) == expected.is_contiguous(memory_format=layout)
    torch.testing.assert_close(upsample_conv(x, weight, None), reference(x, weight, None), rtol=0, atol=1e-12)


def test_phase_weights_sum_the_taps_each_parity_sees():
    weight = torch.arange(9.0).reshape(1, 1, 3, 3)  # rows [0 1 2], [3 4 5], [6 7 8]
    phases = phase_weights(weight)
    assert phases.shape == (4, 1, 2, 2)
    # even row, even column: rows (i-1 | i, i) and columns (j-1 | j, j)
    assert phases[0, 0].tolist() == [[0.0, 1 + 2], [3 + 6, 4 + 5 + 7 + 8]]
    # odd row, odd column: rows (i, i | i+1) and columns (j, j | j+1)
    assert phases[3, 0].tolist() == [[0 + 1 + 3 + 4, 2 + 5], [6 + 7, 8.0]]
    assert phases.sum(dim=(1, 2, 3)).tolist() == [36.0] * 4  # every tap counted once per parity


def test_bf16_weights_are_summed_in_fp32():
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.bfloat16)
    # Even-row, even-column phase, tap (1, 1) = (w11 + w21) + (w12 + w22). In bf16 (spacing
    # 2^-7 at 1) 1 + 2^-8 rounds to 1 twice; in fp32 the sum is 1 + 2^-7, a bf16 value.
    weight[0, 0, 1, 1] = 1.0
    weight[0, 0, 2, 1] = 2.0 ** -8
    weight[0, 0, 1, 2] = 2.0 ** -8
    phases = phase_weights(weight)
    assert phases.dtype == torch.bfloat16
    assert phases[0, 0, 1, 1].item() == 1 + 2.0 ** -7


def test_gradients_match():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(2, 6, 10, 6, dtype=torch.float64, generator=generator)
    got = torch.autograd.grad((upsample_conv(x, weight, bias) * upstream).sum(), (x, weight, bias))
    expected = torch.autograd.grad((reference(x, weight, bias) * upstream).sum(), (x, weight, bias))
    for have, want in zip(got, expected):
        torch.testing.assert_close(have, want, rtol=0, atol=1e-11)


def test_infinity_decoder_upsample_is_the_released_computation():
    torch.manual_seed(0)
    module = Upsample(8).double()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    conv = module.conv.conv
    assert torch.equal(module(x), reference(x, conv.weight, conv.bias))  # the plain module: exactly
    module.__class__ = SubPixelUpsample  # what the speed layer swaps in
    torch.testing.assert_close(module(x), reference(x, conv.weight, conv.bias), rtol=0, atol=1e-12)
    assert set(module.state_dict()) == {"conv.conv.weight", "conv.conv.bias"}  # released key names
