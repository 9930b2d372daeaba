"""A family pipeline's sampling (DreamBooth-LoRA on SD 1.5, SDXL, SD3 or FLUX.1-dev) with
the denoiser's calls replayed as CUDA graphs and/or compiled.

The pipeline stays diffusers' own, called as diffusers documents it
(`baselines.family_sampling`). Only its denoiser's keyword calls without gradients
(`transformer(hidden_states=..., timestep=..., ..., return_dict=False)`, one per step,
two with true CFG) run through a `calls.FastCall`: replayed as CUDA graphs
(`cuda_graphs`), compiled inside them (`compile_generation`). Why: at batch 1, FLUX.1-dev's
transformer launches thousands of small kernels per step and the host, not the GPU, sets
the pace; a replayed graph launches once. A call with an argument a graph cannot take (an
IP-Adapter's list of image embeddings, a LoRA scale in a dict) runs the plain forward.

A graph reads the weights where they are, so it stays right while they change value (an
optimizer step, `load_lora_weights` into the same adapters), but not when the module
itself changes (adapters added or removed, their scale or active set changed). A
pipeline's calls are kept between its calls (a capture costs several forward passes) with
a signature of its denoiser's parameters and adapter settings, and built again when that
signature changes; a fit drops them when it starts (the class images sampled before it
leave graphs of the denoiser without adapters). Each graph (one per set of keywords and
shapes, e.g. batch 1 and batch 4) keeps its own memory pool while it is kept: the family
bench's later rows' peaks include the earlier batch sizes' pools.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from baselines.fast import calls

# pipeline -> its denoiser's DenoiserCalls. Keyed weakly by the pipeline, which the calls do not
# reference: they go when the pipeline goes (the calls hold the denoiser, so keying by it would
# keep it alive for good).
KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sampling_options(config: Any) -> tuple[bool, bool]:
    """(CUDA graphs, compiled) for sampling: `cuda_graphs` and `compile_generation`, where
    the method has them (IP-Adapter has neither); an unsettled "auto" does not compile."""
    return bool(getattr(config, "cuda_graphs", False)), getattr(config, "compile_generation", False) is True


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
        self.denoiser = denoiser
        self.device = device
        self.options = sampling_options(config)
        self.signature = signature(denoiser)
        self.runners: dict[tuple[str, ...], Callable[..., torch.Tensor]] = {}

    def runner_for(self, names: tuple[str, ...]) -> Callable[..., torch.Tensor]:
        if names not in self.runners:
            graphs, compile = self.options
            fast = calls.fast_call(calls.KeywordCall(self.denoiser, names),
                                   SimpleNamespace(cuda_graphs=graphs, compile=compile), self.device, training=False)
            # A graph's output buffer is overwritten by its next replay (true CFG calls the
            # denoiser twice per step): hand out a copy.
            self.runners[names] = lambda *tensors: fast(*tensors).clone()
        return self.runners[names]


def calls_for(pipeline: Any, config: Any, device: torch.device | str) -> DenoiserCalls:
    """The kept calls of the pipeline's denoiser, or new ones where it or the speed options
    changed."""
    denoiser = denoiser_of(pipeline)
    kept = KEPT.get(pipeline)
    if (kept is None or kept.denoiser is not denoiser or kept.options != sampling_options(config)
            or torch.device(kept.device) != torch.device(device) or kept.signature != signature(denoiser)):
        kept = KEPT[pipeline] = DenoiserCalls(denoiser, config, device)
    return kept


def forget(denoiser: torch.nn.Module) -> None:
    """Drop the calls kept for `denoiser` (a fit is about to change it: their graphs, which
    hold GPU memory of their own, would be rebuilt at the next sampling call anyway)."""
    for pipeline in [p for p, kept in KEPT.items() if kept.denoiser is denoiser]:
        del KEPT[pipeline]


def route_sampling_calls(pipeline: Any, config: Any, device: torch.device | str) -> Callable[[], None] | None:
    """Route the pipeline's denoiser calls without gradients through its kept `FastCall`s;
    returns the undo, or None where nothing is to change (CPU, or no speed option on)."""
    if not calls.on_cuda(device) or not any(sampling_options(config)):
        return None
    kept = calls_for(pipeline, config, device)
    return calls.route_keyword_calls(kept.denoiser, kept.runner_for, grad=False)
