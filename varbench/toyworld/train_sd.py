"""Pretraining the toyworld's Stable Diffusion (diffusion.py) on freshly rendered scenes,
as SD 1.x was trained, in two stages:

1. the VAE: reconstruction (mean squared error on pixels in [-1, 1]) plus SD's small KL
   term (weight 1e-6), so latents stay close to a unit Gaussian without blurring;
2. the UNet and the CLIP text encoder together: epsilon prediction on VAE latents scaled
   to unit variance (the scale is measured after stage 1 and written into the VAE's
   config as `scaling_factor`, which the pipelines read), DDPM's scaled-linear schedule of
   SD 1.5, captions from `world.caption` (half of them also naming the instance's colours:
   sd_captions.py says why) padded to the tokenizer's length (24 tokens) as the pipelines
   pad prompts, 10% dropped to "" so classifier-free guidance works.

SD 1.5 froze a pretrained CLIP text encoder; no toyworld text encoder with the same
tokenizer exists, so this one learns with the UNet (the methods still freeze it).

Both stages draw batches from one pool of pretraining scenes rendered once (pool.py),
and stage 2 encodes the pool once. Everything random comes from the seed and the step
number, so a run resumed from its checkpoint (checkpoints.py: saved
every two minutes) trains what an uninterrupted run would.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from varbench.models.diffusion import DiffusionComponents
from varbench.toyworld.checkpoints import Checkpoints
from varbench.toyworld.pool import RENDER_CHUNK, Pool, step_random
from varbench.toyworld.sd_captions import described_captions
from varbench.toyworld.train_encoders import Schedule, _step
from varbench.toyworld.world import Scene

KL_WEIGHT = 1e-6  # SD's autoencoder KL weight
CAPTION_DROP = 0.1  # share of empty captions (classifier-free guidance)
SCALE_SCENES = 512  # scenes the latent scale is measured on
STAGES = ("sd_vae", "sd_unet")


@dataclass(frozen=True)
class Recipe:
    """How much SD pretraining: the pool's size and each stage's schedule."""

    pool: int
    vae: Schedule
    unet: Schedule


# "gpu": the recipe for a GPU (under ten minutes on an H100, where a toy step costs about
# as much at batch 256 as at 128: it is bound by launching kernels, not by arithmetic);
# "cpu": what the 2-core CPU finishes in about an hour (smaller pool and batches, fewer
# steps; its model draws the contexts but blurs the subjects: benchmarks/NOTES-toyworld.md).
RECIPES = {
    "gpu": Recipe(32768, Schedule(steps=1000, batch=128, learning_rate=1e-3),
                  Schedule(steps=4000, batch=256, learning_rate=1e-3, warmup=300)),
    "cpu": Recipe(8192, Schedule(steps=600, batch=32, learning_rate=1e-3),
                  Schedule(steps=3000, batch=32, learning_rate=1e-3, warmup=200)),
}


def sd_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> (N, 3, 64, 64) in [-1, 1], as the SD pipelines feed the VAE."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


def checkpoints(path: Path, identity: dict[str, Any]) -> Checkpoints:
    """The resumable training state of the SD parts at `path` (checkpoints.py)."""
    return Checkpoints(path, identity, STAGES, _module_states, _load_modules)


def _module_states(components: DiffusionComponents) -> dict[str, Any]:
    return {"vae": components.vae.state_dict(), "unet": components.unet.state_dict(),
            "text_encoder": components.text_encoder.state_dict(),
            "scaling_factor": components.vae.config.scaling_factor}


def _load_modules(components: DiffusionComponents, state: dict[str, Any]) -> None:
    for name in ("vae", "unet", "text_encoder"):
        getattr(components, name).load_state_dict(state[name])
    components.vae.register_to_config(scaling_factor=state["scaling_factor"])


def train_vae(components: DiffusionComponents, pool: Pool, schedule: Schedule, seed: int, device: torch.device,
              advance: Callable[[int, float], None], checkpoints: Checkpoints) -> list[float]:
    """Stage 1 (module docstring), in place; returns the step losses."""
    vae = components.vae.to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=schedule.learning_rate, weight_decay=0.0)
    first, losses = checkpoints.resume("sd_vae", schedule.steps, components, optimizer)
    images = torch.from_numpy(pool.images).to(device)  # once: indexing on the host bound GPU steps
    for step in range(first, schedule.steps):
        rng, generator = step_random(seed, 1, step, device)
        pixels = sd_pixels(images[torch.from_numpy(rng.integers(len(images), size=schedule.batch)).to(device)])
        posterior = vae.encode(pixels).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, device=device)
        latents = posterior.mean + posterior.std * noise
        loss = F.mse_loss(vae.decode(latents).sample, pixels) + KL_WEIGHT * posterior.kl().mean()
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
        checkpoints.maybe_save("sd_vae", step + 1, components, optimizer, losses)
    vae.eval().requires_grad_(False)
    if first < schedule.steps:
        checkpoints.maybe_save("sd_vae", schedule.steps, components, optimizer, losses, finished=True)
    return losses


@torch.no_grad()
def encode_pool(components: DiffusionComponents, pool: Pool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std) of every pool picture, on `device`."""
    means, stds = [], []
    for first in range(0, len(pool.images), RENDER_CHUNK):
        chunk = torch.from_numpy(pool.images[first:first + RENDER_CHUNK]).to(device)
        posterior = components.vae.encode(sd_pixels(chunk)).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def token_ids(components: DiffusionComponents, texts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, as the pipelines tokenize prompts."""
    return components.tokenizer(texts, padding="max_length", max_length=components.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids


def stage2_captions(components: DiffusionComponents, scenes: list[Scene], seed: int) -> list[str]:
    """The scenes' stage-2 captions (sd_captions.described_captions), each within the tokenizer's length."""
    tokenizer = components.tokenizer
    return described_captions(scenes, seed,
                              lambda text: len(tokenizer(text, verbose=False).input_ids) <= tokenizer.model_max_length)


def set_latent_scale(components: DiffusionComponents, means: torch.Tensor) -> float:
    """Write 1 / the standard deviation of the latents into the VAE's config (SD 1.5's
    0.18215 was found the same way) and return it."""
    scale = float(1 / means[:SCALE_SCENES].std())
    components.vae.register_to_config(scaling_factor=scale)
    return scale


def train_denoiser(components: DiffusionComponents, pool: Pool, schedule: Schedule, seed: int, device: torch.device,
                   advance: Callable[[int, float], None], checkpoints: Checkpoints) -> list[float]:
    """Stage 2 (module docstring), in place; returns the step losses."""
    unet, text_encoder = components.unet.to(device), components.text_encoder.to(device)
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=schedule.learning_rate, weight_decay=0.01)
    first, losses = checkpoints.resume("sd_unet", schedule.steps, components, optimizer)
    components.vae.to(device)
    means, stds = encode_pool(components, pool, device)
    scale = set_latent_scale(components, means)
    unet.train().requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    alphas = components.noise_scheduler().alphas_cumprod.to(device)
    captions = token_ids(components, stage2_captions(components, pool.scenes, seed)).to(device)
    empty = token_ids(components, [""]).to(device)
    for step in range(first, schedule.steps):
        rng, generator = step_random(seed, 2, step, device)
        rows = rng.integers(len(pool.images), size=schedule.batch)
        index = torch.from_numpy(rows).to(device)
        dropped = torch.from_numpy(rng.random(len(rows)) < CAPTION_DROP).to(device)[:, None]
        ids = torch.where(dropped, empty, captions[index])
        latents = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator,
                                                            device=device)) * scale
        noise = torch.randn(latents.shape, generator=generator, device=device)
        t = torch.randint(0, len(alphas), (len(rows),), generator=generator, device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        prediction = unet(noisy, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = F.mse_loss(prediction, noise)
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
        checkpoints.maybe_save("sd_unet", step + 1, components, optimizer, losses)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    if first < schedule.steps:
        checkpoints.maybe_save("sd_unet", schedule.steps, components, optimizer, losses, finished=True)
    return losses
