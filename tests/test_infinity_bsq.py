"""The BSQ tokenizer: bit semantics, multi-scale residual quantization, self-correction."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from varbench.models.infinity.bsq import (bits_to_codes, codes_from_bits, multiscale_quantize, quantize_scale,
                                          resize)
from varbench.models.infinity.factory import build_vae
from varbench.models.infinity.schedule import get_schedule

SCHEDULE = get_schedule(5)  # 1, 2, 4, 6, 8 tokens per side


def latents(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 32, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_codes_are_signed_unit_vectors():
    bits = torch.rand(2, 3, 3, 32, generator=torch.Generator().manual_seed(0)) > 0.5
    codes = bits_to_codes(bits)
    assert codes.shape == (2, 32, 3, 3)
    assert torch.allclose(codes.abs(), torch.full((), 32**-0.5))
    assert torch.equal(codes > 0, bits.permute(0, 3, 1, 2))
    assert torch.allclose(codes.norm(dim=1), torch.ones(2, 3, 3))


def test_quantize_scale_is_the_sign_and_ignores_the_norm():
    residual = torch.randn(2, 32, 4, 4)
    bits, codes = quantize_scale(residual)
    assert torch.equal(bits, (residual > 0).permute(0, 2, 3, 1))
    bits_scaled, _ = quantize_scale(residual * 7.5)
    assert torch.equal(bits, bits_scaled)
    assert torch.equal(codes, bits_to_codes(bits))


def test_multiscale_quantize_shapes_and_first_scales():
    z = latents()
    maps = multiscale_quantize(z, SCHEDULE)
    assert [tuple(b.shape) for b in maps.bits] == [(2, h, w, 32) for h, w in SCHEDULE.scales]
    assert maps.labels().shape == (2, SCHEDULE.num_tokens, 32) and maps.labels().dtype == torch.int64
    assert maps.inputs.shape == (2, SCHEDULE.num_tokens - 1, 32)
    # Scale 1 is the sign of the spatial mean (area resize to 1x1).
    assert torch.equal(maps.bits[0][:, 0, 0], z.mean(dim=(2, 3)) > 0)
    # The 1x1 code upsampled is constant, so the 4 inputs of scale 2 all equal code 1.
    code1 = bits_to_codes(maps.bits[0])[:, :, 0, 0]
    assert torch.allclose(maps.inputs[:, :4], code1[:, None, :].expand(2, 4, 32))
    assert torch.allclose(maps.summed, codes_from_bits(maps.bits, SCHEDULE.final))
    # The last scale quantizes the residual itself (no resize).
    last_residual = z - codes_from_bits(maps.bits[:-1], SCHEDULE.final)
    assert torch.equal(maps.bits[-1], (F.normalize(last_residual, dim=1) > 0).permute(0, 2, 3, 1))


def test_next_scale_inputs_follow_the_interpolation_mode():
    z = latents(1)
    tri, area = multiscale_quantize(z, SCHEDULE), multiscale_quantize(z, SCHEDULE, next_input="area")
    for maps in (tri, area):  # labels do not depend on how inputs are resized
        assert all(torch.equal(a, b) for a, b in zip(maps.bits, tri.bits))
    start = 1 + 4 + 16  # the 6x6 scale: tokens 21..56, whose inputs sit one slot earlier (no SOS)
    partial = codes_from_bits(tri.bits[:3], SCHEDULE.final)
    expected = F.interpolate(partial, size=(6, 6), mode="area").flatten(2).transpose(1, 2)
    assert torch.allclose(area.inputs[:, start - 1:start - 1 + 36], expected, atol=1e-6)
    expected_tri = F.interpolate(partial, size=(6, 6), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    assert torch.allclose(tri.inputs[:, start - 1:start - 1 + 36], expected_tri, atol=1e-6)
    assert not torch.allclose(tri.inputs, area.inputs)


def test_bilinear_equals_the_releases_trilinear():
    codes = torch.randn(2, 32, 1, 6, 6)
    trilinear = F.interpolate(codes, size=(1, 8, 8), mode="trilinear").squeeze(2)
    assert torch.allclose(resize(codes.squeeze(2), (8, 8), "trilinear"), trilinear, atol=1e-6)


def test_bitwise_self_correction():
    z = latents(2, batch=4)
    clean = multiscale_quantize(z, SCHEDULE)
    same = multiscale_quantize(z, SCHEDULE, flip_max=0.0)
    assert torch.equal(clean.inputs, same.inputs)
    noisy = multiscale_quantize(z, SCHEDULE, flip_max=0.3, generator=torch.Generator().manual_seed(0))
    again = multiscale_quantize(z, SCHEDULE, flip_max=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy.inputs, again.inputs) and torch.equal(noisy.labels(), again.labels())
    assert torch.equal(noisy.bits[0], clean.bits[0])  # the first labels are clean bits
    flips = [(u ^ b).float().mean().item() for u, b in zip(noisy.used_bits, noisy.bits)]
    assert max(flips) > 0 and max(flips) <= 0.3 + 0.08
    # Every later label is the clean quantization of the residual left by the corrupted sum.
    for k in range(1, SCHEDULE.num_scales):
        corrupted = codes_from_bits(noisy.used_bits[:k], SCHEDULE.final)
        expected, _ = quantize_scale(resize(z - corrupted, SCHEDULE.scales[k], "area"))
        assert torch.equal(noisy.bits[k], expected)
    assert torch.allclose(noisy.summed, codes_from_bits(noisy.used_bits, SCHEDULE.final))
    only_first = multiscale_quantize(z, SCHEDULE, flip_max=0.3, flip_scales=1,
                                     generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(u, b) for u, b in zip(only_first.used_bits[1:], only_first.bits[1:]))


def test_tokenizer_encode_decode_shapes():
    vae = build_vae("infinity-tiny")
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    z = vae.encode(images)
    assert z.shape == (2, 32, 8, 8) and z.dtype == torch.float32
    maps = vae.tokenize(images, SCHEDULE)
    assert torch.allclose(maps.summed, codes_from_bits(maps.bits, SCHEDULE.final))
    decoded = vae.decode(maps.summed)
    assert decoded.shape == (2, 3, 64, 64)
    assert decoded.min() >= -1 and decoded.max() <= 1
    assert torch.equal(vae.decode_bits(maps.bits, SCHEDULE), decoded)
    with pytest.raises(ValueError, match="does not match the schedule"):
        multiscale_quantize(z, get_schedule(4))
