"""What the three diffusion baselines share: config fields, precision, data, the
denoising loss, the training loop, and the model that samples.

Precision (on CUDA with `mixed_precision: bf16`): trained tensors are fp32 master weights
updated by AdamW (fused when available) and the forward runs under bf16 autocast; frozen
modules are cast to bf16 once, since nothing updates them. Sampling runs the whole
pipeline in bf16 weights (no per-call casts). On the CPU everything stays fp32 (tests
compare images exactly).

Speed: nothing in a training step reads a value back to the host (data choices come from
a Python RNG, noise and timesteps from a device generator, losses go to `ctx.fit_step` as
tensors); prompts that do not contain a trained token are encoded once; VAE latent
distributions of fixed images are encoded once and re-sampled every step. The speed
options (config fields below; CUDA only) are applied through `baselines.speed`.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from baselines.sampling import Sampler, generate_images, sampling_pipeline
from baselines.speed import speed_context
from varbench.errors import UserError
from varbench.method import CellContext, Method, PersonalizedModel
from varbench.models.diffusion import (
    SD15_ID,
    SD15_REVISION,
    TINY,
    DiffusionComponents,
    cast_module,
    load_components,
)

__all__ = ["Sampler", "generate_images", "sampling_pipeline", "speed_context"]  # re-exported for callers


@dataclass
class DiffusionConfig:
    """Fields every baseline has; defaults are the releases' (DESIGN.md section 8)."""

    base_model: str = SD15_ID  # hub id, local diffusers folder, or "tiny" (random-init toy parts)
    revision: str | None = SD15_REVISION  # hub commit; null = the repository's default branch
    resolution: int = 512  # training crops and generated images, in pixels
    mixed_precision: Literal["bf16", "no"] = "bf16"  # CUDA only: bf16 autocast, fp32 master weights
    sampler: Literal["ddim", "dpm"] = "ddim"  # evaluation sampler (DDIM, or DPM-Solver++ multistep)
    sample_steps: int = 50  # denoising steps per generated image
    guidance_scale: float = 7.5  # classifier-free guidance weight
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # Speed options: CUDA only (no effect on the CPU); see baselines/speed.py and
    # benchmarks/NOTES-baselines.md for what each one measured on an H100.
    cudnn_benchmark: bool = False  # cuDNN times every convolution algorithm per shape (no gain measured, +3 s/sampler)
    channels_last: bool = True  # fit: UNet and VAE convolutions in NHWC (DreamBooth +8.5%)
    channels_last_sampling: bool = False  # sampling in NHWC too (measured 4.5% slower than NCHW, uncompiled)
    cuda_graphs: bool = True  # UNet (and text/VAE encoder) calls replayed as captured CUDA graphs
    compile: bool = False  # torch.compile the UNet (and CD's VAE encoder); ~1-2 min of compiling per graph
    fuse_qkv: bool = True  # sampling: one q/k/v matmul per attention layer (diffusers' fuse_qkv_projections)
    attention_backend: Literal["auto", "flash", "efficient", "cudnn"] = "cudnn"  # SDPA kernel tried first
    sampling_loop: Literal["varbench", "diffusers"] = "varbench"  # diffusers = the pipeline's own loop (reference)


class DiffusionMethod(Method):
    """What the three baselines share as methods: value checks on the config, the
    random-init flag, and loading Stable Diffusion (`base_model`, `revision`)."""

    def __init__(self, config: Any = None):
        super().__init__(config)
        check_config(self.config, f"{self.name} config")

    def uses_random_init(self) -> bool:
        return self.config.base_model == TINY

    def load_base(self, ctx: CellContext) -> DiffusionComponents:
        return load_components(self.config.base_model, self.config.revision, ctx.device)

    def fit(self, base: DiffusionComponents, subject: Any, ctx: CellContext) -> PersonalizedModel:
        with speed_context(self.config, ctx.device):  # cuDNN autotuning, attention backend
            return self.fit_subject(base, subject, ctx)

    def fit_subject(self, base: DiffusionComponents, subject: Any, ctx: CellContext) -> PersonalizedModel:
        """The method's own fit (`fit` adds the speed settings around it)."""
        raise NotImplementedError


def check_config(config: DiffusionConfig, where: str) -> None:
    """Values the type check cannot catch, as one clear error each."""
    if config.resolution < 8 or config.resolution % 8:
        raise UserError(f"resolution is {config.resolution}, must be a positive multiple of 8", where,
                        "The VAE works on 8x8 pixel cells; use e.g. 512 (or 64 with base_model tiny).")
    counts = ("steps", "batch_size", "sample_steps", "grad_accumulation", "num_class_images", "class_batch_size",
              "encode_ahead")
    for name in counts:
        value = getattr(config, name, 1)
        if value < 1:
            raise UserError(f"{name} is {value}, must be at least 1", where, f"Set {name} to a positive number.")
    if getattr(config, "learning_rate", 0.0) < 0:
        raise UserError(f"learning_rate is {config.learning_rate}, must not be negative", where, None)


# --- precision ---------------------------------------------------------------------

