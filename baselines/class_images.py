"""Prior-preservation class images: generated once, shared by every subject and run.

DreamBooth (and here Custom Diffusion) regularise with images of the plain class prompt
"a photo of {class}" drawn from the *pretrained* model. They depend only on the base
model, the prompt, how many, the seed and the sampler settings, never on the subject, so
they live in the shared cache (`varbench.cache.get_or_build`), keyed by exactly those
things: the first cell of a class builds them (under a lock), every later cell and run
reuses them.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from baselines.sampling import generate_images, sampling_pipeline
from baselines.training import cast, compute_dtype, in_dtype
from varbench.cache import get_or_build
from varbench.fileio import write_png
from varbench.method import CellContext
from varbench.models.diffusion import DiffusionComponents
from varbench.seeding import derive_seed

FORMAT_VERSION = 1  # bump if the files or their generation change


def class_prompt(class_noun: str) -> str:
    return f"a photo of {class_noun}"


def class_image_key(components: DiffusionComponents, config: Any, prompt: str, dtype: torch.dtype) -> dict[str, Any]:
    """Everything that decides the class images (and nothing that does not, such as the
    subject or the generation batch size)."""
    return {
        "format": FORMAT_VERSION,
        "base_model": components.source,
        "prompt": prompt,
        "count": config.num_class_images,
        "seed": config.class_image_seed,
        "resolution": config.resolution,
        "sampler": config.sampler,
        "sample_steps": config.sample_steps,
        "guidance_scale": config.guidance_scale,
        "precision": str(dtype).replace("torch.", ""),
    }


def class_image_paths(components: DiffusionComponents, config: Any, class_noun: str, ctx: CellContext) -> list[Path]:
    """Paths of the `config.num_class_images` class images, generating them if needed.

    Must run before fitting changes `components` (they come from the pretrained model).
    """
    prompt = class_prompt(class_noun)
    dtype = compute_dtype(config, ctx.device)
    key = class_image_key(components, config, prompt, dtype)

    def build(folder: Path) -> None:
        unet = in_dtype(components.unet, dtype)
        parts = [components.text_encoder, components.vae]
        original = [next(p.parameters()).dtype for p in parts]
        cast(parts, dtype)
        try:
            pipeline = sampling_pipeline(components, unet, config)
            settings = replace(config, compile=False)  # (speed only: 200 images do not repay compiling)
            for start in range(0, config.num_class_images, config.class_batch_size):
                indices = range(start, min(start + config.class_batch_size, config.num_class_images))
                seeds = [derive_seed("class_image", config.class_image_seed, prompt, i) for i in indices]
                images = generate_images(pipeline, [prompt] * len(seeds), seeds, settings)
                for index, image in zip(indices, images):
                    write_png(folder / f"{index:04d}.png", image)
        finally:
            for part, part_dtype in zip(parts, original):
                cast([part], part_dtype)

    return cached_class_images(ctx, key, build, config.num_class_images)


def cached_class_images(ctx: CellContext, key: dict[str, Any], build: Any, count: int) -> list[Path]:
    """The class images cached under `key` (built once by `build(folder)`), checked complete."""
    folder = get_or_build(ctx.cache_dir, "class_images", key, build)
    paths = sorted(folder.glob("*.png"))
    if len(paths) != count:
        raise RuntimeError(f"class image cache {folder} holds {len(paths)} images, expected "
                           f"{count}; delete the folder to rebuild it")
    return paths
