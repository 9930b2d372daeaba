"""A compiled VAE decoder: the one place where torch.compile paid off in sampling.

Measured on an H100 (2B, 1024^2, random weights; benchmarks/NOTES-infinity.md): the
decoder spends most of its time in GroupNorm/SiLU passes between convolutions, and the
compiled decoder (inductor fuses those passes) decodes in 0.030 s/image instead of
0.060 at batch 8 (0.035 vs 0.100 at batch 1). Compiling the transformer's norm,
modulation and RoPE helpers was tried too and was slower than eager (per-call guard
overhead across 13 scales x 32 blocks), so the transformer runs eagerly.

Compiled code runs only for CUDA inputs and only inside `with compiled_decoder():`;
on the CPU, with VARBENCH_COMPILE=0, or if compilation fails (an old torch, a missing
compiler), the eager module runs; both compute the same images up to rounding.
"""
from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_state = {"enabled": False}
_compiled_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def compiled_decoder(enabled: bool = True) -> Iterator[None]:
    """Let `run_module` use compiled modules inside the block (VARBENCH_COMPILE=0: never)."""
    previous = _state["enabled"]
    _state["enabled"] = enabled and os.environ.get("VARBENCH_COMPILE", "1") != "0"
    try:
        yield
    finally:
        _state["enabled"] = previous


def run_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)`, through a compiled copy of the module when enabled and x is on CUDA."""
    if not (_state["enabled"] and x.is_cuda):
        return module(x)
    if module not in _compiled_modules:
        _compiled_modules[module] = torch.compile(module)
    try:
        return _compiled_modules[module](x)
    except Exception as err:  # noqa: BLE001 - compilation problems must never stop a run
        warnings.warn(f"torch.compile of {type(module).__name__} failed ({type(err).__name__}: {err}); "
                      "running eager", stacklevel=2)
        _state["enabled"] = False
        return module(x)


def reset_compiled() -> None:
    """Forget every compiled module (rebuilt on next use)."""
    _compiled_modules.clear()
