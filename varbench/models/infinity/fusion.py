"""Fused (compiled) kernels for the memory-bound steps of sampling and training.

Profiling 2B sampling on an H100 (batch 8, benchmarks/infinity_probe.py) put a third of
the time outside matrix products and attention: fp32 LayerNorm + AdaLN modulation, the
cast of its output to bf16 for the next matmul, and the q/k normalisation + RoPE + cast,
each a few memory-bound passes over (B, n, 2048) tensors; the VAE decoder similarly
spends most of its time in GroupNorm/SiLU passes between convolutions. `torch.compile`
fuses each helper below. Compiled code runs only on CUDA tensors and only inside
`with fused_kernels():` (the sampler and trainer use it on CUDA unless
VARBENCH_COMPILE=0); on the CPU, or if compilation fails (an old torch, a missing
compiler), the plain eager code runs. Both compute the same values up to fp32 rounding.
"""
from __future__ import annotations

import functools
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from varbench.models.infinity.rope import apply_rope

_state = {"enabled": False}
_compiled_functions: dict[str, Callable] = {}
_compiled_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reset_compiled() -> None:
    """Forget every compiled function and module (they are rebuilt on next use)."""
    _compiled_functions.clear()
    _compiled_modules.clear()


def set_fusion(enabled: bool) -> None:
    """Turn the compiled kernels on or off (VARBENCH_COMPILE=0 keeps them off)."""
    _state["enabled"] = enabled and os.environ.get("VARBENCH_COMPILE", "1") != "0"


@contextmanager
def fused_kernels(enabled: bool = True) -> Iterator[None]:
    """Use the compiled kernels inside the block (restores the previous setting after)."""
    previous = _state["enabled"]
    set_fusion(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous


def _use_compiled(x: torch.Tensor) -> bool:
    return _state["enabled"] and x.is_cuda


def _compile_failed(name: str, err: Exception) -> None:
    # Compilation problems must never stop a run: say so once and go on eagerly.
    warnings.warn(f"torch.compile of {name} failed ({type(err).__name__}: {err}); running eager", stacklevel=3)
    _state["enabled"] = False


def fusable(fn: Callable) -> Callable:
    """Run `fn` compiled when fusion is on and its first argument is a CUDA tensor."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not _use_compiled(args[0]):
            return fn(*args, **kwargs)
        try:
            return _compiled(fn)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - see _compile_failed
            _compile_failed(fn.__name__, err)
            return fn(*args, **kwargs)

    return call


def run_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)`, through a compiled copy of the module when fusion is on (CUDA)."""
    if not _use_compiled(x):
        return module(x)
    if module not in _compiled_modules:
        _compiled_modules[module] = torch.compile(module)
    try:
        return _compiled_modules[module](x)
    except Exception as err:  # noqa: BLE001 - see _compile_failed
        _compile_failed(type(module).__name__, err)
        return module(x)


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


def normalize_and_rotate(x: torch.Tensor, rope: torch.Tensor, scale: torch.Tensor | None = None,
                         out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """L2-normalise the last dim in fp32 (times `scale`), apply RoPE (complex table
    (L, head_dim/2)), return `out_dtype` (fp32 when None)."""
    if _use_compiled(x):
        cos, sin = torch.view_as_real(rope).unbind(-1)
        scale = _one(x.device) if scale is None else scale
        try:
            return _compiled(_rotate_real)(x, cos, sin, scale, out_dtype)
        except Exception as err:  # noqa: BLE001 - see _compile_failed
            _compile_failed("normalize_and_rotate", err)
    # Eager: the norm is read straight from the bf16 input and the normalising factor
    # applied while converting to fp32, then one complex multiply rotates.
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    factor = norm.clamp(min=1e-12).reciprocal()
    if scale is not None:
        factor = factor * scale
    out = apply_rope(x * factor, rope)
    return out if out_dtype is None else out.to(out_dtype)


def _rotate_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, scale: torch.Tensor,
                 out_dtype: torch.dtype | None) -> torch.Tensor:
    """normalize_and_rotate in real arithmetic (inductor generates no complex code):
    channel pair (a, b) -> (a cos - b sin, a sin + b cos)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    a, b = (x.float() * (norm.clamp(min=1e-12).reciprocal() * scale)).unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    return out if out_dtype is None else out.to(out_dtype)


def _compiled(fn: Callable) -> Callable:
    """The compiled version of `fn` (built on first use; dynamic shapes, since every
    scale has its own token count)."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    if name not in _compiled_functions:
        _compiled_functions[name] = torch.compile(fn, dynamic=True)
    return _compiled_functions[name]


@functools.lru_cache(maxsize=8)
def _one(device: torch.device) -> torch.Tensor:
    return torch.ones((), device=device)


def matmul_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer with `weight` computes in: bf16 under CUDA autocast (the
    only autocast varbench uses), else the weight's own dtype."""
    if weight.is_cuda and torch.is_autocast_enabled():
        return torch.bfloat16
    return weight.dtype
