"""The speed layer of Infinity: the plain model's computation, run faster.

The plain modules (transformer.py, layers.py, sampler.py, bsq.py, ...) are eager PyTorch
and import nothing from here. One call switches this layer on, by swapping modules and
functions of a model, a tokenizer or a whole pipeline:

    from varbench.models.infinity.fast import SpeedOptions, accelerate

    changed = accelerate(pipeline, SpeedOptions(cuda_graphs=True))   # stays on
    print(changed.changes)                                            # what was swapped
    with accelerate(model, SpeedOptions(compile_blocks=True)):        # on inside the block only
        ...

What each option swaps in, and why the values stay the plain ones:
  compile_blocks     every `Block` becomes a `CompiledBlock` (compiled.py): its body runs
                     through torch.compile on CUDA, the drop-path draws staying eager; its
                     FFN becomes a `FusedFeedForward` (ops.py: GELU in the matmul epilogue
                     in compiled bf16 inference), and layers.apply_rope the real-arithmetic
                     RoPE while compiling (ops.py). Inductor fuses the elementwise passes;
                     the values are the eager ones up to rounding.
  cuda_graphs        the sampler's per-scale forward is captured once per input shape as a
                     CUDA graph and replayed (graphs.py; KV-cached attention only; on the
                     CPU the same static buffers run without capture). A replay runs the
                     plain kernels.
  compile_decoder    the tokenizer becomes a `CompiledDecoding` (compiled.py): the decoder
                     runs through torch.compile on CUDA, and its GroupNorms become
                     `ChannelStatsGroupNorm` (varbench/models/fast/groupnorm.py: torch's
                     kernel when eager, per-channel statistics combined exactly when
                     compiled, a reduction order that compiles well).
  subpixel_upsample  the decoder's upsamplers become `SubPixelUpsample` (ops.py and
                     varbench/models/fast/upsample.py): nearest 2x + 3x3 conv as four 2x2
                     convolutions of the small input, the same sum of products with the taps
                     summed first.
Always, where the flash_attn package is installed (and VARBENCH_FLASH_ATTN is not 0),
layers.attend becomes ops.attend: flash_attn's kernel for unmasked bf16/fp16 CUDA attention.

Module swaps change the class of the given model's own modules in place (parameters,
buffers and state-dict keys stay); function swaps replace a plain module's global and
so act process-wide. `accelerate` sets every module piece to exactly what the options say
(an option that is off puts the plain class back) and installs function swaps it needs
that are not in place yet; the returned `Accelerated` lists the changes and undoes them
(`undo()`, or leaving its `with` block), restoring what was there before, so calls nest.
A model whose blocks change class drops the CUDA graphs captured from the old ones.
Compiling happens only for CUDA inputs, never with VARBENCH_COMPILE=0, and falls back to
the plain code (with one warning) if the compiler fails.

Every piece is tested against the plain computation in tests/test_infinity_fast.py and
tests/test_models_fast_*.py; measured effects are in benchmarks/NOTES-infinity.md and
NOTES-arbooth.md.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from varbench.models.fast.groupnorm import ChannelStatsGroupNorm
from varbench.models.fast.swaps import Swaps
from varbench.models.infinity import layers, sampler
from varbench.models.infinity.autoencoder import Upsample
from varbench.models.infinity.bsq import BSQTokenizer
from varbench.models.infinity.fast import compiled, graphs, ops
from varbench.models.infinity.layers import FeedForward
from varbench.models.infinity.pipeline import InfinityPipeline
from varbench.models.infinity.transformer import Block, Infinity

__all__ = ["Accelerated", "SpeedOptions", "accelerate", "release_graphs"]

release_graphs = graphs.release_graphs


@dataclass(frozen=True)
class SpeedOptions:
    """What `accelerate` turns on (module docstring). The defaults pay for any generation
    run; compiled blocks pay only for long runs (compiling takes a while per batch size)."""

    compile_blocks: bool = False
    cuda_graphs: bool = False
    compile_decoder: bool = True
    subpixel_upsample: bool = True


class Accelerated(Swaps):
    """What one `accelerate` call changed (`changes`, readable lines) and how to undo it."""

    def drop_graphs(self, model: Infinity) -> None:
        """Captured graphs hold the kernels of the blocks as they were: drop them now and
        again when undoing (they are captured anew on the next sampling call)."""
        graphs.release_graphs(model)
        self._undo.append(lambda: graphs.release_graphs(model))

    def replay_graphs(self, model: Infinity, on: bool) -> None:
        before = graphs.replay_graphs(model, on)
        if before != on:
            self._undo.append(lambda: graphs.replay_graphs(model, before))
            self.changes.append(f"Infinity: per-scale forward {'replayed as CUDA graphs' if on else 'plain'}")


def accelerate(target: Infinity | BSQTokenizer | InfinityPipeline | Iterable[Infinity | BSQTokenizer],
               options: SpeedOptions = SpeedOptions()) -> Accelerated:
    """Switch the speed layer on for `target` (a model, a tokenizer, a pipeline or several
    of them) as `options` say; see the module docstring."""
    models, tokenizers = _parts(target)
    done = Accelerated()
    compile_blocks = options.compile_blocks and compiled.compile_allowed()
    compile_decoder = options.compile_decoder and compiled.compile_allowed()
    for model in models:
        if done.set_class("Infinity", model.blocks, compiled.CompiledBlock if compile_blocks else Block):
            done.drop_graphs(model)
        done.set_class("Infinity", [block.ffn for block in model.blocks],
                       ops.FusedFeedForward if compile_blocks else FeedForward)
        done.replay_graphs(model, options.cuda_graphs)
    for tokenizer in tokenizers:
        done.set_class("tokenizer", [tokenizer], compiled.CompiledDecoding if compile_decoder else BSQTokenizer)
        done.set_class("decoder", [m for m in tokenizer.decoder.modules() if isinstance(m, nn.GroupNorm)],
                       ChannelStatsGroupNorm if compile_decoder else nn.GroupNorm)
        done.set_class("decoder", [m for m in tokenizer.decoder.modules() if isinstance(m, Upsample)],
                       ops.SubPixelUpsample if options.subpixel_upsample else Upsample)
    if models and compile_blocks:
        compiled.allow_recompiles()
        done.install(layers, "apply_rope", ops.apply_rope)
    if models and options.cuda_graphs:
        done.install(sampler, "scale_forward", graphs.scale_forward)
    if models and ops.FLASH_ATTN:
        done.install(layers, "attend", ops.attend)
    return done


def _parts(target: Any) -> tuple[list[Infinity], list[BSQTokenizer]]:
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    models, tokenizers = [], []
    for item in items:
        if isinstance(item, InfinityPipeline):
            models.append(item.model)
            tokenizers.append(item.vae)
        elif isinstance(item, Infinity):
            models.append(item)
        elif isinstance(item, BSQTokenizer):
            tokenizers.append(item)
        else:
            raise TypeError(f"accelerate takes Infinity, BSQTokenizer or InfinityPipeline objects, "
                            f"not {type(item).__name__}")
    return models, tokenizers
