"""How the three diffusion baselines train: precision, the denoising error, the optimizer
and the loop of optimizer steps.

Precision (on CUDA with `mixed_precision: bf16`): trained tensors are fp32 master weights
updated by AdamW (fused when available) and the forward runs under bf16 autocast; frozen
modules are cast to bf16 once, since nothing updates them. Sampling runs the whole
pipeline in bf16 weights (no per-call casts). On the CPU everything stays fp32 (tests
compare images exactly).

A method's training step is two functions: `draw()`, every random choice of one
micro-batch (images, augmentations, latents, noise, timesteps) in the release's order,
and `loss(batch)`, the release's loss of that micro-batch. Nothing in a step reads a
value back to the host: data choices come from a Python RNG, noise and timesteps from a
device generator, and losses go to `ctx.fit_step` as tensors.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from varbench.method import CellContext
from varbench.models.diffusion import cast_module

Draw = Callable[[], Any]  # one micro-batch's random draws
Loss = Callable[[Any], dict[str, torch.Tensor]]  # named losses of a micro-batch; "loss" is optimised


# --- precision ---------------------------------------------------------------------

def compute_dtype(config: Any, device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA when mixed precision is on; fp32 otherwise (CPU runs are exact)."""
    if config.mixed_precision == "bf16" and torch.device(device).type == "cuda":
        return torch.bfloat16
    return torch.float32


def autocast(dtype: torch.dtype, device: torch.device | str) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    # No weight-cast cache: each weight is used once per forward anyway (and a caching
    # autocast cannot be captured, should baselines.fast replay the forward).
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, cache_enabled=False)


def cast(modules: Sequence[torch.nn.Module], dtype: torch.dtype) -> None:
    """Cast frozen modules in place (skipped when already there)."""
    for module in modules:
        if next(module.parameters()).dtype != dtype:
            cast_module(module, dtype)


def in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module` itself when already in `dtype`, else a converted copy (the original keeps
    its fp32 weights, e.g. DreamBooth's trained UNet, which is saved in fp32)."""
    if next(module.parameters()).dtype == dtype:
        return module
    converted = copy.deepcopy(module)
    cast_module(converted, dtype)
    return converted


# --- the denoising error ---------------------------------------------------------------

def draw_noise(latents: torch.Tensor, noise_scheduler: Any,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and the timesteps of one denoising loss on `latents` (drawn in this order)."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator, device=latents.device)
    return noise, timesteps


def with_prior(instance_loss: torch.Tensor, prior_error: torch.Tensor | None, weight: float) -> dict[str, torch.Tensor]:
    """The logged losses of a step: the instance loss alone, or, with prior preservation
    (DreamBooth, Custom Diffusion), instance + weight x the class images' mean error."""
    if prior_error is None:
        return {"loss": instance_loss}
    prior_loss = prior_error.mean()
    return {"loss": instance_loss + weight * prior_loss, "instance_loss": instance_loss, "prior_loss": prior_loss}


def prediction_error(unet: Any, noise_scheduler: Any, latents: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
    """Per-element squared error (B, C, H, W) of the UNet's prediction of the noise (or of
    the velocity, for v-prediction models) added to `latents` at `timesteps`: what the
    releases average into their MSE loss."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, text_states, return_dict=False)[0]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return (prediction.float() - target.float()) ** 2


# --- the optimizer and the loop ----------------------------------------------------------

def make_optimizer(params: list[torch.Tensor], learning_rate: float, config: Any,
                   device: torch.device | str) -> torch.optim.AdamW:
    options: dict[str, Any] = dict(lr=learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                   weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    # One fused kernel per step instead of a dozen per tensor; CUDA only, and older
    # torch releases lack the option.
    if torch.device(device).type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        options["fused"] = True
    return torch.optim.AdamW(params, **options)


def training_loop(draw: Draw, loss: Loss, params: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                  steps: int, ctx: CellContext, dtype: torch.dtype, grad_accumulation: int = 1,
                  max_grad_norm: float | None = None) -> None:
    """`steps` optimizer steps; each sums the gradients of `grad_accumulation` micro-batches.

    The losses' means over the micro-batches go to `ctx.fit_step` as tensors (read back
    only every few steps).
    """
    for step in range(1, steps + 1):
        totals: dict[str, torch.Tensor] = {}
        for _ in range(grad_accumulation):
            with autocast(dtype, ctx.device):
                losses = loss(draw())
            (losses["loss"] / grad_accumulation).backward()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0) + value.detach() / grad_accumulation
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ctx.fit_step(step, steps, **totals)


def count_parameters(tensors: Sequence[torch.Tensor]) -> int:
    return sum(int(t.numel()) for t in tensors)
