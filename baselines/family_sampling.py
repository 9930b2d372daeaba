"""Sampling images from a family pipeline (SD 1.5, SDXL, SD3, FLUX.1-dev) as diffusers
documents it: the pipeline called on a batch of prompts with one generator per image, so
image i depends only on (prompts[i], seeds[i]) and never on the batch it was generated in.
The sampler is the pipeline's scheduler, set from the config when the base is loaded
(`baselines.families.FamilyMethod.load_base`). The config's speed options (DreamBooth-LoRA's
`cuda_graphs`, `compile_generation`) replay or compile the denoiser's steps (baselines/fast/); the
images are the plain pipeline's.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from baselines.fast import accelerated
from varbench.method import PersonalizedModel


def generate_images(pipeline: Any, prompts: Sequence[str], seeds: Sequence[int], config: Any,
                    **options: Any) -> list[Image.Image]:
    """One image per (prompt, seed), at the config's resolution, steps and guidance;
    `options` go to the pipeline call as they are (e.g. IP-Adapter embeddings)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if not prompts:
        return []
    generators = [torch.Generator(device=pipeline.device).manual_seed(int(seed)) for seed in seeds]
    with accelerated(pipeline, config, pipeline.device, training=False):
        result = pipeline(list(prompts), height=config.resolution, width=config.resolution,
                          num_inference_steps=config.sample_steps, guidance_scale=config.guidance_scale,
                          generator=generators, output_type="pil", **options)
    return list(result.images)


class FamilyImages(PersonalizedModel):
    """A personalized family pipeline; each method adds what its pipeline call needs
    (`call_options`), how it counts what it trained and how it saves it."""

    def __init__(self, pipeline: Any, config: Any):
        self.pipeline = pipeline
        self.config = config

    def call_options(self, count: int) -> dict[str, Any]:
        """Extra pipeline arguments for a call with `count` prompts."""
        return {}

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        return generate_images(self.pipeline, prompts, seeds, self.config, **self.call_options(len(prompts)))
