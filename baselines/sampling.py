"""Sampling images from a personalized Stable Diffusion pipeline: diffusers'
`StableDiffusionPipeline` with classifier-free guidance and the config's scheduler (DDIM,
or DPM-Solver++ multistep), one generator per image.

`generate_images` calls the pipeline as diffusers documents it; the speed options
(baselines/fast) wrap that call and may run it as the same arithmetic in a loop that
never waits for the GPU, with CUDA graphs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from baselines.fast import accelerated
from varbench.method import PersonalizedModel
from varbench.models.diffusion import DiffusionComponents


def sampling_pipeline(components: DiffusionComponents, unet: Any, config: Any) -> StableDiffusionPipeline:
    """A diffusers SD pipeline over these components (no safety checker: DreamBench scoring
    must see every image as generated)."""
    pipeline = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=unet, scheduler=components.sampling_scheduler(config.sampler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate_images(pipeline: StableDiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int],
                    config: Any) -> list[Image.Image]:
    """One image per (prompt, seed), each from its own generator, so image i depends only
    on (prompts[i], seeds[i]) and never on the batch it was generated in."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        return []
    device = pipeline.unet.device
    generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
    with accelerated(pipeline, config, device, training=False):
        result = pipeline(list(prompts), height=config.resolution, width=config.resolution,
                          num_inference_steps=config.sample_steps, guidance_scale=config.guidance_scale,
                          generator=generators, output_type="pil")
    return list(result.images)


class DiffusionModel(PersonalizedModel):
    """A personalized SD pipeline; each baseline adds how its trained tensors are saved."""

    def __init__(self, components: DiffusionComponents, unet: Any, config: Any, trainable_parameters: int):
        self.components = components
        self.config = config
        self.pipeline = sampling_pipeline(components, unet, config)
        self._trainable_parameters = trainable_parameters

    @property
    def trainable_parameters(self) -> int:
        return self._trainable_parameters

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        return generate_images(self.pipeline, prompts, seeds, self.config)


class BaseModel(DiffusionModel):
    """The base itself, unchanged (no_fit): nothing to save."""

    def save(self, artifact_dir: Any) -> None:
        return None
