"""baselines.fast.nhwc: a UNet's transformers handing back NHWC activations compute diffusers'
values and gradients, and leave no convolution of an NHWC UNet reading an NCHW input (each
such read is a copy on the GPU). (The fits that install it: tests/test_baselines_fast.py.)"""
from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from baselines.fast import nhwc
from varbench.models.families import FAMILIES, tiny_family
from varbench.models.fast.swaps import Swaps


def unet_and_inputs(family: str, channels_last: bool) -> tuple[torch.nn.Module, tuple, dict]:
    """A tiny `family` UNet (weights NHWC with `channels_last`, all trainable) and fixed inputs."""
    unet = tiny_family(FAMILIES[family]).denoiser.requires_grad_(True)
    unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    generator = torch.Generator().manual_seed(0)
    config = unet.config
    noisy = torch.randn(2, config.in_channels, 16, 16, generator=generator)
    if channels_last:
        noisy = noisy.to(memory_format=torch.channels_last)
    args = (noisy, torch.tensor([10, 500]), torch.randn(2, 7, config.cross_attention_dim, generator=generator))
    keywords = {"return_dict": False}
    if family == "sdxl":
        pooled = unet.add_embedding.linear_1.in_features - config.addition_time_embed_dim * 6
        keywords["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, generator=generator),
                                         "time_ids": torch.randn(2, 6, generator=generator)}
    return unet, args, keywords


def run(unet: torch.nn.Module, args: tuple, keywords: dict) -> tuple[torch.Tensor, list[torch.Tensor], list[str]]:
    """Output, parameter gradients of a loss on it, and the convolutions (but conv_in, which
    reads the caller's latents) whose input was not NHWC."""
    nchw_reads: list[str] = []
    hooks = [conv.register_forward_pre_hook(
        lambda module, inputs, name=name: None if inputs[0].is_contiguous(memory_format=torch.channels_last)
        else nchw_reads.append(name))
        for name, conv in unet.named_modules() if isinstance(conv, torch.nn.Conv2d) and name != "conv_in"]
    try:
        unet.zero_grad(set_to_none=True)
        out = unet(*args, **keywords)[0]
        out.square().mean().backward()
    finally:
        for hook in hooks:
            hook.remove()
    return out.detach(), [p.grad.clone() for p in unet.parameters()], nchw_reads


@pytest.mark.parametrize("family", ["sd15", "sdxl"])  # SD 1.5: 1x1-convolution projections; SDXL: linear
def test_nhwc_transformers_give_diffusers_values_with_no_nchw_reads(family):
    unet, args, keywords = unet_and_inputs(family, channels_last=True)
    plain_out, plain_grads, plain_nchw = run(unet, args, keywords)
    assert plain_nchw  # diffusers' transformers hand NCHW copies to the convolutions after them
    transformers = nhwc.transformers(unet)
    with Swaps() as swaps:
        assert nhwc.install(swaps, "UNet", unet) == len(transformers) > 1
        assert {type(m) for m in transformers} == {nhwc.NHWCTransformer2D}
        out, grads, nchw = run(unet, args, keywords)
    assert nchw == []
    assert {type(m) for m in unet.modules() if isinstance(m, Transformer2DModel)} == {Transformer2DModel}  # undone
    # SD 1.5's values are the same; SDXL's differ by fp32 rounding (a convolution after a
    # transformer runs another CPU kernel for an NHWC input)
    torch.testing.assert_close(out, plain_out, rtol=1e-4, atol=1e-5)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-5)


def test_an_nchw_unet_runs_diffusers_code_unchanged():
    unet, args, keywords = unet_and_inputs("sd15", channels_last=False)
    plain_out, plain_grads, _ = run(unet, args, keywords)
    with Swaps() as swaps:
        nhwc.install(swaps, "UNet", unet)
        out, grads, _ = run(unet, args, keywords)
    assert torch.equal(out, plain_out)
    assert all(torch.equal(grad, plain_grad) for grad, plain_grad in zip(grads, plain_grads, strict=True))
