"""Process-wide CUDA settings and the memory layout of convolution weights.

  - `cudnn_benchmark`: cuDNN times its convolution algorithms once per input shape and
    keeps the fastest (off by default: no gain measured on an H100, and seconds of timing
    per new shape).
  - `attention_backend`: which fused scaled-dot-product-attention kernel PyTorch tries
    first ("auto" lets PyTorch choose).
  - layout: NHWC (channels_last) convolution weights, the layout the tensor cores read
    directly; activations follow the weights' layout. Measured faster for training, and
    slower for uncompiled sampling, where GroupNorm dominates more.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch


def set_cuda_settings(config: Any) -> Callable[[], None]:
    """Set cuDNN autotuning and the attention backend of `config`; returns the undo, which
    restores the previous settings."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(config.cudnn_benchmark)
    undo_attention = set_attention(config.attention_backend)

    def undo() -> None:
        undo_attention()
        torch.backends.cudnn.benchmark = previous

    return undo


def set_attention(name: str) -> Callable[[], None]:
    """SDPA tries kernel `name` first (`attention_backend`); returns the undo."""
    backend = attention_backend(name)
    backend.__enter__()
    return lambda: backend.__exit__(None, None, None)


def set_cudnn_attention(enabled: bool) -> Callable[[], None]:
    """Allow or forbid SDPA's cuDNN kernel (the others keep PyTorch's order); returns the undo."""
    previous = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(enabled)
    return lambda: torch.backends.cuda.enable_cudnn_sdp(previous)


def sdpa_switches() -> str:
    """The SDPA kernels allowed now and PyTorch's order of trying them, as one string:
    compiled code keeps the kernel chosen when it was traced (dynamo does not guard these
    switches), so compiled calls are specialised on this (calls.SwitchKeyed)."""
    cuda = torch.backends.cuda
    allowed = (f"flash={cuda.flash_sdp_enabled():d} efficient={cuda.mem_efficient_sdp_enabled():d} "
               f"cudnn={cuda.cudnn_sdp_enabled():d} math={cuda.math_sdp_enabled():d}")
    order = getattr(torch._C, "_get_sdp_priority_order", None)  # where sdpa_kernel has set_priority
    return f"sdpa {allowed}" + (f" order={','.join(map(str, order()))}" if order is not None else "")


def attention_backend(name: str) -> contextlib.AbstractContextManager:
    """SDPA tries kernel `name` first and the others where it cannot run a shape (e.g. the
    VAE's head dim of 512). Needs `sdpa_kernel(..., set_priority=True)`; older torch keeps
    its own choice (forcing one kernel there would send every unsupported shape to the
    slow math kernel, and early cuDNN attention releases were not trusted by default)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if "set_priority" not in inspect.signature(sdpa_kernel).parameters:
        return contextlib.nullcontext()
    kernels = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
    order = [kernels[name]] + [k for key, k in kernels.items() if key != name] + [SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def set_layout(modules: Sequence[torch.nn.Module], channels_last: bool) -> None:
    """NHWC (channels_last) or NCHW (contiguous) convolution weights, in place."""
    for module in modules:
        module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