def compute_dtype(config: DiffusionConfig, device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA when mixed precision is on; fp32 otherwise (CPU runs are exact)."""
    if config.mixed_precision == "bf16" and torch.device(device).type == "cuda":
        return torch.bfloat16
    return torch.float32


def autocast(dtype: torch.dtype, device: torch.device | str) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    # No weight-cast cache: each weight is used once per forward anyway, and CUDA graph
    # capture (make_graphed_callables) refuses a caching autocast.
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


# --- data ----------------------------------------------------------------------------

def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float tensor in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def resize_and_crop(image: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize the shorter side to `size`, then take the centre square (DreamBench images
    are square, so the crop only matters for other data)."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), resample=resample)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def pixel_batch(images: Sequence[Image.Image], size: int, resample: int, device: torch.device | str) -> torch.Tensor:
    return torch.stack([image_to_tensor(resize_and_crop(im, size, resample)) for im in images]).to(device)


class LatentPool:
    """VAE latent distributions of a fixed set of images, encoded once.

    The releases call `vae.encode(x).latent_dist.sample()` every step; the encoder output
    does not change for a fixed image, so only the sampling is repeated here.
    With `with_flips`, the mirrored images are encoded too (flip augmentation).
    """

    def __init__(self, vae: Any, pixels: torch.Tensor, with_flips: bool = False, chunk: int = 8):
        self.scaling_factor = float(vae.config.scaling_factor)
        self.count = pixels.shape[0]
        variants = [pixels, torch.flip(pixels, dims=[-1])] if with_flips else [pixels]
        means, stds = [], []
        with torch.no_grad():
            for variant in variants:
                for part in variant.split(chunk):
                    dist = vae.encode(part.to(vae.device, vae.dtype)).latent_dist
                    means.append(dist.mean.float())
                    stds.append(dist.std.float())
        self.mean = torch.cat(means)
        self.std = torch.cat(stds)

    def sample(self, indices: Sequence[int], generator: torch.Generator, flipped: Sequence[bool] = ()) -> torch.Tensor:
        """Scaled latents for images `indices` (optionally mirrored), one fresh draw each."""
        flipped = list(flipped) or [False] * len(indices)
        # Slices, not a list index: indexing a CUDA tensor with a Python list copies the
        # list to the device, which waits for the queued work.
        rows = [i + (self.count if flip else 0) for i, flip in zip(indices, flipped)]
        mean = torch.cat([self.mean[r:r + 1] for r in rows])
        std = torch.cat([self.std[r:r + 1] for r in rows])
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * noise) * self.scaling_factor


class ShuffledOrder:
    """Endless indices 0..n-1, reshuffled at every pass: how a shuffled DataLoader visits
    a dataset, one example at a time."""

    def __init__(self, size: int, rng: random.Random):
        self.size = size
        self.rng = rng
        self.pending: list[int] = []

    def next(self) -> int:
        if not self.pending:
            self.pending = list(range(self.size))
            self.rng.shuffle(self.pending)
        return self.pending.pop()


def tokenize(tokenizer: Any, prompts: Sequence[str], device: torch.device | str) -> torch.Tensor:
    """Token ids padded to the model length (77), as the SD pipeline and the releases do."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


def encode_prompts(components: DiffusionComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder states of fixed prompts (computed once, no gradient)."""
    with torch.no_grad():
        ids = tokenize(components.tokenizer, prompts, components.text_encoder.device)
        return components.text_encoder(ids)[0]


# --- the denoising loss and the training loop --------------------------------------------

def denoising_error(predict_noise: Callable[..., torch.Tensor], noise_scheduler: Any, latents: torch.Tensor,
                    text_states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-element squared error (B, C, H, W) of the UNet's prediction at random timesteps.

    `predict_noise(noisy, timesteps, states)` is the UNet call (`baselines.speed.NoisePrediction`,
    possibly accelerated)."""
    noise, timesteps = draw_noise(latents, noise_scheduler, generator)
    return prediction_error(predict_noise, noise_scheduler, latents, noise, timesteps, text_states)


def draw_noise(latents: torch.Tensor, noise_scheduler: Any,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and the timesteps of one denoising loss on `latents` (drawn in this order)."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator, device=latents.device)
    return noise, timesteps


def prediction_error(predict_noise: Callable[..., torch.Tensor], noise_scheduler: Any, latents: torch.Tensor,
                     noise: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
    """`denoising_error` with the noise and timesteps given."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = predict_noise(noisy, timesteps, text_states)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return (prediction.float() - target.float()) ** 2


def make_optimizer(params: list[torch.Tensor], learning_rate: float, config: DiffusionConfig,
                   device: torch.device | str) -> torch.optim.AdamW:
    options: dict[str, Any] = dict(lr=learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                   weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    # One fused kernel per step instead of a dozen per tensor; CUDA only, and older
    # torch releases lack the option.
    if torch.device(device).type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        options["fused"] = True
    return torch.optim.AdamW(params, **options)


def train(micro_step: Callable[[], dict[str, torch.Tensor]], params: list[torch.Tensor],
          optimizer: torch.optim.Optimizer, steps: int, ctx: CellContext, dtype: torch.dtype,
          grad_accumulation: int = 1, max_grad_norm: float | None = None) -> None:
    """`steps` optimizer steps; each sums the gradients of `grad_accumulation` micro-steps.

    `micro_step()` returns named losses ("loss" is the one optimised); their means over
    the micro-steps go to `ctx.fit_step` as tensors (read back only every few steps).
    """
    for step in range(1, steps + 1):
        totals: dict[str, torch.Tensor] = {}
        for _ in range(grad_accumulation):
            with autocast(dtype, ctx.device):
                losses = micro_step()
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


# --- sampling ----------------------------------------------------------------------------

class DiffusionModel(PersonalizedModel):
    """A personalized SD pipeline; each baseline adds how its trained tensors are saved."""

    def __init__(self, components: DiffusionComponents, unet: Any, config: DiffusionConfig,
                 trainable_parameters: int, may_fuse: bool = True):
        self.components = components
        self.config = config
        self.pipeline = sampling_pipeline(components, unet, config)
        self.sampler = Sampler(self.pipeline, config, may_fuse=may_fuse)  # keeps its CUDA graphs between calls
        self._trainable_parameters = trainable_parameters

    @property
    def trainable_parameters(self) -> int:
        return self._trainable_parameters

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        return generate_images(self.sampler, prompts, seeds, self.config)
