"""The speed layer of the diffusion baselines: the plain recipes' computation, run faster.

The plain code (common.py, the method files, train_*.py, training.py, data.py,
sampling.py, family_sampling.py, class_images.py, tokens.py) is eager PyTorch and diffusers as the releases
run them. It imports one thing from here, `accelerated`, at two kinds of call site: each
method's `fit` wraps its training loop, and `sampling.generate_images` (SD 1.5's methods) and
`family_sampling.generate_images` (DreamBooth-LoRA, IP-Adapter) wrap the pipeline call:

    with accelerated(base, config, ctx.device, training=True):       # a fit
        unet = train(base, subject, class_paths, config, ctx, phrase)
    with accelerated(pipeline, config, device, training=False):      # a sampling call
        images = pipeline(prompts, generator=generators, ...).images

`accelerated` swaps modules and functions per the config's speed options and undoes the
swaps when its block ends. What each option swaps in, and why the values stay the plain
ones (CUDA only unless marked "every device"; on the CPU a run is the plain run):

  cudnn_benchmark,    process-wide settings for the block (settings.py).
  attention_backend
  channels_last       fits: UNet and VAE weights in NHWC; Custom Diffusion's VAE, which
                      encodes every step and is GroupNorm-bound, stays NCHW (PyTorch's
                      GroupNorm copies NHWC input to NCHW and back). Back to the standard
                      layout when the block ends.
  cuda_graphs,        fits: the UNet's and the text encoder's own calls with gradients on
  compile             (`unet(noisy, t, states)`, `text_encoder(ids)`) run through a
                      `calls.FastCall`: forward and backward replayed as CUDA graphs and/or
                      the UNet compiled (the text encoder is never compiled). Sampling: the
                      guided UNet step and the VAE decoder, likewise, in the sync-free loop.
                      A capture or compile that fails or disagrees with the plain module
                      warns once and runs the plain module. Compiled networks get
                      `ChannelStatsGroupNorm`s (varbench/models/fast/groupnorm.py: torch's
                      kernel when eager, a reduction order that compiles well when traced).
  sampling_loop       every device: the pipeline's class becomes `SyncFreePipeline`
  ("varbench")        (sampling.py): the pipeline's arithmetic without host syncs, padded
                      to the batch size its graphs were captured at.
  channels_last_sampling,  sampling: NHWC weights, and diffusers' fused q/k/v projections
  fuse_qkv            (sync-free loop only; a reduced-precision UNet only: in fp32 runs the
                      sampled UNet is the one a fit trains next or DreamBooth saves).
  cuda_graphs,        DreamBooth-LoRA's fits: the denoiser's keyword calls with gradients
  compile,            run through a `FastCall` (`calls.route_keyword_calls`); no graphs
  channels_last,      under gradient checkpointing; a UNet denoiser's weights NHWC with
  cudnn_attention,    `channels_last`; SDPA's cuDNN kernel off unless `cudnn_attention`
  fuse_lora_qkv       (on torch 2.11 its backward fails on FLUX.1-dev's shapes); a UNet's
  (LoRA families)     self-attention processors `lora_qkv.LoraQKVAttnProcessor` with
                      `fuse_lora_qkv` (the q/k/v adapters as one LoRA). Sampling:
                      the denoiser's keyword calls without gradients likewise (`cuda_graphs`,
                      `compile_generation`), the graphs kept with the pipeline while its
                      denoiser is unchanged (family_sampling.py).
  fuse_micro_batches  every device: Textual Inversion's `training_loop` becomes
                      `training.fused_training_loop` (a step's micro-batches as one batch).
  encode_ahead        every device: Custom Diffusion's `encoded_steps` encodes the subject
                      images of `encode_ahead` steps in one VAE call (training.py), its
                      VAE encoder compiled with `compile` on CUDA.

What a sampling pipeline is set up with stays with it: NHWC weights, fused projections and
GroupNorm classes are changed once, at its first call, because its captured graphs and
compiled code read those very weights (a pipeline is built after its weights are final).

Every piece is tested against the plain computation (tests/test_baselines_fast.py; the
grep of the plain files is tests/test_baselines_plain.py); measured effects are in
benchmarks/NOTES-baselines.md.
"""
from __future__ import annotations

