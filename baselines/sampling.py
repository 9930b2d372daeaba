"""Sampling images from a Stable Diffusion pipeline (classifier-free guidance, DDIM or DPM-Solver).

`Sampler` computes exactly what diffusers' `StableDiffusionPipeline.__call__` computes
(the same prompt encoding, initial noise, scheduler steps, guidance, VAE decoding and
PIL conversion, through the pipeline's own helpers), with a denoising loop that never
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
from PIL import Image

from baselines.speed import Accelerated, accelerate, on_cuda, set_memory_format, speed_context
from varbench.models.diffusion import DiffusionComponents

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


def generate_images(source: StableDiffusionPipeline | Sampler, prompts: Sequence[str], seeds: Sequence[int],
                    config: Any) -> list[Image.Image]:
    """One image per (prompt, seed) from a pipeline (a one-off Sampler) or a Sampler (which
    keeps its CUDA graphs between calls)."""
    sampler = source if isinstance(source, Sampler) else Sampler(source, config)
    return sampler(prompts, seeds)
