"""baselines.fast.lora_qkv against peft's plain computation, on the CPU (and on CUDA under
bf16 where a GPU is present): a UNet self-attention's adapted q/k/v as one LoRA gives
peft's values and gradients; whatever it does not handle runs the plain processor. (A fit
with DreamBooth-LoRA's `fuse_lora_qkv`: tests/test_baselines_fast.py.)"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from baselines.fast import lora_qkv
from baselines.fast.lora_qkv import LoraQKVAttnProcessor
from baselines.train_dreambooth_lora import add_lora
from varbench.models.families import FAMILIES, tiny_family
from varbench.models.fast.swaps import Swaps


def adapted_unet(family: str):
    """A tiny `family` UNet with DreamBooth-LoRA's rank-4 adapters, scaling 2, whose B is not
    zero, so the adapters change the output; only the adapters train."""
    denoiser = tiny_family(FAMILIES[family]).denoiser
    add_lora(denoiser, family, SimpleNamespace(rank=4, lora_alpha=8), 1)
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
    """Fixed random inputs for a call of the tiny `family` UNet `denoiser`, on its device."""
    config = denoiser.config
    generator = torch.Generator().manual_seed(1)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(denoiser.device)

    args = (draw(2, config.in_channels, 8, 8), torch.tensor([10, 500], device=denoiser.device),
            draw(2, 7, config.cross_attention_dim))
    keywords = {"return_dict": False}
    if family == "sdxl":
        pooled = denoiser.add_embedding.linear_1.in_features - config.addition_time_embed_dim * 6
        keywords["added_cond_kwargs"] = {"text_embeds": draw(2, pooled), "time_ids": draw(2, 6)}
    return args, keywords


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


def processor_classes(module) -> set[type]:
    return {type(m.processor) for m in module.modules() if hasattr(m, "processor")}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_one_pass_gives_peft_values_and_gradients(family, fused_calls):
    denoiser, _ = adapted_unet(family)
    plain_out, plain_grads = output_and_gradients(denoiser, family)
    with fused(denoiser):
        swapped = [m for m in denoiser.modules() if type(getattr(m, "processor", None)) is LoraQKVAttnProcessor]
        out, grads = output_and_gradients(denoiser, family)
    self_attentions = [m for name, m in denoiser.named_modules() if name.endswith("attn1")]
    # each self-attention once, no cross-attention
    assert len(self_attentions) > 1 and sorted(map(id, fused_calls)) == sorted(map(id, self_attentions))
    assert sorted(map(id, swapped)) == sorted(map(id, self_attentions))  # only they are swapped
    torch.testing.assert_close(out, plain_out, rtol=1e-5, atol=1e-5)
    assert all(grad.abs().max() > 0 for grad in grads)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-7)
    assert processor_classes(denoiser) == {AttnProcessor2_0}  # the swap undone


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float() - reference).norm() / reference.norm())


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_under_bf16_autocast_the_one_pass_is_as_accurate_as_peft(family, device, fused_calls):
    """As the fits run (bf16 autocast; on a GPU, its kernels and SDPA on the strided q/k/v
    views), against the fp32 computation: element by element bf16's rounding differs, so
    the errors are compared (on the CPU: 1.5-1.7% for the output, 4-5% on average for the
    gradients, both ways)."""
    denoiser, _ = adapted_unet(family)
    denoiser.to(device)
    reference_out, reference_grads = output_and_gradients(denoiser, family)
    with torch.autocast(device, torch.bfloat16):
        plain_out, plain_grads = output_and_gradients(denoiser, family)
        with fused(denoiser):
            out, grads = output_and_gradients(denoiser, family)
    assert fused_calls
    assert relative_error(out, reference_out) <= 1.25 * relative_error(plain_out, reference_out) + 1e-3
    errors = [relative_error(g, r) for g, r in zip(grads, reference_grads, strict=True)]
    plain_errors = [relative_error(g, r) for g, r in zip(plain_grads, reference_grads, strict=True)]
    assert sum(errors) <= 1.25 * sum(plain_errors) and max(errors) <= 2 * max(plain_errors)


def adapted_attention(lora: dict | None = None, **attention):
    """One diffusers self-attention (32 wide, 2 heads) with a peft adapter on q/k/v (rank 4,
    scaling 2, B not zero), or as `lora` and `attention` say."""
    from peft import LoraConfig, inject_adapter_in_model

    attn = Attention(query_dim=32, heads=2, dim_head=16, **attention)
    options = dict(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v"])
    inject_adapter_in_model(LoraConfig(**{**options, **(lora or {})}), attn)
    generator = torch.Generator().manual_seed(2)
    for name, param in attn.named_parameters():
        if ".lora_B" in name or "bias" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return attn


def attention_output(attn, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`attn`'s output with its own processor, then with `LoraQKVAttnProcessor`."""
    with torch.no_grad():
        plain = attn(*args, **kwargs)
        with fused(attn):
            return plain, attn(*args, **kwargs)


