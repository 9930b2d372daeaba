"""DreamBooth's recipe, as diffusers' `examples/dreambooth/train_dreambooth.py` runs it:
the whole UNet fine-tuned with prior preservation, then sampled and saved.

A training step takes `batch_size` subject images captioned "a photo of sks {class}" and,
with prior preservation, as many class images captioned "a photo of {class}"; every
latent gets noise at a random timestep, and the loss is the MSE of the UNet's noise
prediction on the subject half plus `prior_loss_weight` x the MSE on the class half.
The text encoder and the VAE stay frozen. See `baselines.dreambooth` for the method.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import UNet2DConditionModel
from PIL import Image
from safetensors import SafetensorError

from baselines.class_images import class_prompt
from baselines.data import LatentPool, ShuffledOrder, encode_prompts, pixel_batch
from baselines.sampling import DiffusionModel
from baselines.training import (
    cast,
    compute_dtype,
    count_parameters,
    draw_noise,
    in_dtype,
    make_optimizer,
    prediction_error,
    training_loop,
    with_prior,
)
from varbench.data.subject import Subject, load_rgb
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.diffusion import DiffusionComponents


class Batch(NamedTuple):
    """One step's inputs: subject latents first, then class latents (with the prior)."""

    latents: torch.Tensor
    text_states: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor


def train(base: DiffusionComponents, subject: Subject, class_paths: list[Path], config: Any, ctx: CellContext,
          phrase: str) -> Any:
    """Fine-tune `base.unet` on the subject (and the class images at `class_paths`) for
    `config.steps` steps; returns it (fp32 weights, in eval mode)."""
    dtype = compute_dtype(config, ctx.device)
    cast([base.text_encoder, base.vae], dtype)
    resample = Image.Resampling.BILINEAR
    instance = LatentPool(base.vae, pixel_batch(subject.load_images(), config.resolution, resample, ctx.device))
    classes = None
    if class_paths:  # (the pixels are dropped once encoded: 200 images at 512 px are 0.6 GB)
        classes = LatentPool(base.vae, pixel_batch([load_rgb(p) for p in class_paths], config.resolution,
                                                   resample, ctx.device))
    states = encode_prompts(base, [f"a photo of {phrase}", class_prompt(subject.class_noun)])

    unet = base.unet
    unet.train().requires_grad_(True)
    params = list(unet.parameters())
    optimizer = make_optimizer(params, config.learning_rate, config, ctx.device)
    draw, loss = training_step(base, instance, classes, states, config, ctx)
    training_loop(draw, loss, params, optimizer, config.steps, ctx, dtype, max_grad_norm=config.max_grad_norm)
    return unet.eval().requires_grad_(False)


def training_step(base: DiffusionComponents, instance: LatentPool, classes: LatentPool | None,
                  states: torch.Tensor, config: Any,
                  ctx: CellContext) -> tuple[Callable[[], Batch], Callable[[Batch], dict[str, torch.Tensor]]]:
    """The step's random draws and its loss (`baselines.training.training_loop`)."""
    noise_scheduler = base.noise_scheduler()
    generator = torch.Generator(device=ctx.device).manual_seed(ctx.fit_seed)
    # As the release's dataset: example i pairs subject image i % n with class image i % m.
    order = ShuffledOrder(max(instance.count, classes.count if classes else 0), random.Random(ctx.fit_seed))
    batch_size = config.batch_size

    def draw() -> Batch:
        picks = [order.next() for _ in range(batch_size)]
        latents = [instance.sample([p % instance.count for p in picks], generator)]
        text = [states[0:1].expand(batch_size, -1, -1)]
        if classes is not None:
            latents.append(classes.sample([p % classes.count for p in picks], generator))
            text.append(states[1:2].expand(batch_size, -1, -1))
        latents = torch.cat(latents)
        return Batch(latents, torch.cat(text), *draw_noise(latents, noise_scheduler, generator))

    def loss(batch: Batch) -> dict[str, torch.Tensor]:
        error = prediction_error(base.unet, noise_scheduler, batch.latents, batch.noise, batch.timesteps,
                                 batch.text_states)
        instance_loss = error[:batch_size].mean()
        return with_prior(instance_loss, None if classes is None else error[batch_size:], config.prior_loss_weight)

    return draw, loss


class DreamBoothModel(DiffusionModel):
    """Samples with the trained UNet in the sampling precision (a bf16 copy on CUDA);
    saves the fp32 `trained_unet` in diffusers' folder format."""

    def __init__(self, components: DiffusionComponents, trained_unet: Any, config: Any):
        self.trained_unet = trained_unet
        sampling_unet = in_dtype(trained_unet, compute_dtype(config, trained_unet.device))
        super().__init__(components, sampling_unet, config, count_parameters(list(trained_unet.parameters())))

    def save(self, artifact_dir: Path) -> None:
        self.trained_unet.save_pretrained(str(artifact_dir), safe_serialization=True)


def load_artifact(base: DiffusionComponents, artifact_dir: Path, config: Any, ctx: CellContext) -> DreamBoothModel:
    unet = load_unet(Path(artifact_dir)).to(ctx.device).eval().requires_grad_(False)
    base.unet = unet
    cast([base.text_encoder, base.vae], compute_dtype(config, ctx.device))
    return DreamBoothModel(base, unet, config)


def load_unet(folder: Path) -> UNet2DConditionModel:
    if not (folder / "config.json").is_file():
        raise UserError("DreamBooth artifact has no UNet config.json", str(folder),
                        "Delete the artifact folder so the cell is fitted again.")
    try:
        return UNet2DConditionModel.from_pretrained(str(folder), use_safetensors=True)
    except (OSError, ValueError, SafetensorError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot load the DreamBooth UNet: {first_line}", str(folder),
                        "Delete the artifact folder so the cell is fitted again.") from None