import dataclasses
import importlib
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from baselines.fast import calls, family_sampling, lora_qkv, sampling, settings
from baselines.fast.training import encoding_ahead, fused_training_loop
from varbench.models.fast.groupnorm import ChannelStatsGroupNorm
from varbench.models.fast.swaps import Swaps

__all__ = ["Accelerated", "accelerated"]

PREPARED: weakref.WeakSet = weakref.WeakSet()  # sampling pipelines whose weights are set up


class Accelerated(Swaps):
    """What one `accelerated` call changed (`changes`, readable lines; `kept`, what stays
    with a sampling pipeline) and how to undo it (`undo()`, or leaving its `with` block)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[str] = []


def accelerated(target: Any, config: Any, device: torch.device | str, *, training: bool) -> Accelerated:
    """Switch the speed layer on for a fit of `target` (components with `unet`, `vae`,
    `text_encoder`, or a LoRA family model with a `denoiser`; `training=True`) or for
    calls of the sampling pipeline `target` (`training=False`; a LoRA family's pipeline
    when `config` is a family method's), as `config`'s speed options say; see the module
    docstring. Use it as a `with` block: the swaps are undone when it ends."""
    done = Accelerated()
    try:
        if training and hasattr(target, "denoiser"):  # a LoRA family model (varbench.models.families)
            _accelerate_family_fit(done, target, config, device)
        elif training:
            _accelerate_fit(done, target, config, device)
        elif hasattr(config, "model_family"):  # a LoRA family's pipeline (baselines.families)
            _accelerate_family_sampling(done, target, config, device)
        else:
            _accelerate_sampling(done, target, config, device)
    except BaseException:
        done.undo()
        raise
    return done


def _accelerate_fit(done: Accelerated, base: Any, config: Any, device: torch.device | str) -> None:
    encodes_every_step = hasattr(config, "encode_ahead")  # Custom Diffusion re-encodes its subject images
    if calls.on_cuda(device):
        done.record(f"cuDNN benchmark {config.cudnn_benchmark}, attention {config.attention_backend} first",
                    settings.set_cuda_settings(config))
        _set_layout(done, "UNet", base.unet, config.channels_last)
        _set_layout(done, "VAE", base.vae, config.channels_last and not encodes_every_step)
        if config.compile:
            compiled = [base.unet] + ([base.vae] if encodes_every_step else [])
            done.set_class("compiled GroupNorms", _group_norms(compiled), ChannelStatsGroupNorm)
        unet = calls.fast_call(calls.NoisePrediction(base.unet), config, device, training=True)
        if isinstance(unet, calls.FastCall):
            done.record("UNet calls with gradients -> FastCall", calls.route_unet_calls(base.unet, unet))
        text = calls.fast_call(calls.TextStates(base.text_encoder), config, device, training=True,
                               allow_compile=False)
        if isinstance(text, calls.FastCall):
            done.record("text encoder calls with gradients -> FastCall",
                        calls.route_text_encoder_calls(base.text_encoder, text))
    if getattr(config, "fuse_micro_batches", False):
        done.install(importlib.import_module("baselines.train_textual_inversion"), "training_loop",
                     fused_training_loop)
    if encodes_every_step and (config.encode_ahead > 1 or (calls.on_cuda(device) and config.compile)):
        done.install(importlib.import_module("baselines.train_custom_diffusion"), "encoded_steps",
                     encoding_ahead(config, device),
                     f"baselines.fast.training.encoding_ahead ({config.encode_ahead} steps per VAE call)")


def _accelerate_family_fit(done: Accelerated, model: Any, config: Any, device: torch.device | str) -> None:
    """DreamBooth-LoRA's fit: the denoiser's calls with gradients through `FastCall`s (a UNet
    with NHWC weights). No graphs with gradient checkpointing: it is on to save memory,
    and a captured backward keeps its recomputed activations in the graph's own pool."""
    if not calls.on_cuda(device):
        return
    family_sampling.forget(model.denoiser)
    done.record(f"cuDNN attention {'allowed' if config.cudnn_attention else 'off'}",
                settings.set_cudnn_attention(bool(config.cudnn_attention)))
    denoiser = model.denoiser
    if model.family.denoiser == "unet":
        _set_layout(done, "UNet", denoiser, config.channels_last)
        if config.fuse_lora_qkv:
            done.set_class("self-attention: LoRA q/k/v in one pass", lora_qkv.processors(denoiser),
                           lora_qkv.LoraQKVAttnProcessor)
        if config.compile:
            done.set_class("compiled GroupNorms", _group_norms([denoiser]), ChannelStatsGroupNorm)
    graphs = config.cuda_graphs and not config.gradient_checkpointing
    if not (graphs or config.compile):
        return
    options = dataclasses.replace(config, cuda_graphs=graphs)

    def runner_for(names: tuple[str, ...]) -> Any:
        return calls.fast_call(calls.KeywordCall(denoiser, names), options, device, training=True)

    done.record("denoiser calls with gradients -> FastCall", calls.route_keyword_calls(denoiser, runner_for))


def _accelerate_family_sampling(done: Accelerated, pipeline: Any, config: Any, device: torch.device | str) -> None:
    """A family pipeline's call: its denoiser's calls without gradients through the
    `FastCall`s kept for it (family_sampling.py)."""
    undo = family_sampling.route_sampling_calls(pipeline, config, device)
    if undo is not None:
        done.record("denoiser calls without gradients -> FastCall", undo)


def _accelerate_sampling(done: Accelerated, pipeline: Any, config: Any, device: torch.device | str) -> None:
    from diffusers import StableDiffusionPipeline

    if not isinstance(pipeline, StableDiffusionPipeline):
        raise TypeError(f"accelerated(training=False) takes a StableDiffusionPipeline, not {type(pipeline).__name__}")
    sync_free = config.sampling_loop == "varbench"
    if calls.on_cuda(device):
        done.record(f"cuDNN benchmark {config.cudnn_benchmark}, attention {config.attention_backend} first",
                    settings.set_cuda_settings(config))
        if pipeline not in PREPARED:
            PREPARED.add(pipeline)
            settings.set_layout([pipeline.unet, pipeline.vae], config.channels_last_sampling)
            done.kept.append(f"UNet and VAE {'NHWC' if config.channels_last_sampling else 'NCHW'}")
            reduced_precision = next(pipeline.unet.parameters()).dtype != torch.float32
            if config.fuse_qkv and sync_free and reduced_precision and sampling.fuse_projections(pipeline.unet):
                done.kept.append("UNet: fused q/k/v projections")
            if config.compile:
                for module in _group_norms([pipeline.unet, pipeline.vae]):
                    module.__class__ = ChannelStatsGroupNorm
                done.kept.append("compiled GroupNorms -> ChannelStatsGroupNorm")
    if sync_free:
        setup = sampling.setup_for(pipeline, config, torch.device(device))
        sampling.ACTIVE[pipeline] = setup
        done.record("pipeline call -> sync-free loop", lambda: sampling.ACTIVE.pop(pipeline, None))
        done.set_class("pipeline", [pipeline], sampling.SyncFreePipeline)


def _set_layout(done: Accelerated, where: str, module: nn.Module, channels_last: bool) -> None:
    settings.set_layout([module], channels_last)
    done.record(f"{where} {'NHWC' if channels_last else 'NCHW'}", lambda: settings.set_layout([module], False))


def _group_norms(modules: Iterable[nn.Module]) -> list[nn.Module]:
    return [m for module in modules for m in module.modules() if type(m) is nn.GroupNorm]
