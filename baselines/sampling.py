"""Sampling images from a Stable Diffusion pipeline (classifier-free guidance, DDIM or DPM-Solver).

`Sampler` computes exactly what diffusers' `StableDiffusionPipeline.__call__` computes
(the same prompt encoding, initial noise, scheduler steps, guidance, VAE decoding and
PIL conversion, through the pipeline's own helpers; on CUDA the upsampling convolutions
are computed without materialising the upsampled tensor, the same function up to
rounding: `SubpixelUpsample2D`), with a denoising loop that never
waits for the GPU: the pipeline hands the scheduler a GPU timestep, and DDIM turns it
into a Python number twice per step (two host syncs); here the scheduler gets Python
ints and the UNet a precomputed GPU tensor. On CUDA the guided UNet step can also run as
a CUDA graph and/or compiled (`baselines.speed`); then a call with fewer prompts than an
earlier call is padded to that batch size, so the captured graph is reused (each image
depends only on its own prompt and seed, so the padding images are simply dropped).
`sampling_loop: diffusers` runs the pipeline itself instead (the reference).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.upsampling import Upsample2D
from PIL import Image

from baselines.speed import Accelerated, accelerate, on_cuda, set_memory_format, speed_context
from varbench.models.diffusion import DiffusionComponents
from varbench.models.upsample import upsample_conv

PLAIN_PROCESSORS = ("AttnProcessor", "AttnProcessor2_0")  # diffusers' default attention processors


def sampling_pipeline(components: DiffusionComponents, unet: Any, config: Any) -> StableDiffusionPipeline:
    """A diffusers SD pipeline over these components (no safety checker: DreamBench scoring
    must see every image as generated)."""
    pipeline = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=unet, scheduler=components.sampling_scheduler(config.sampler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class GuidedNoise(torch.nn.Module):
    """One guided UNet evaluation: the noise prediction for the unconditional and the
    prompt half of the batch, combined as uncond + scale x (text - uncond)."""

    def __init__(self, unet: Any, guidance_scale: float, guided: bool):
        super().__init__()
        self.unet = unet
        self.guidance_scale = guidance_scale
        self.guided = guided

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        model_input = torch.cat([latents] * 2) if self.guided else latents
        noise = self.unet(model_input, timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        if not self.guided:
            return noise
        uncond, text = noise.chunk(2)
        return uncond + self.guidance_scale * (text - uncond)


class Sampler:
    """Images from `pipeline` with `config`'s sampler settings and speed options.

    `may_fuse`: whether the UNet may get fused q/k/v projections (a change of the module in
    place, so only for a UNet that is never trained or saved afterwards).
    """

    def __init__(self, pipeline: StableDiffusionPipeline, config: Any, allow_compile: bool = True,
                 may_fuse: bool = True):
        self.pipeline = pipeline
        self.config = config
        self.device = pipeline.unet.device
        if on_cuda(self.device):
            set_memory_format([pipeline.unet, pipeline.vae], config.channels_last_sampling, self.device)
            if may_fuse and config.fuse_qkv and config.sampling_loop == "varbench":
                fuse_projections(pipeline.unet)
            subpixel = config.subpixel_upsample and config.sampling_loop == "varbench"
            subpixel_upsamplers(pipeline.vae.decoder, subpixel)  # the VAE's decoder is never trained
            if may_fuse:  # a UNet shared with training is left as released
                subpixel_upsamplers(pipeline.unet, subpixel)
        guided = config.guidance_scale > 1 and pipeline.unet.config.time_cond_proj_dim is None
        self.guided_noise = GuidedNoise(pipeline.unet, config.guidance_scale, guided)
        self.step = accelerate(self.guided_noise, config, self.device, training=False, allow_compile=allow_compile)
        self.decode = accelerate(LatentDecoding(pipeline.vae), config, self.device, training=False,
                                 allow_compile=allow_compile)
        self.batch_sizes: set[int] = set()

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """One image per (prompt, seed), each from its own generator, so image i depends only
        on (prompts[i], seeds[i]) and never on the batch it was generated in."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        count = len(prompts)
        with speed_context(self.config, self.device):
            if self.config.sampling_loop == "diffusers":
                return self._pipeline_call(prompts, seeds)
            size = self._padded_size(count)
            padding = size - count
            images = self._sample(list(prompts) + [prompts[-1]] * padding, list(seeds) + [seeds[-1]] * padding)
        return images[:count]

    def _padded_size(self, count: int) -> int:
        if not isinstance(self.step, Accelerated):
            return count
        larger = [size for size in self.batch_sizes if size >= count]
        size = min(larger) if larger else count
        self.batch_sizes.add(size)
        return size

    def _sample(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        pipe, config, device = self.pipeline, self.config, self.device
        generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
        with torch.no_grad():
            prompt_embeds, negative_embeds = pipe.encode_prompt(prompts, device, 1, self.guided_noise.guided)
            embeds = torch.cat([negative_embeds, prompt_embeds]) if self.guided_noise.guided else prompt_embeds
            scheduler = pipe.scheduler
            # Timesteps stay on the CPU for the scheduler (Python ints, no syncs); the UNet
            # reads them from one copy on the GPU.
            scheduler.set_timesteps(config.sample_steps, device="cpu")
            timesteps = scheduler.timesteps
            unet_timesteps = timesteps.to(device)
            latents = pipe.prepare_latents(len(prompts), pipe.unet.config.in_channels, config.resolution,
                                           config.resolution, embeds.dtype, device, generators)
            step_options = pipe.prepare_extra_step_kwargs(generators, 0.0)
            for index, timestep in enumerate(timesteps.tolist()):
                model_input = scheduler.scale_model_input(latents, timestep)
                noise = self.step(model_input, unet_timesteps[index], embeds)
                latents = scheduler.step(noise, timestep, latents, **step_options, return_dict=False)[0]
            return to_pil_images(self.decode(latents))

    def _pipeline_call(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]
        result = self.pipeline(list(prompts), height=self.config.resolution, width=self.config.resolution,
                               num_inference_steps=self.config.sample_steps,
                               guidance_scale=self.config.guidance_scale, generator=generators, output_type="pil")
        return list(result.images)


class LatentDecoding(torch.nn.Module):
    """VAE decoder(final latents) -> images in [-1, 1] (the pipeline's `vae.decode` call);
    a module so that it can run as a CUDA graph or compiled like the UNet step."""

    def __init__(self, vae: Any):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """diffusers' `postprocess(output_type="pil")` with its arithmetic kept on the device:
    the same operations in the same dtypes, so the same pixels (tested), but only the
    uint8 pixels cross to the host instead of float32 arrays four times their size."""
    unit = (images * 0.5 + 0.5).clamp(0, 1)  # VaeImageProcessor.denormalize, in the VAE's dtype
    pixels = (unit.float() * 255).round().to(torch.uint8)  # numpy_to_pil, in float32
    return [Image.fromarray(array) for array in pixels.permute(0, 2, 3, 1).cpu().numpy()]


def fuse_projections(unet: Any) -> None:
    """diffusers' fused q/k/v projections (one matmul instead of three per attention layer),
    where the UNet has them and runs diffusers' plain processors (Custom Diffusion's own
    processors hold their trained K/V and must stay)."""
    processors = getattr(unet, "attn_processors", {})
    if hasattr(unet, "fuse_qkv_projections") and processors and all(
            type(p).__name__ in PLAIN_PROCESSORS for p in processors.values()):
        unet.fuse_qkv_projections()


class SubpixelUpsample2D(torch.nn.Module):
    """diffusers' `Upsample2D` (nearest 2x, then a 3x3 convolution) computed by
    `upsample_conv`; the convolution stays at `.conv`, so state-dict keys do not change."""

    def __init__(self, upsample: torch.nn.Module):
        super().__init__()
        self.channels = upsample.channels
        self.conv = upsample.conv

    def forward(self, hidden_states: torch.Tensor, output_size: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        height, width = hidden_states.shape[-2:]
        if output_size is not None and tuple(output_size) != (2 * height, 2 * width):
            upsampled = torch.nn.functional.interpolate(hidden_states, size=output_size, mode="nearest")
            return self.conv(upsampled)
        return upsample_conv(hidden_states, self.conv.weight, self.conv.bias)


def _plain_upsampler(module: torch.nn.Module) -> bool:
    """An `Upsample2D` that is exactly nearest 2x + a 3x3, padding-1 convolution."""
    conv = getattr(module, "conv", None)
    return (type(module).__name__ == "Upsample2D" and module.use_conv and not module.use_conv_transpose
            and module.interpolate and module.norm is None and isinstance(conv, torch.nn.Conv2d)
            and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def subpixel_upsamplers(model: torch.nn.Module, enabled: bool = True) -> int:
    """In place: `model`'s plain upsamplers become `SubpixelUpsample2D` (enabled), or back
    to diffusers' `Upsample2D` over the same convolution (not enabled, e.g. a later
    sampler with the option off over shared components). Returns how many were swapped."""
    if enabled:
        swap = {name: SubpixelUpsample2D(module) for name, module in model.named_modules() if _plain_upsampler(module)}
    else:
        swap = {name: _plain_from(module) for name, module in model.named_modules()
                if isinstance(module, SubpixelUpsample2D)}
    for name, replacement in swap.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
    return len(swap)


def _plain_from(subpixel: SubpixelUpsample2D) -> torch.nn.Module:
    plain = Upsample2D(subpixel.channels, use_conv=True, out_channels=subpixel.conv.out_channels)
    plain.conv = subpixel.conv
    return plain


def generate_images(source: StableDiffusionPipeline | Sampler, prompts: Sequence[str], seeds: Sequence[int],
                    config: Any) -> list[Image.Image]:
    """One image per (prompt, seed) from a pipeline (a one-off Sampler) or a Sampler (which
    keeps its CUDA graphs between calls)."""
    sampler = source if isinstance(source, Sampler) else Sampler(source, config)
    return sampler(prompts, seeds)
