"""Training data of the diffusion baselines: subject and class images as pixels and VAE
latents, the order examples are visited in, and prompts as token ids and text states.

Fixed inputs are encoded once: prompts that contain no trained word go through the text
encoder once, and the VAE latent distributions of fixed images are encoded once and
re-sampled at every step (`LatentPool`).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from varbench.models.diffusion import DiffusionComponents


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float tensor in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def resize_and_crop(image: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize the shorter side to `size`, then take the centre square (DreamBench images
    are square, so the crop only matters for other data)."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), resample=resample)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def pixel_batch(images: Sequence[Image.Image], size: int, resample: int, device: torch.device | str) -> torch.Tensor:
    return torch.stack([image_to_tensor(resize_and_crop(im, size, resample)) for im in images]).to(device)


class LatentPool:
    """VAE latent distributions of a fixed set of images, encoded once.

    The releases call `vae.encode(x).latent_dist.sample()` every step; the encoder output
    does not change for a fixed image, so only the sampling is repeated here.
    With `with_flips`, the mirrored images are encoded too (flip augmentation).
    """

    def __init__(self, vae: Any, pixels: torch.Tensor, with_flips: bool = False, chunk: int = 8):
        self.scaling_factor = float(vae.config.scaling_factor)
        self.count = pixels.shape[0]
        variants = [pixels, torch.flip(pixels, dims=[-1])] if with_flips else [pixels]
        means, stds = [], []
        with torch.no_grad():
            for variant in variants:
                for part in variant.split(chunk):
                    dist = vae.encode(part.to(vae.device, vae.dtype)).latent_dist
                    means.append(dist.mean.float())
                    stds.append(dist.std.float())
        self.mean = torch.cat(means)
        self.std = torch.cat(stds)

    def sample(self, indices: Sequence[int], generator: torch.Generator, flipped: Sequence[bool] = ()) -> torch.Tensor:
        """Scaled latents for images `indices` (optionally mirrored), one fresh draw each."""
        flipped = list(flipped) or [False] * len(indices)
        # Slices, not a list index: indexing a CUDA tensor with a Python list copies the
        # list to the device, which waits for the queued work.
        rows = [i + (self.count if flip else 0) for i, flip in zip(indices, flipped)]
        mean = torch.cat([self.mean[r:r + 1] for r in rows])
        std = torch.cat([self.std[r:r + 1] for r in rows])
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * noise) * self.scaling_factor


class ShuffledOrder:
    """Endless indices 0..n-1, reshuffled at every pass: how a shuffled DataLoader visits
    a dataset, one example at a time."""

    def __init__(self, size: int, rng: random.Random):
        self.size = size
        self.rng = rng
        self.pending: list[int] = []

    def next(self) -> int:
        if not self.pending:
            self.pending = list(range(self.size))
            self.rng.shuffle(self.pending)
        return self.pending.pop()


def tokenize(tokenizer: Any, prompts: Sequence[str], device: torch.device | str) -> torch.Tensor:
    """Token ids padded to the model length (77), as the SD pipeline and the releases do."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


def encode_prompts(components: DiffusionComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder states of fixed prompts (computed once, no gradient)."""
    with torch.no_grad():
        ids = tokenize(components.tokenizer, prompts, components.text_encoder.device)
        return components.text_encoder(ids)[0]
