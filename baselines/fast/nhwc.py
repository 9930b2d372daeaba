"""A UNet's transformer blocks handing back NHWC activations (with `channels_last`).

diffusers' `Transformer2DModel` (SD 1.5's and SDXL's cross-attention stages) returns
`proj_out(x.reshape(B, H, W, C).permute(0, 3, 1, 2).contiguous()) + residual` (SD 1.5; SDXL
projects before the permute). The tokens `x` are NHWC in memory, so `.contiguous()` copies
them to NCHW. In a UNet whose convolutions run NHWC, that NCHW tensor is then copied back:
SD 1.5's `proj_out`, a 1x1 convolution with NHWC weights, converts its input, and its
backward converts the saved input and the incoming gradient again. On an H100 these copies
were about 1.2 ms of SD 1.5's 33 ms compiled LoRA step, the largest kernels outside
inductor's own (benchmarks/NOTES-baselines.md, twentieth session).

`NHWCTransformer2D` returns the permuted view instead: the same values, NHWC in memory.
It keeps diffusers' code wherever the residual is not NHWC (a UNet left NCHW).
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn


class NHWCTransformer2D(Transformer2DModel):
    """`Transformer2DModel` whose continuous-input output stays NHWC when its input is.
    Installed by swapping the class of a UNet's transformers (no state of its own)."""

    def _get_output_for_continuous_inputs(self, hidden_states: torch.Tensor, residual: torch.Tensor,
                                          batch_size: int, height: int, width: int, inner_dim: int) -> torch.Tensor:
        if not residual.is_contiguous(memory_format=torch.channels_last):
            return super()._get_output_for_continuous_inputs(hidden_states, residual, batch_size, height, width,
                                                             inner_dim)
        if self.use_linear_projection:
            hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, height, width, inner_dim).permute(0, 3, 1, 2)
        if not self.use_linear_projection:
            hidden_states = self.proj_out(hidden_states)  # a 1x1 convolution, reading NHWC
        return hidden_states + residual


def transformers(unet: nn.Module) -> list[nn.Module]:
    """The UNet's transformers that are exactly diffusers' `Transformer2DModel` with
    continuous (feature map) inputs: the ones `NHWCTransformer2D` may stand in for."""
    return [m for m in unet.modules() if type(m) is Transformer2DModel and getattr(m, "is_input_continuous", False)]


def install(swaps: Any, where: str, unet: nn.Module) -> int:
    """Swap the class of `unet`'s transformers to `NHWCTransformer2D` (recorded in `swaps`,
    a `varbench.models.fast.swaps.Swaps`, and undone with it); returns how many changed."""
    return swaps.set_class(f"{where} transformers: output kept NHWC", transformers(unet), NHWCTransformer2D)
