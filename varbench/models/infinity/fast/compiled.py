"""torch.compile where it pays: the transformer blocks, and the VAE decoder.

  * The decoder spends most of its time in GroupNorm/SiLU passes between convolutions;
    compiled, inductor fuses those passes.
  * A block's norms, AdaLN modulation, casts, q/k normalisation + RoPE and residual adds
    are separate memory passes when eager. Compiling the whole `Block.body` (one compiled
    function shared by all blocks, recompiled once per token count) fuses them. Compiling
    only the small helpers was slower than eager (per-call guard overhead across 13
    scales x 32 blocks), so the unit is the block.

The modules `accelerate` swaps in (fast/__init__.py):
  CompiledBlock     a `Block` whose forward draws its drop-path scales eagerly, then runs
                    `Block.body` compiled. The draws stay outside the compiled code, so
                    they come from torch's global generator as in the plain block, and
                    the compiled code reads no per-block number: all blocks share it.
  CompiledDecoding  a `BSQTokenizer` whose `decode` runs the decoder module compiled.
Compiled code runs only for CUDA inputs (blocks: devices in COMPILE_DEVICES); on the CPU,
with VARBENCH_COMPILE=0, or if compilation fails (an old torch, a missing compiler: one
warning, then the plain code for the rest of the process) the plain code runs. Both
compute the same values up to rounding (tests/test_infinity_fast.py).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from varbench.errors import warn_fallback
from varbench.models.infinity.bsq import BSQTokenizer
from varbench.models.infinity.layers import KVCache
from varbench.models.infinity.transformer import Block

COMPILE_DEVICES = ("cuda",)  # the tests add "cpu" to check the compiled path
# One compiled entry per token count and grad mode: 13 scales of sampling, the teacher's
# 13, the training pass; dynamo's default of 8 entries per function would fall back to eager.
RECOMPILE_LIMIT = 64

_failed = {"blocks": False, "modules": False}
# Each compiled module is kept on its module (module.__dict__[COMPILED]: a reference cycle
# the garbage collector frees with the module), tagged with the generation it was made in;
# `reset_compiled` starts a new generation. A process-wide mapping would keep every
# module it ever compiled alive (the compiled copy references its module).
COMPILED = "_varbench_compiled"
_generation = [0]
_compiled_functions: dict[Callable, Callable] = {}


def compile_allowed() -> bool:
    """False when VARBENCH_COMPILE=0 turns every compiled piece off."""
    return os.environ.get("VARBENCH_COMPILE", "1") != "0"


def _not_compiler_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that pass through a compiled call untouched: running out of memory (the
    cell fails as it would eagerly) and the signal with which non-reentrant activation
    checkpointing stops a block's recomputation once it has what backward needs."""
    import torch.utils.checkpoint as checkpoint

    stop = getattr(checkpoint, "_StopRecomputationError", None)  # private; present since torch 2.1
    return (torch.cuda.OutOfMemoryError,) + ((stop,) if stop is not None else ())


# ---- the transformer blocks ------------------------------------------------------------
class CompiledBlock(Block):
    """`Block` (same parameters and keys) whose body runs compiled; see the module docstring."""

    def forward(self, x: torch.Tensor, ada: torch.Tensor, text_kv: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                text_mask: torch.Tensor | None, rope: torch.Tensor, spans: tuple[tuple[int, int, int], ...],
                cache: KVCache | None = None, cache_start: int = 0) -> torch.Tensor:
        drop_scales = self._drop_path_scales(x)
        return run_block(Block.body, self, x, ada, text_kv, text_mask, rope, spans, cache, cache_start, drop_scales)


def run_block(body: Callable, block: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """`body(block, x, *args)`, compiled for x's device when it is in COMPILE_DEVICES. A
    compiler failure warns once and leaves the blocks eager for the rest of the process."""
    if x.device.type not in COMPILE_DEVICES or _failed["blocks"]:
        return body(block, x, *args)
    if body not in _compiled_functions:
        _compiled_functions[body] = torch.compile(body, dynamic=False)
    try:
        return _compiled_functions[body](block, x, *args)
    except _not_compiler_failures():
        raise
    except Exception as err:  # noqa: BLE001 - compilation problems must never stop a run
        warn_fallback("torch.compile of the transformer blocks", err, "running eager")
        _failed["blocks"] = True
        return body(block, x, *args)


def allow_recompiles(count: int = RECOMPILE_LIMIT) -> None:
    """Let dynamo keep `count` compiled entries per function (one per token count)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # renamed in 2.6
    if getattr(config, name) < count:
        setattr(config, name, count)


# ---- the VAE decoder -------------------------------------------------------------------
class CompiledDecoding(BSQTokenizer):
    """`BSQTokenizer` (same parameters and keys) whose `decode` is the plain one with the
    decoder module run through `run_module`."""

    def decode(self, summed: torch.Tensor) -> torch.Tensor:
        weight = self.decoder.conv_in.conv.weight
        return run_module(self.decoder, summed.to(weight.dtype)).float().clamp(-1, 1)


def run_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)`, through a compiled copy of the module when x is on CUDA. A compiler
    failure warns once and leaves modules eager for the rest of the process."""
    if not x.is_cuda or _failed["modules"]:
        return module(x)
    generation, compiled = module.__dict__.get(COMPILED, (None, None))
    if generation != _generation[0]:
        # Static shapes: a second batch size would otherwise get one dynamic-shape graph,
        # whose kernels measured slower (benchmarks/NOTES-infinity.md). Set through
        # __dict__: nn.Module.__setattr__ would register it as a submodule (state_dict).
        compiled = torch.compile(module, dynamic=False)
        module.__dict__[COMPILED] = (_generation[0], compiled)
    try:
        return compiled(x)
    except _not_compiler_failures():
        raise
    except Exception as err:  # noqa: BLE001 - compilation problems must never stop a run
        warn_fallback(f"torch.compile of {type(module).__name__}", err, "running eager")
        _failed["modules"] = True
        return module(x)


def reset_compiled() -> None:
    """Forget every compiled module and function and any earlier failure (rebuilt on next use)."""
    _generation[0] += 1
    _compiled_functions.clear()
    _failed.update(blocks=False, modules=False)
