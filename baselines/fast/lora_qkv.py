"""Self-attention's LoRA q/k/v projections in one pass (DreamBooth-LoRA's UNet fits).

peft adapts `to_q`, `to_k` and `to_v` as three layers, each reading the same input. Per
self-attention and step that is three frozen products, six rank-r products and three adds
forward, and, where the input needs a gradient (every self-attention after the first
adapted one), three frozen products and twelve rank-r products backward. At rank 4 the
rank-r products are memory-bound passes over whole activations for a tiny share of the
FLOPs: all of SDXL's adapters take about 28 ms of a 207 ms compiled step on an H100
(benchmarks/NOTES-baselines.md, seventeenth session), q/k/v about half of that.

Here the three adapters are one LoRA: their A matrices stacked (one down-projection reads
the input once), their scaled B matrices on a block diagonal (the zero blocks add exact
zeros), and the frozen weights stacked too, as diffusers' fused projections do. Forward:
one frozen product, one down-projection, and one up-projection that adds the frozen
output in its epilogue (`addmm`); backward: one frozen product and four rank-r products.
What it costs: the stacked frozen weights are copied every step and kept for the backward
(SDXL: about 0.6 GB), and the backward concatenates the q/k/v gradients, as it does for
diffusers' fused projections.

The same sums in a different grouping: equal to peft's computation up to rounding
(tests/test_baselines_lora_qkv.py). Any case the plain processor handles and this one
does not (cross-attention, masks, norms, a residual, 4-D input, merged or disabled or
several adapters, dropout, DoRA, a bias on B) runs the plain processor.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn


class LoraQKVAttnProcessor(AttnProcessor2_0):
    """diffusers' `AttnProcessor2_0`, with a self-attention's adapted q/k/v computed by
    `lora_qkv`. Installed by swapping the class of a UNet's processors (no state of its own)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        plain = encoder_hidden_states is not None or attention_mask is not None or args or kwargs
        adapter = None if plain or hidden_states.ndim != 3 else plain_self_attention(attn)
        if adapter is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        batch = hidden_states.shape[0]
        query, key, value = lora_qkv(attn, hidden_states, adapter)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def plain_self_attention(attn: Any) -> str | None:
    """The adapter of `attn`'s q/k/v (`active_adapter`) if `attn` does nothing around q/k/v
    and SDPA that `LoraQKVAttnProcessor` skips; else None."""
    no_extras = (attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None
                 and attn.norm_k is None and not attn.residual_connection and attn.rescale_output_factor == 1.0)
    return active_adapter(attn) if no_extras else None


def active_adapter(attn: Any) -> str | None:
    """The one adapter active on all of `attn`'s q/k/v, if each computes peft's plain LoRA
    with it on an `nn.Linear` (unmerged, no dropout, no variant such as DoRA, no bias on
    B) and their frozen biases are all there or all absent; else None."""
    from peft.tuners.lora import Linear

    layers = (attn.to_q, attn.to_k, attn.to_v)
    if not all(isinstance(layer, Linear) and isinstance(layer.base_layer, nn.Linear) for layer in layers):
        return None
    if len({layer.base_layer.bias is None for layer in layers}) != 1:
        return None
    active = {tuple(layer.active_adapters) for layer in layers}
    if len(active) != 1 or len(names := next(iter(active))) != 1:
        return None
    (name,) = names
    for layer in layers:
        if (layer.disable_adapters or layer.merged or name not in layer.lora_A or name in layer.lora_variant
                or not isinstance(layer.lora_dropout[name], nn.Identity) or layer.lora_B[name].bias is not None):
            return None
    return name


def lora_qkv(attn: Any, x: torch.Tensor, name: str) -> tuple[torch.Tensor, ...]:
    """q, k, v of `x` through `attn`'s projections adapted by `name`: each frozen projection
    plus scaling * B(A(x)), as peft computes them, with the three adapters as one."""
    layers = (attn.to_q, attn.to_k, attn.to_v)
    frozen = [layer.base_layer for layer in layers]
    weight = torch.cat([linear.weight for linear in frozen])
    bias = None if frozen[0].bias is None else torch.cat([linear.bias for linear in frozen])
    down = torch.cat([layer.lora_A[name].weight for layer in layers])
    up = torch.block_diag(*(layer.lora_B[name].weight * layer.scaling[name] for layer in layers))
    rows = x.reshape(-1, x.shape[-1])
    base = F.linear(rows, weight, bias)
    low = F.linear(rows.to(down.dtype), down)  # as peft: the input in the adapters' dtype
    if low.dtype == base.dtype:  # fp32 throughout, or both in autocast's dtype
        qkv = torch.addmm(base, low, up.t())
    else:  # as peft: the sum back in the frozen projections' dtype
        qkv = (base + F.linear(low, up)).to(base.dtype)
    qkv = qkv.view(*x.shape[:-1], -1)
    return qkv.split([linear.out_features for linear in frozen], dim=-1)


def processors(denoiser: nn.Module) -> list[AttnProcessor2_0]:
    """The processors of `denoiser`'s self-attentions that are exactly diffusers'
    `AttnProcessor2_0` (the ones `LoraQKVAttnProcessor` may stand in for), each once."""
    found = {id(p): p for m in denoiser.modules() if not getattr(m, "is_cross_attention", True)
             and type(p := getattr(m, "processor", None)) is AttnProcessor2_0}
    return list(found.values())
