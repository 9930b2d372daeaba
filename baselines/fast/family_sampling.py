"""A family pipeline's sampling (DreamBooth-LoRA on SD 1.5, SDXL, SD3 or FLUX.1-dev) with
the denoiser's calls replayed as CUDA graphs and/or compiled.

The pipeline stays diffusers' own, called as diffusers documents it
(`baselines.family_sampling`). Only its denoiser's keyword calls without gradients
(`transformer(hidden_states=..., timestep=..., ..., return_dict=False)`, one per step,
two with true CFG) run through a `calls.FastCall`. Why: at batch 1, FLUX.1-dev's
transformer launches thousands of small kernels per step and the host, not the GPU, sets
the pace; a replayed graph launches once. A call with an argument a graph cannot take (an
IP-Adapter's list of image embeddings, a LoRA scale in a dict) runs the plain forward.

A graph reads the weights where they are, so it stays right while they change value (an
optimizer step, `load_lora_weights` into the same adapters), but not when the module
itself changes (adapters added or removed, their scale or active set changed). The calls
of a denoiser are kept between pipeline calls (a capture costs several forward passes)
with a signature of its parameters and adapter settings, and built again when that
signature changes; a fit drops them when it starts (the class images sampled before it
leave graphs of the denoiser without adapters).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from baselines.fast import calls

KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> DenoiserCalls


def denoiser_of(pipeline: Any) -> torch.nn.Module:
    """The pipeline's transformer (SD3, FLUX.1-dev) or UNet (SD 1.5, SDXL)."""
    return pipeline.transformer if getattr(pipeline, "transformer", None) is not None else pipeline.unet


def signature(denoiser: torch.nn.Module) -> tuple:
    """What a captured graph or compiled code depends on beyond the weights' values: where
    each parameter lives, and every adapter layer's scale, active set and merge state
    (peft's tuner layers; Python numbers a graph bakes in)."""
    params = tuple((p.data_ptr(), p.dtype, tuple(p.shape)) for p in denoiser.parameters())
    adapters = tuple((name, tuple(sorted(m.scaling.items())), tuple(getattr(m, "active_adapters", ())),
                      bool(getattr(m, "disable_adapters", False)), tuple(getattr(m, "merged_adapters", ())))
                     for name, m in denoiser.named_modules() if isinstance(getattr(m, "scaling", None), dict))
    return params, adapters


class DenoiserCalls:
    """A denoiser's `FastCall`s, one per set of keyword names, valid for one signature."""

    def __init__(self, denoiser: torch.nn.Module, config: Any, device: torch.device | str):
        self.denoiser = weakref.ref(denoiser)  # (KEPT's value must not keep its key alive)
        self.config = config
        self.device = device
        self.options = (bool(config.cuda_graphs), bool(config.compile))
        self.signature = signature(denoiser)
        self.runners: dict[tuple[str, ...], Callable[..., torch.Tensor]] = {}

    def runner_for(self, names: tuple[str, ...]) -> Callable[..., torch.Tensor]:
        if names not in self.runners:
            fast = calls.fast_call(calls.KeywordCall(self.denoiser(), names), self.config, self.device,
                                   training=False)
            # A graph's output buffer is overwritten by its next replay (true CFG calls the
            # denoiser twice per step): hand out a copy.
            self.runners[names] = lambda *tensors: fast(*tensors).clone()
        return self.runners[names]


def calls_for(denoiser: torch.nn.Module, config: Any, device: torch.device | str) -> DenoiserCalls:
    """The kept calls of `denoiser`, or new ones where it or the speed options changed."""
    kept = KEPT.get(denoiser)
    options = (bool(config.cuda_graphs), bool(config.compile))
    if kept is None or kept.options != options or kept.signature != signature(denoiser):
        kept = KEPT[denoiser] = DenoiserCalls(denoiser, config, device)
    return kept


def forget(denoiser: torch.nn.Module) -> None:
    """Drop the denoiser's kept calls (a fit is about to change it: their graphs, which
    hold GPU memory of their own, would be rebuilt at the next sampling call anyway)."""
    KEPT.pop(denoiser, None)


def route_sampling_calls(pipeline: Any, config: Any, device: torch.device | str) -> Callable[[], None] | None:
    """Route the pipeline's denoiser calls without gradients through its kept `FastCall`s;
    returns the undo, or None where nothing is to change (CPU, or no speed option on)."""
    graphs, compile = bool(getattr(config, "cuda_graphs", False)), bool(getattr(config, "compile", False))
    if not calls.on_cuda(device) or not (graphs or compile):
        return None
    denoiser = denoiser_of(pipeline)
    kept = calls_for(denoiser, config, device)
    return calls.route_keyword_calls(denoiser, kept.runner_for, grad=False)