TOKENS = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("case", ["frozen biases, ranks 4, 2, 4", "bf16 frozen, fp32 adapters",
                                  "the same under bf16 autocast"])
def test_one_pass_covers_biases_ranks_and_mixed_precision(case, fused_calls):
    if case.startswith("frozen"):
        attn = adapted_attention({"rank_pattern": {"to_k": 2}}, bias=True)
    else:
        attn = adapted_attention()
        for layer in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
            (layer.base_layer if hasattr(layer, "base_layer") else layer).to(torch.bfloat16)
    tokens = TOKENS if case.startswith("frozen") else TOKENS.bfloat16()
    with torch.autocast("cpu", torch.bfloat16, enabled=case.endswith("autocast")):
        plain, out = attention_output(attn, tokens)
    assert fused_calls == [attn] and out.dtype == plain.dtype
    exact = case.startswith("frozen")
    torch.testing.assert_close(out, plain, rtol=1e-5 if exact else 2e-2, atol=1e-6 if exact else 1e-2)


def changed(case: str) -> tuple:
    """An adapted self-attention, its input and keywords, that `LoraQKVAttnProcessor` must
    leave to the plain processor, for `case` (any other case: a plain one it takes)."""
    lora = {"DoRA": {"use_dora": True}, "bias on B": {"lora_bias": True, "init_lora_weights": True},
            "dropout": {"lora_dropout": 0.1}}.get(case)
    attention = {"residual": {"residual_connection": True}, "norms": {"qk_norm": "layer_norm"},
                 "one frozen bias": {"bias": True}, "bias on B": {"bias": True}}.get(case, {})
    attn = adapted_attention(lora, **attention).eval()  # (dropout: the same values in both runs)
    layers = (attn.to_q, attn.to_k, attn.to_v)
    if case == "merged":
        for layer in layers:
            layer.merge()
    elif case == "disabled":
        for layer in layers:
            layer.enable_adapters(False)
    elif case == "two adapters":
        from peft import LoraConfig, inject_adapter_in_model

        with warnings.catch_warnings():  # (peft warns that a second adapter is added, as intended)
            warnings.simplefilter("ignore", UserWarning)
            inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q", "to_k", "to_v"]), attn,
                                    adapter_name="more")
        for layer in layers:
            layer.set_adapter(["default", "more"])
    elif case == "one frozen bias":
        attn.to_k.base_layer.bias = None
    keywords = {"mask": {"attention_mask": torch.zeros(2, 1, 6)},
                "cross-attention call": {"encoder_hidden_states": TOKENS.flip(1)}}.get(case, {})
    tokens = TOKENS.transpose(1, 2).reshape(2, 32, 2, 3) if case == "4-D input" else TOKENS
    return attn, tokens, keywords


@pytest.mark.parametrize("case", ["DoRA", "bias on B", "dropout", "residual", "norms", "merged", "disabled",
                                  "two adapters", "one frozen bias", "mask", "cross-attention call", "4-D input"])
def test_what_it_does_not_handle_runs_the_plain_processor(case, fused_calls):
    attn, tokens, keywords = changed(case)
    plain, out = attention_output(attn, tokens, **keywords)
    assert fused_calls == []
    assert torch.equal(out, plain)


def test_the_plain_case_takes_the_one_pass(fused_calls):
    """(the control for the cases above: the same attention, called plainly)"""
    attn, tokens, keywords = changed("none")
    attention_output(attn, tokens, **keywords)
    assert fused_calls == [attn]
