"""Fused elementwise kernels for the transformer's memory-bound hot spots.

Profiling 2B sampling on an H100 (batch 8, benchmarks/infinity_probe.py) put a third of
the time outside matrix products and attention: fp32 LayerNorm + AdaLN modulation, the
cast of its output to bf16 for the next matmul, and the q/k normalisation + RoPE + cast.
Each is a few memory-bound passes over (B, n, 2048) tensors. `torch.compile` fuses each
helper below into one kernel. It runs only on CUDA tensors and only when enabled
(`with fused_kernels():`, as the sampler and trainer do on CUDA, unless
VARBENCH_COMPILE=0);
on the CPU, or if compilation fails (an old torch, a missing compiler), the plain eager
functions run instead. Both paths compute the same values up to fp32 rounding order.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from varbench.models.infinity.rope import apply_rope

_state = {"enabled": False}


def set_fusion(enabled: bool) -> None:
    """Turn the compiled kernels on or off (VARBENCH_COMPILE=0 keeps them off)."""
    _state["enabled"] = enabled and os.environ.get("VARBENCH_COMPILE", "1") != "0"


def fusion_enabled() -> bool:
    return _state["enabled"]


@contextmanager
def fused_kernels(enabled: bool = True) -> Iterator[None]:
    """Use the compiled kernels inside the block (restores the previous setting after)."""
    previous = _state["enabled"]
    set_fusion(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous


def fusable(fn: Callable) -> Callable:
    """Run `fn` compiled when fusion is on and its first argument is a CUDA tensor."""
    compiled: list[Callable] = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not (_state["enabled"] and args[0].is_cuda):
            return fn(*args, **kwargs)
        if not compiled:
            compiled.append(torch.compile(fn, dynamic=True))
        try:
            return compiled[0](*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - compilation problems must never stop a run
            warnings.warn(f"torch.compile of {fn.__name__} failed ({type(err).__name__}); running eager",
                          stacklevel=2)
            _state["enabled"] = False
            return fn(*args, **kwargs)

    return call


@fusable
def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift, computed in fp32, returned in `out_dtype`
    (the dtype of the matmul that consumes it; fp32 when None)."""
    normed = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    out = torch.addcmul(shift.float(), normed, scale.float() + 1)
    return out if out_dtype is None else out.to(out_dtype)


@fusable
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    out = F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps)
    return out if out_dtype is None else out.to(out_dtype)


@fusable
def normalize_and_rotate(x: torch.Tensor, rope: torch.Tensor, scale: torch.Tensor | None = None,
                         out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """L2-normalise the last dim in fp32 (times `scale`), apply RoPE, return `out_dtype`.

    Written for few memory passes: the norm is read straight from the bf16 input and
    the normalising factor is applied while converting to fp32."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    factor = norm.clamp(min=1e-12).reciprocal()
    if scale is not None:
        factor = factor * scale
    out = apply_rope(x * factor, rope)
    return out if out_dtype is None else out.to(out_dtype)


def matmul_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer with `weight` computes in: bf16 under CUDA autocast (the
    only autocast varbench uses), else the weight's own dtype."""
    if weight.is_cuda and torch.is_autocast_enabled():
        return torch.bfloat16
    return weight.dtype
