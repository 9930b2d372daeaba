"""Textual Inversion's recipe, as diffusers' `examples/textual_inversion/textual_inversion.py`
runs it: one new token embedding learnt against the frozen networks.

A micro-batch is `batch_size` subject photos (each flipped with probability
`flip_probability`) captioned with random templates of the release's object list; every
latent gets noise at a random timestep, and the loss is the MSE of the UNet's noise
prediction. An optimizer step sums the gradients of `grad_accumulation` micro-batches.
Only the new word's vector trains (`baselines.tokens`). See `baselines.textual_inversion`
for the method.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image

from baselines.data import LatentPool, ShuffledOrder, pixel_batch, tokenize
from baselines.sampling import DiffusionModel
from baselines.tokens import add_token, apply_embeds, initial_vector, save_embeds, splice_in, splice_out
from baselines.training import (
    cast,
    compute_dtype,
    count_parameters,
    draw_noise,
    make_optimizer,
    prediction_error,
    training_loop,
)
from varbench.data.subject import Subject
from varbench.method import CellContext
from varbench.models.diffusion import DiffusionComponents

# The release's templates for objects (`imagenet_templates_small`).
OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
    "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}",
    "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
)


class MicroBatch(NamedTuple):
    latents: torch.Tensor
    token_ids: torch.Tensor  # the captions
    noise: torch.Tensor
    timesteps: torch.Tensor


def train(base: DiffusionComponents, subject: Subject, config: Any, ctx: CellContext, phrase: str) -> torch.Tensor:
    """Learn the placeholder's embedding for `config.steps` optimizer steps; returns an
    fp32 copy of it (also written into the text encoder's table)."""
    dtype = compute_dtype(config, ctx.device)
    token_id = add_token(base, config.placeholder_token)
    initial = initial_vector(base, subject.class_noun, f"class noun of subject {subject.name}")
    cast([base.text_encoder, base.vae, base.unet], dtype)  # all frozen; the new vector stays fp32
    spliced = splice_in(base, [token_id], initial)
    pixels = pixel_batch(subject.load_images(), config.resolution, Image.Resampling.BICUBIC, ctx.device)
    instance = LatentPool(base.vae, pixels, with_flips=config.flip_probability > 0)
    params = [spliced.vectors]
    optimizer = make_optimizer(params, config.effective_learning_rate(), config, ctx.device)
    draw, loss = training_step(base, instance, config, ctx, phrase)
    training_loop(draw, loss, params, optimizer, config.steps, ctx, dtype,
                  grad_accumulation=config.grad_accumulation, max_grad_norm=config.max_grad_norm)
    return splice_out(base, spliced)


def training_step(base: DiffusionComponents, instance: LatentPool, config: Any, ctx: CellContext,
                  phrase: str) -> tuple[Callable[[], MicroBatch], Callable[[MicroBatch], dict[str, torch.Tensor]]]:
    """A micro-batch's random draws and its loss (`baselines.training.training_loop`)."""
    rng = random.Random(ctx.fit_seed)
    generator = torch.Generator(device=ctx.device).manual_seed(ctx.fit_seed)
    noise_scheduler = base.noise_scheduler()
    order = ShuffledOrder(instance.count, rng)
    template_ids = tokenize(base.tokenizer, [t.format(phrase) for t in OBJECT_TEMPLATES], ctx.device)

    def draw() -> MicroBatch:
        """In the release's order: images, flips, templates, latents, noise, timesteps."""
        picks = [order.next() for _ in range(config.batch_size)]
        flips = [rng.random() < config.flip_probability for _ in picks]
        templates = [rng.randrange(len(OBJECT_TEMPLATES)) for _ in picks]
        latents = instance.sample(picks, generator, flips)
        token_ids = torch.cat([template_ids[t:t + 1] for t in templates])
        return MicroBatch(latents, token_ids, *draw_noise(latents, noise_scheduler, generator))

    def loss(batch: MicroBatch) -> dict[str, torch.Tensor]:
        text_states = base.text_encoder(batch.token_ids)[0]  # the placeholder's gradient flows through here
        error = prediction_error(base.unet, noise_scheduler, batch.latents, batch.noise, batch.timesteps,
                                 text_states)
        return {"loss": error.mean()}

    return draw, loss


class TextualInversionModel(DiffusionModel):
    def __init__(self, components: DiffusionComponents, config: Any, vectors: torch.Tensor):
        self.vectors = vectors  # fp32 copy of the trained embedding (what is saved)
        super().__init__(components, components.unet, config, count_parameters([vectors]))

    def save(self, artifact_dir: Path) -> None:
        save_embeds(artifact_dir, self.config.placeholder_token, self.vectors)


def load_artifact(base: DiffusionComponents, artifact_dir: Path, config: Any,
                  ctx: CellContext) -> TextualInversionModel:
    _token, vectors = apply_embeds(base, Path(artifact_dir))
    cast([base.text_encoder, base.vae, base.unet], compute_dtype(config, ctx.device))
    return TextualInversionModel(base, config, vectors)
