"""torch.compile where it pays: the VAE decoder, and the transformer blocks.

Measured on an H100 (2B, 1024^2, random weights; benchmarks/NOTES-infinity.md):
  * the decoder spends most of its time in GroupNorm/SiLU passes between convolutions;
    compiled (inductor fuses those passes) it decodes in 0.030 s/image instead of 0.060
    at batch 8 (0.035 vs 0.100 at batch 1);
  * a block's norms, AdaLN modulation, casts, q/k normalisation + RoPE and residual adds
    are ~0.11 s/image of separate memory passes at batch 8. Compiling the whole
    `Block.body` (one compiled function shared by all 32 blocks, recompiled once per token
    count) fuses them: `varbench bench` measured sampling at batch 8 0.333 -> 0.267 s/image
    (decode included) and an ARBooth iteration 3.33 -> 2.23 s. Compiling only the small
    helpers was slower than eager (per-call guard overhead across 13 scales x 32 blocks),
    so the unit is the block.

Compiled code runs only for CUDA inputs and only inside `with compiled_decoder():` /
`with compiled_blocks():`; on the CPU, with VARBENCH_COMPILE=0, or if compilation fails
(an old torch, a missing compiler), the eager code runs; both compute the same values up
to rounding.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from varbench.errors import warn_fallback

_state = {"enabled": False, "blocks": False, "blocks_failed": False}
_compiled_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_compiled_functions: dict[Callable, Callable] = {}
COMPILE_DEVICES = ("cuda",)  # the tests add "cpu" to check the compiled path
# One compiled entry per token count and grad mode: 13 scales of sampling, the teacher's
# 13, the training pass; dynamo's default of 8 entries per function would fall back to eager.
RECOMPILE_LIMIT = 64


def _not_compiler_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that pass through a compiled call untouched: running out of memory (the
    cell fails as it would eagerly) and the signal with which non-reentrant activation
    checkpointing stops a block's recomputation once it has what backward needs."""
    import torch.utils.checkpoint as checkpoint

    stop = getattr(checkpoint, "_StopRecomputationError", None)  # private; present since torch 2.1
    return (torch.cuda.OutOfMemoryError,) + ((stop,) if stop is not None else ())


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
        # Static shapes: a second batch size would otherwise get one dynamic-shape graph,
        # whose kernels measured slower (decoder at batch 8: 0.028 vs 0.021 s/image).
        _compiled_modules[module] = torch.compile(module, dynamic=False)
    try:
        return _compiled_modules[module](x)
    except _not_compiler_failures():
        raise
    except Exception as err:  # noqa: BLE001 - compilation problems must never stop a run
        warn_fallback(f"torch.compile of {type(module).__name__}", err, "running eager")
        _state["enabled"] = False
        return module(x)


@contextmanager
def compiled_blocks(enabled: bool = True) -> Iterator[None]:
    """Let `run_block` compile the transformer blocks inside the block (VARBENCH_COMPILE=0: never)."""
    previous = _state["blocks"]
    _state["blocks"] = enabled and os.environ.get("VARBENCH_COMPILE", "1") != "0"
    if _state["blocks"]:
        _allow_recompiles(RECOMPILE_LIMIT)
    try:
        yield
    finally:
        _state["blocks"] = previous


def run_block(body: Callable, block: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """`body(block, x, *args)` (Block.body), compiled when enabled for x's device. A
    compiler failure warns once and leaves the blocks eager for the rest of the process."""
    if not (_state["blocks"] and x.device.type in COMPILE_DEVICES) or _state["blocks_failed"]:
        return body(block, x, *args)
    if body not in _compiled_functions:
        _compiled_functions[body] = torch.compile(body, dynamic=False)
    try:
        return _compiled_functions[body](block, x, *args)
    except _not_compiler_failures():
        raise
    except Exception as err:  # noqa: BLE001 - compilation problems must never stop a run
        warn_fallback("torch.compile of the transformer blocks", err, "running eager")
        _state["blocks_failed"] = True
        return body(block, x, *args)


def _allow_recompiles(count: int) -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # renamed in 2.6
    if getattr(config, name) < count:
        setattr(config, name, count)


def reset_compiled() -> None:
    """Forget every compiled module and function (rebuilt on next use)."""
    _compiled_modules.clear()
    _compiled_functions.clear()
    _state["blocks_failed"] = False
