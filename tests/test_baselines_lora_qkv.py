"""baselines.fast.lora_qkv against peft's plain computation, on the CPU: a UNet self-attention's
adapted q/k/v as one LoRA gives peft's values and gradients; whatever it does not handle
runs the plain processor; DreamBooth-LoRA's `fuse_lora_qkv` swaps it in for a fit only."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from baselines import train_dreambooth_lora
from baselines.fast import calls, lora_qkv
from baselines.fast.lora_qkv import LoraQKVAttnProcessor
from baselines.train_dreambooth_lora import add_lora
from varbench.models.families import FAMILIES, tiny_family
from varbench.models.fast.swaps import Swaps


def adapted_unet(family: str, alpha: int = 8, dropout: float = 0.0):
    """A tiny `family` UNet with rank-4 adapters (scaling alpha / 4) whose B is not zero, so
    the adapters change the output; only the adapters train."""
    denoiser = tiny_family(FAMILIES[family]).denoiser
    add_lora(denoiser, family, SimpleNamespace(rank=4, lora_alpha=alpha), 1)
    if dropout:
        from peft import LoraConfig

        denoiser.delete_adapters("default")
        denoiser.add_adapter(LoraConfig(r=4, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights="gaussian",
                                        target_modules=["to_q", "to_k", "to_v"]))
    generator = torch.Generator().manual_seed(0)
    denoiser.requires_grad_(False)
    params = [param for name, param in denoiser.named_parameters() if ".lora_" in name]
    for name, param in denoiser.named_parameters():
        if ".lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    for param in params:
        param.data = param.data.float()
        param.requires_grad_(True)
    return denoiser, params


def unet_inputs(denoiser, family: str) -> tuple[tuple, dict]:
    """Fixed random inputs for a call of the tiny `family` UNet `denoiser`."""
    config = denoiser.config
    generator = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, config.in_channels, 8, 8, generator=generator)
    states = torch.randn(2, 7, config.cross_attention_dim, generator=generator)
    extra = {}
    if family == "sdxl":
        pooled = denoiser.add_embedding.linear_1.in_features - config.addition_time_embed_dim * 6
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, generator=generator),
                                      "time_ids": torch.randn(2, 6, generator=generator)}
    return (noisy, torch.tensor([10, 500]), states), {"return_dict": False, **extra}


def output_and_gradients(denoiser, family: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`denoiser`'s output on `unet_inputs` and the gradients of a loss on it for its trainable parameters."""
    args, kwargs = unet_inputs(denoiser, family)
    params = [param for param in denoiser.parameters() if param.requires_grad]
    for param in params:
        param.grad = None
    out = denoiser(*args, **kwargs)[0]
    out.square().mean().backward()
    return out.detach(), [param.grad.clone() for param in params]


@pytest.fixture
def fused_calls(monkeypatch):
    """The attention modules `lora_qkv.lora_qkv` computed q/k/v for, one entry per call."""
    seen, plain = [], lora_qkv.lora_qkv
    monkeypatch.setattr(lora_qkv, "lora_qkv", lambda attn, *args: seen.append(attn) or plain(attn, *args))
    return seen


def fused(denoiser) -> Swaps:
    swaps = Swaps()
    swaps.set_class("test", lora_qkv.processors(denoiser), LoraQKVAttnProcessor)
    return swaps


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_one_pass_gives_peft_values_and_gradients(family, fused_calls):
    denoiser, _ = adapted_unet(family)
    plain_out, plain_grads = output_and_gradients(denoiser, family)
    with fused(denoiser):
        out, grads = output_and_gradients(denoiser, family)
    self_attentions = [m for name, m in denoiser.named_modules() if name.endswith("attn1")]
    # each self-attention once, no cross-attention
    assert len(self_attentions) > 1 and sorted(map(id, fused_calls)) == sorted(map(id, self_attentions))
    torch.testing.assert_close(out, plain_out, rtol=1e-5, atol=1e-5)
    assert all(grad.abs().max() > 0 for grad in grads)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-7)
    assert all(type(p) is AttnProcessor2_0 for p in lora_qkv.processors(denoiser))  # the swap undone
    assert torch.equal(output_and_gradients(denoiser, family)[0], plain_out)


@pytest.mark.parametrize("change", ["merged", "disabled", "dropout"])
def test_what_it_does_not_handle_runs_the_plain_processor(change, fused_calls):
    denoiser, _ = adapted_unet("sd15", dropout=0.1 if change == "dropout" else 0.0)
    if change == "merged":
        for module in denoiser.modules():
            if hasattr(module, "merge") and hasattr(module, "lora_A"):
                module.merge()
    elif change == "disabled":
        denoiser.disable_adapters()
    denoiser.eval()  # (dropout: the same values in both runs)
    args, kwargs = unet_inputs(denoiser, "sd15")
    with torch.no_grad():
        plain_out = denoiser(*args, **kwargs)[0]
        with fused(denoiser):
            out = denoiser(*args, **kwargs)[0]
    assert fused_calls == []
    assert torch.equal(out, plain_out)
