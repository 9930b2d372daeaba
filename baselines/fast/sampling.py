"""Sampling without host syncs: `StableDiffusionPipeline.__call__` for prompts, size, steps,
guidance and one generator per image, computed in a loop that never waits for the GPU.

`SyncFreePipeline.__call__` computes exactly what the pipeline computes (the same prompt
encoding, initial noise, scheduler steps, guidance, VAE decoding and PIL conversion,
through the pipeline's own helpers). The pipeline hands the scheduler a GPU timestep,
which DDIM turns into a Python number twice per step (two host syncs); here the
scheduler gets Python ints and the UNet a precomputed GPU tensor. The guided UNet step
and the VAE decoding may run as CUDA graphs and/or compiled (`calls.FastCall`); then a
call with fewer prompts than an earlier call is padded to that batch size, so the
captured graph is reused (each image depends only on its own prompt and generator, so
the padding images are simply dropped). The PIL conversion's arithmetic stays on the
device, so only uint8 pixels cross to the host.

What a pipeline's calls reuse (`SamplingSetup`: the guided step and decoder calls with
their graphs, the batch sizes they were captured at) stays with the pipeline.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from PIL import Image

from baselines.fast import calls

PLAIN_PROCESSORS = ("AttnProcessor", "AttnProcessor2_0")  # diffusers' default attention processors


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


class LatentDecoding(torch.nn.Module):
    """VAE decoder(final latents) -> images in [-1, 1] (the pipeline's `vae.decode` call);
    a module so that it can run as a CUDA graph or compiled like the UNet step."""

    def __init__(self, vae: Any):
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]


class SamplingSetup:
    """What a pipeline's accelerated calls reuse: its guided step and decoder calls
    (`FastCall`s on CUDA, with their graphs) and the batch sizes those were captured at."""

    def __init__(self, pipeline: StableDiffusionPipeline, config: Any, device: torch.device):
        self.config = config
        self.device = device
        self.decode = calls.fast_call(LatentDecoding(pipeline.vae), config, device, training=False)
        self.unet = pipeline.unet
        self.steps: dict[float, tuple[GuidedNoise, Any]] = {}
        self.batch_sizes: set[int] = set()

    def step(self, guidance_scale: float) -> tuple[GuidedNoise, Any]:
        """The guided UNet evaluation at this scale, and how it runs."""
        if guidance_scale not in self.steps:
            guided = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
            guided_noise = GuidedNoise(self.unet, guidance_scale, guided)
            self.steps[guidance_scale] = (guided_noise, calls.fast_call(guided_noise, self.config, self.device,
                                                                         training=False))
        return self.steps[guidance_scale]

    def padded_size(self, count: int) -> int:
        """Graphs are captured per batch size: pad to the smallest one captured before."""
        if not isinstance(self.decode, calls.FastCall):
            return count
        larger = [size for size in self.batch_sizes if size >= count]
        size = min(larger) if larger else count
        self.batch_sizes.add(size)
        return size


# pipeline -> {(compile, cuda_graphs) -> its setup}, and the setup of the call under way;
# entries go with their pipeline.
SETUPS: weakref.WeakKeyDictionary[StableDiffusionPipeline, dict[tuple, SamplingSetup]] = weakref.WeakKeyDictionary()
ACTIVE: weakref.WeakKeyDictionary[StableDiffusionPipeline, SamplingSetup] = weakref.WeakKeyDictionary()


def setup_for(pipeline: StableDiffusionPipeline, config: Any, device: torch.device) -> SamplingSetup:
    key = (bool(config.compile), bool(config.cuda_graphs))
    setups = SETUPS.setdefault(pipeline, {})
    if key not in setups:
        setups[key] = SamplingSetup(pipeline, config, device)
    return setups[key]


class SyncFreePipeline(StableDiffusionPipeline):
    """A `StableDiffusionPipeline` (its class swapped in by `baselines.fast.accelerated`)
    whose call runs the sync-free loop of this module; calls it does not cover (negative
    prompts, given latents, other outputs, ...) run the pipeline's own loop."""

    def __call__(self, prompt: Any = None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, generator: Any = None,
                 output_type: str = "pil", **others: Any) -> Any:
        setup = ACTIVE.get(self)
        covered = (setup is not None and isinstance(prompt, list) and isinstance(generator, list)
                   and len(generator) == len(prompt) and height is not None and height == width
                   and output_type == "pil" and not any(value is not None for value in others.values()))
        if not covered:
            return super().__call__(prompt, height=height, width=width, num_inference_steps=num_inference_steps,
                                    guidance_scale=guidance_scale, generator=generator, output_type=output_type,
                                    **others)
        count = len(prompt)
        padding = setup.padded_size(count) - count
        # Padding images repeat the last one: same prompt, a generator in the same state.
        extra = [torch.Generator(device=generator[-1].device).set_state(generator[-1].get_state())
                 for _ in range(padding)]
        images = self._sample(setup, prompt + [prompt[-1]] * padding, generator + extra, height,
                              num_inference_steps, guidance_scale)
        return StableDiffusionPipelineOutput(images=images[:count], nsfw_content_detected=None)

    def _sample(self, setup: SamplingSetup, prompts: list[str], generators: list[torch.Generator], size: int,
                steps: int, guidance_scale: float) -> list[Image.Image]:
        device = setup.device
        guided_noise, step = setup.step(guidance_scale)
        with torch.no_grad():
            prompt_embeds, negative_embeds = self.encode_prompt(prompts, device, 1, guided_noise.guided)
            embeds = torch.cat([negative_embeds, prompt_embeds]) if guided_noise.guided else prompt_embeds
            scheduler = self.scheduler
            # Timesteps stay on the CPU for the scheduler (Python ints, no syncs); the UNet
            # reads them from one copy on the GPU.
            scheduler.set_timesteps(steps, device="cpu")
            timesteps = scheduler.timesteps
            unet_timesteps = timesteps.to(device)
            latents = self.prepare_latents(len(prompts), self.unet.config.in_channels, size, size, embeds.dtype,
                                           device, generators)
            step_options = self.prepare_extra_step_kwargs(generators, 0.0)
            for index, timestep in enumerate(timesteps.tolist()):
                model_input = scheduler.scale_model_input(latents, timestep)
                noise = step(model_input, unet_timesteps[index], embeds)
                latents = scheduler.step(noise, timestep, latents, **step_options, return_dict=False)[0]
            return to_pil_images(setup.decode(latents))


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """diffusers' `postprocess(output_type="pil")` with its arithmetic kept on the device:
    the same operations in the same dtypes, so the same pixels (tested), but only the
    uint8 pixels cross to the host instead of float32 arrays four times their size."""
    unit = (images * 0.5 + 0.5).clamp(0, 1)  # VaeImageProcessor.denormalize, in the VAE's dtype
    pixels = (unit.float() * 255).round().to(torch.uint8)  # numpy_to_pil, in float32
    return [Image.fromarray(array) for array in pixels.permute(0, 2, 3, 1).cpu().numpy()]


def fuse_projections(unet: Any) -> bool:
    """diffusers' fused q/k/v projections (one matmul instead of three per attention layer),
    where the UNet has them and runs diffusers' plain processors (Custom Diffusion's own
    processors hold their trained K/V and must stay). Returns whether it fused."""
    processors = getattr(unet, "attn_processors", {})
    if hasattr(unet, "fuse_qkv_projections") and processors and all(
            type(p).__name__ in PLAIN_PROCESSORS for p in processors.values()):
        unet.fuse_qkv_projections()
        return True
    return False

