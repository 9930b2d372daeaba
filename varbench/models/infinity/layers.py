"""The building blocks of the Infinity transformer, named as in the released checkpoint.

Attention runs through PyTorch's scaled_dot_product_attention (flash / memory-efficient
kernels on GPU, plain math on CPU). Every module computes its norms and AdaLN modulation in fp32 and its matrix products
in the dtype of its weights, or in the autocast dtype when autocast is on (inputs are
cast to the weight dtype first, so a bf16 model also runs without autocast).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from varbench.models.infinity.rope import apply_rope

def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention; q (B, H, Lq, d), k/v (B, H, Lk, d); mask True = may attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class KVCache:
    """Keys and values of one self-attention layer, allocated once for the whole sequence."""

    def __init__(self, length: int):
        self.length = length
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def allocate(self, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device) -> None:
        """Allocate now (B, H, length, d) instead of on the first write."""
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)

    def extend(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, H, n, d) at positions start..start+n; return all keys/values so far."""
        end = start + k.shape[2]
        if self.k is None:
            self.allocate((k.shape[0], k.shape[1], self.length, k.shape[3]), k.dtype, k.device)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    """Cosine self-attention with 2D RoPE: q, k L2-normalised, q scaled by a learned
    per-head factor exp(min(scale_mul, ln 100)), softmax scale 1."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, spans: tuple[tuple[int, int, int], ...],
                cache: KVCache | None = None, cache_start: int = 0) -> torch.Tensor:
        """x (B, n, C). Without a cache, `spans` = ((q_start, q_end, k_end), ...) says which
        queries see which key prefix (block-causal training: one span per scale). With a
        cache, the n tokens are written at `cache_start` and attend to everything cached."""
        B, n, C = x.shape
        weight = self.mat_qkv.weight
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias)).to(weight.dtype)
        qkv = F.linear(x.to(weight.dtype), weight, bias)
        q, k, v = qkv.view(B, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scale_mul = self.scale_mul_1H11.float().clamp(max=math.log(100.0)).exp()
        q = normalize_and_rotate(q, rope, scale_mul).to(v.dtype)
        k = normalize_and_rotate(k, rope).to(v.dtype)
        if cache is not None:
            k_all, v_all = cache.extend(cache_start, k, v)
            out = attend(q, k_all, v_all, scale=1.0)
        elif len(spans) == 1:
            q_start, q_end, k_end = spans[0]
            out = attend(q[:, :, q_start:q_end], k[:, :, :k_end], v[:, :, :k_end], scale=1.0)
        else:
            out = torch.cat([attend(q[:, :, s:e], k[:, :, :kend], v[:, :, :kend], scale=1.0)
                             for s, e, kend in spans], dim=2)
        return self.proj(out.transpose(1, 2).reshape(B, n, C))


def normalize_and_rotate(x: torch.Tensor, rope: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalise the last dim in fp32 (times `scale`), then apply RoPE; returns fp32.

    Written for few memory passes: the norm is read straight from the bf16 input and
    the normalising factor is applied while converting to fp32."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    factor = norm.clamp(min=1e-12).reciprocal()
    if scale is not None:
        factor = factor * scale
    return apply_rope(x * factor, rope)


class CrossAttention(nn.Module):
    """Attention from image tokens to the projected text tokens of the same sample."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.mat_q = nn.Linear(width, width)
        self.mat_kv = nn.Linear(width, 2 * width, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, Lt, d) of the projected text (B, Lt, C)."""
        B, Lt, _ = text.shape
        weight = self.mat_kv.weight
        bias = torch.cat((self.zero_k_bias, self.v_bias)).to(weight.dtype)
        kv = F.linear(text.to(weight.dtype), weight, bias)
        k, v = kv.view(B, Lt, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(self, x: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor],
                text_mask: torch.Tensor | None) -> torch.Tensor:
        B, n, C = x.shape
        q = self.mat_q(x.to(self.mat_q.weight.dtype)).view(B, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = text_kv
        mask = None if text_mask is None else text_mask[:, None, None, :]
        out = attend(q, k.to(q.dtype), v.to(q.dtype), scale=1.0 / math.sqrt(self.head_dim), mask=mask)
        return self.proj(out.transpose(1, 2).reshape(B, n, C))


class PooledCrossAttention(nn.Module):
    """One learned query per head attends over a sample's T5 tokens (the SOS / condition)."""

    def __init__(self, width: int, text_channels: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        q = torch.empty(1, num_heads, self.head_dim)
        nn.init.trunc_normal_(q, std=math.sqrt(1 / width / 3))
        self.mat_q = nn.Parameter(q)
        self.mat_kv = nn.Linear(text_channels, 2 * width, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """text (B, Lt, Ct5) -> pooled (B, width)."""
        B, Lt, _ = text.shape
        bias = torch.cat((self.zero_k_bias, self.v_bias))
        kv = F.linear(text, self.mat_kv.weight, bias).view(B, Lt, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        q = self.mat_q.to(k.dtype).unsqueeze(2).expand(B, -1, 1, -1)
        mask = None if text_mask is None else text_mask[:, None, None, :]
        out = attend(q, k, v, scale=1.0 / math.sqrt(self.head_dim), mask=mask)
        return self.proj(out.reshape(B, -1))


class TextAttentivePool(nn.Module):
    def __init__(self, width: int, text_channels: int, num_heads: int):
        super().__init__()
        self.ca = PooledCrossAttention(width, text_channels, num_heads)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        return self.ca(text, text_mask)


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.fc1.weight.dtype)
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned weight, computed in fp32."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class AdaLNBeforeHead(nn.Module):
    """LayerNorm (no affine) modulated by scale/shift computed from the condition."""

    def __init__(self, width: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond).view(cond.shape[0], 1, 2, -1).unbind(2)
        return modulate(x, scale, shift, self.eps)


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift, in fp32."""
    normed = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return torch.addcmul(shift.float(), normed, scale.float() + 1)


def drop_path_scale(rows: int, rate: float, device: torch.device) -> torch.Tensor:
    """Stochastic depth: (rows, 1, 1) fp32, 0 for a dropped sample's branch, else 1 / keep
    (so the branch keeps its mean)."""
    keep = 1.0 - rate
    return torch.empty(rows, 1, 1, device=device).bernoulli_(keep).div_(keep)
