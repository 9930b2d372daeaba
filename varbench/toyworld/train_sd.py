"""Pretraining the toyworld's Stable Diffusion (diffusion.py) on freshly rendered scenes,
as SD 1.x was trained, in two stages:

1. the VAE: reconstruction (mean squared error on pixels in [-1, 1]) plus SD's small KL
   term (weight 1e-6), so latents stay close to a unit Gaussian without blurring;
2. the UNet and the CLIP text encoder together: epsilon prediction on VAE latents scaled
   to unit variance (the scale is measured after stage 1 and written into the VAE's
   config as `scaling_factor`, which the pipelines read), DDPM's scaled-linear schedule of
   SD 1.5, captions from `world.caption` padded to the tokenizer's 77 tokens as the
   pipelines pad prompts, 10% of captions dropped to "" so classifier-free guidance works.

SD 1.5 froze a pretrained CLIP text encoder; no toyworld text encoder with the same
tokenizer exists, so this one learns with the UNet (the methods still freeze it).

Both stages draw batches from one pool of `POOL_SCENES` pretraining scenes rendered once
(in worker processes), and stage 2 encodes the pool once: rendering costs about a
millisecond a scene on the CPU, more than a toy UNet step on a GPU. Everything random
comes from the seed.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from varbench.models.diffusion import DiffusionComponents
from varbench.toyworld.train_encoders import Schedule, _step
from varbench.toyworld.world import Scene, caption, pretraining_scenes, render_batch

KL_WEIGHT = 1e-6  # SD's autoencoder KL weight
CAPTION_DROP = 0.1  # share of empty captions (classifier-free guidance)
SCALE_SCENES = 512  # scenes the latent scale is measured on
POOL_SCENES = 32768
RENDER_CHUNK = 512


@dataclass
class Pool:
    """Pretraining scenes, their pictures (N, 64, 64, 3 uint8) and captions."""

    scenes: list[Scene]
    images: np.ndarray
    captions: list[str]


def render_pool(count: int, seed: int, workers: int = 1) -> Pool:
    """`count` pretraining scenes of `seed`, rendered in `workers` processes."""
    scenes = pretraining_scenes(count, seed=seed * 1_000_003 + 777_777)
    chunks = [scenes[i:i + RENDER_CHUNK] for i in range(0, count, RENDER_CHUNK)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            images = np.concatenate(list(pool.map(render_batch, chunks)))
    else:
        images = np.concatenate([render_batch(chunk) for chunk in chunks])
    return Pool(scenes, images, [caption(scene) for scene in scenes])


def sd_pixels(images: np.ndarray) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> (N, 3, 64, 64) in [-1, 1], as the SD pipelines feed the VAE."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(components: DiffusionComponents, pool: Pool, schedule: Schedule, seed: int, device: torch.device,
              advance: Callable[[int, float], None]) -> list[float]:
    """Stage 1 (module docstring), in place; returns the step losses."""
    vae = components.vae.to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=schedule.learning_rate, weight_decay=0.0)
    generator = torch.Generator(device).manual_seed(seed)
    rng = np.random.default_rng([0x5A, seed])
    losses = []
    for step in range(schedule.steps):
        pixels = sd_pixels(pool.images[rng.integers(len(pool.images), size=schedule.batch)]).to(device)
        posterior = vae.encode(pixels).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, device=device)
        latents = posterior.mean + posterior.std * noise
        loss = F.mse_loss(vae.decode(latents).sample, pixels) + KL_WEIGHT * posterior.kl().mean()
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
    vae.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def encode_pool(components: DiffusionComponents, pool: Pool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior (mean, std) of every pool picture, on `device`."""
    means, stds = [], []
    for first in range(0, len(pool.images), RENDER_CHUNK):
        posterior = components.vae.encode(sd_pixels(pool.images[first:first + RENDER_CHUNK]).to(device)).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def token_ids(components: DiffusionComponents, texts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, as the pipelines tokenize prompts."""
    return components.tokenizer(texts, padding="max_length", max_length=components.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids


def set_latent_scale(components: DiffusionComponents, means: torch.Tensor) -> float:
    """Write 1 / the standard deviation of the latents into the VAE's config (SD 1.5's
    0.18215 was found the same way) and return it."""
    scale = float(1 / means[:SCALE_SCENES].std())
    components.vae.register_to_config(scaling_factor=scale)
    return scale


def train_denoiser(components: DiffusionComponents, pool: Pool, schedule: Schedule, seed: int, device: torch.device,
                   advance: Callable[[int, float], None]) -> list[float]:
    """Stage 2 (module docstring), in place; returns the step losses."""
    unet, text_encoder = components.unet.to(device), components.text_encoder.to(device)
    components.vae.to(device)
    means, stds = encode_pool(components, pool, device)
    scale = set_latent_scale(components, means)
    unet.train().requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    scheduler = components.noise_scheduler()
    alphas = scheduler.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW([*unet.parameters(), *text_encoder.parameters()], lr=schedule.learning_rate,
                                  weight_decay=0.01)
    rng = np.random.default_rng([0x5D, seed])
    generator = torch.Generator(device).manual_seed(seed)
    captions, empty = token_ids(components, pool.captions).to(device), token_ids(components, [""]).to(device)
    losses = []
    for step in range(schedule.steps):
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
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return losses
