"""The same functions as the plain Infinity ops, computed with other kernels.

  apply_rope        RoPE with the complex product written out in real arithmetic while
                    torch.compile traces it (inductor generates no kernels for complex
                    tensors, and fuses the real form with the q/k normalisation around
                    it); eager calls run the plain complex product. (a + ib)(c + is) =
                    (ac - bs) + i(as + bc): the same products and sums, so equal up to
                    fp32 rounding.
  FusedFeedForward  the FFN with its GELU in the first matmul's cuBLASLt epilogue, on the
                    fp32 accumulator: one pass less over the 4x-wide hidden activations
                    and one bf16 rounding instead of two. Only in compiled inference on
                    CUDA in bf16/fp16: eager keeps the release's two-step rounding, and
                    training needs the separate GELU's backward. Same tanh GELU.
  attend            the `flash_attn` package's kernel for unmasked bf16/fp16 attention on
                    CUDA, when the package is installed (VARBENCH_FLASH_ATTN=0: never);
                    every other call runs the plain scaled_dot_product_attention. Both
                    compute softmax(q k^T * scale) v.
  SubPixelUpsample  the decoder's nearest 2x upsampling + 3x3 convolution as four 2x2
                    convolutions of the small input (varbench/models/fast/upsample.py).

`accelerate` (fast/__init__.py) swaps them in: `apply_rope` and `attend` replace the
functions of the same name in layers.py (process-wide), the two modules replace the
class of the FFNs / upsamplers of the models it is given.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from varbench.models.fast.upsample import upsample_conv
from varbench.models.infinity import layers, rope
from varbench.models.infinity.autoencoder import Upsample
from varbench.models.infinity.layers import FeedForward

FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None and os.environ.get("VARBENCH_FLASH_ATTN", "1") != "0"
plain_attend = layers.attend
plain_apply_rope = rope.apply_rope


# ---- RoPE ------------------------------------------------------------------------------
def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """`rope.apply_rope`, in real arithmetic while torch.compile traces it."""
    if torch.compiler.is_compiling():
        return apply_rope_real(x, table)
    return plain_apply_rope(x, table)


def apply_rope_real(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., L, head_dim) by table (L, head_dim/2, 2) in real arithmetic; fp32."""
    x = x.float()
    pairs = x.unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = table[..., 0], table[..., 1]
    return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)


# ---- FFN -------------------------------------------------------------------------------
class FusedFeedForward(FeedForward):
    """`FeedForward` (same parameters and keys) with the GELU in the matmul epilogue where
    `epilogue_gelu` says so."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not epilogue_gelu(x, self.fc1.weight.dtype):
            return super().forward(x)
        x = x.to(self.fc1.weight.dtype)
        hidden = torch._addmm_activation(self.fc1.bias, x.flatten(0, -2), self.fc1.weight.t(), use_gelu=True)
        return self.fc2(hidden.unflatten(0, x.shape[:-1]))


def epilogue_gelu(x: torch.Tensor, dtype: torch.dtype | None = None) -> bool:
    """Whether the FFN fuses its GELU into the first matmul for input x computed in `dtype`
    (default: x's): compiled inference on CUDA in bf16/fp16 only."""
    return (x.is_cuda and (dtype or x.dtype) in (torch.bfloat16, torch.float16) and not torch.is_grad_enabled()
            and torch.compiler.is_compiling())


# ---- attention -------------------------------------------------------------------------
def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """`layers.attend`, through flash_attn where it applies (module docstring)."""
    if FLASH_ATTN and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        from flash_attn import flash_attn_func

        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale)
        return out.transpose(1, 2)
    return plain_attend(q, k, v, scale, mask)


# ---- decoder upsampling ----------------------------------------------------------------
class SubPixelUpsample(Upsample):
    """`Upsample` (same parameters and keys): `self.conv(F.interpolate(x, scale_factor=2,
    mode="nearest"))` computed on x itself, 2.25x fewer multiply-adds."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_conv(x, self.conv.conv.weight, self.conv.conv.bias)
