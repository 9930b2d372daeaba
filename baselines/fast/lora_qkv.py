"""Self-attention's LoRA q/k/v projections in one pass (DreamBooth-LoRA's UNet fits).

peft adapts `to_q`, `to_k` and `to_v` as three layers, each reading the same input: per
step that is three rank-r down-projections of the whole activation, three up-projections
and three adds forward, and nine rank-r products backward. At rank 4 these are
memory-bound passes for a tiny share of the FLOPs (SDXL: about 28 ms of a 207 ms step on
an H100, over ~3,000 small GEMM calls; benchmarks/NOTES-baselines.md). Here one
down-projection reads the input once for all three (their A matrices stacked), one
up-projection writes all three (their B matrices, scaled, on a block diagonal; the zero
blocks add exact zeros), and one add joins them to the three frozen projections'
outputs, so the backward has one product per role instead of three.

The same sums in a different grouping: equal to peft's computation up to rounding
(tests/test_baselines_fast.py). Any layout the plain processor handles and this one does
not (cross-attention, masks, norms, merged or disabled adapters, dropout, DoRA) runs
the plain processor.
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
    with it (unmerged, no dropout, no variant such as DoRA, no bias on B); else None."""
    from peft.tuners.lora import Linear

    layers = (attn.to_q, attn.to_k, attn.to_v)
    if not all(isinstance(layer, Linear) for layer in layers):
        return None
    names = {tuple(layer.active_adapters) for layer in layers}
    if len(names) != 1 or len(name := next(iter(names))) != 1:
        return None
    (name,) = name
    for layer in layers:
        if (layer.disable_adapters or layer.merged or name not in layer.lora_A or name in layer.lora_variant
                or not isinstance(layer.lora_dropout[name], nn.Identity) or layer.lora_B[name].bias is not None):
            return None
    return name


def lora_qkv(attn: Any, x: torch.Tensor, name: str) -> tuple[torch.Tensor, ...]:
    """q, k, v of `x` through `attn`'s projections adapted by `name`: each frozen projection
    plus scaling * B(A(x)), as peft computes them, with the three adapters as one."""
    layers = (attn.to_q, attn.to_k, attn.to_v)
    down = torch.cat([layer.lora_A[name].weight for layer in layers])
    up = torch.block_diag(*(layer.lora_B[name].weight * layer.scaling[name] for layer in layers))
    base = torch.cat([layer.base_layer(x) for layer in layers], dim=-1)
    # As peft: the input in the adapters' dtype (under autocast the products still run in
    # its dtype), the sum back in the frozen projections'.
    qkv = (base + F.linear(F.linear(x.to(down.dtype), down), up)).to(base.dtype)
    return qkv.split([layer.base_layer.out_features for layer in layers], dim=-1)


def processors(denoiser: nn.Module) -> list[AttnProcessor2_0]:
    """`denoiser`'s attention processors that are exactly diffusers' `AttnProcessor2_0`
    (the ones `LoraQKVAttnProcessor` may stand in for), each once."""
    found = {id(p): p for m in denoiser.modules() if type(p := getattr(m, "processor", None)) is AttnProcessor2_0}
    return list(found.values())
