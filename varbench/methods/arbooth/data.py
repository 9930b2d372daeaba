"""Training data of one fit, prepared once: subject latents and the two fixed prompts.

Images: Resize (shorter side to the resolution, bilinear) + CenterCrop, pixels in [-1, 1]
(the release's transform with center_crop; no flips). The BSQ encoder runs once per
fit: the continuous latents of a fixed image never change, so each iteration only
repeats the multi-scale quantization with fresh self-correction flips.

Prompts: "a photo of <placeholder> {class}" (training) and "a photo of {class}" (prior).
T5 runs once per fit; the identifier vectors are inserted after T5 (they replace T5's
output at the placeholder), so each iteration only redoes that cheap replacement and T5
needs no gradient.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from varbench.models.infinity.bsq import BSQTokenizer
from varbench.models.infinity.text import TextEncoder, TextFeatures, replace_placeholder

ENCODE_CHUNK = 4  # images per encoder call (the 1024 px encoder is memory-hungry)


def training_prompt(phrase: str) -> str:
    """`phrase` is the method's subject phrase, "<placeholder> {class}"."""
    return f"a photo of {phrase}"


def prior_prompt(class_noun: str) -> str:
    return f"a photo of {class_noun}"


def resize_and_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (bilinear, antialiased like torchvision's Resize), then the
    centre square."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = image.convert("RGB").resize(new_size, resample=Image.Resampling.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) fp32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def pixel_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    return torch.stack([image_to_tensor(resize_and_center_crop(image, size)) for image in images])


@torch.no_grad()
def encode_latents(vae: BSQTokenizer, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, d, h, w) fp32 continuous latents of (N, 3, H, W) pixels, in chunks."""
    parts = [vae.encode(chunk.to(device)) for chunk in pixels.split(ENCODE_CHUNK)]
    return torch.cat(parts)


class ShuffledOrder:
    """Endless image indices 0..n-1, reshuffled at every pass (a shuffled data loader
    that never drops the last partial batch: batches may straddle two passes)."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.rng = random.Random(seed)
        self.pending: list[int] = []

    def take(self, count: int) -> list[int]:
        picks = []
        for _ in range(count):
            if not self.pending:
                self.pending = list(range(self.size))
                self.rng.shuffle(self.pending)
            picks.append(self.pending.pop())
        return picks


def pick_rows(tensor: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """tensor[indices] built from slices: indexing a CUDA tensor with a Python list first
    copies the list to the device, which waits for all queued work."""
    return torch.cat([tensor[i:i + 1] for i in indices])


@dataclass
class PromptFeatures:
    """T5 output of one prompt, kept with its token ids so the identifier can be inserted."""

    features: torch.Tensor  # (1, Lt, C) fp32 on the training device
    ids: torch.Tensor  # (1, Lt) on the CPU
    length: int
    placeholder_id: int | None

    @staticmethod
    def encode(encoder: TextEncoder, prompt: str, placeholder: str | None, device: torch.device) -> PromptFeatures:
        token_id = encoder.placeholder_id(placeholder) if placeholder is not None else None
        ids, lengths = encoder.tokenize([prompt])
        text = encoder.encode([prompt], placeholder)
        return PromptFeatures(text.features.to(device), ids, lengths[0], token_id)

    def rows(self, count: int, identifier: torch.Tensor | None = None) -> TextFeatures:
        """`count` copies of the prompt, with the identifier vectors at the placeholder."""
        text = TextFeatures(self.features, (self.length,))
        if identifier is not None and self.placeholder_id is not None:
            text = replace_placeholder(self.features, self.ids, [self.length], self.placeholder_id, identifier)
        return TextFeatures(text.features.expand(count, -1, -1), text.lengths * count)
