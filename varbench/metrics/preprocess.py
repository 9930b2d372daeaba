"""Pixel pipelines of the metric modes, written out step by step.

Each mode's pipeline (see `varbench.metrics.modes`) is split in two halves so that
scoring runs fast:

* `cpu_views` runs in decoding threads: geometric steps on the PIL image (resize, crop),
  ending in small uint8 arrays ("views"): "dino224", "clip224" or "square256".
  When scoring on a GPU, `device_views` does the same steps there on whole batches, equal
  bit for bit (`varbench.metrics.resample` reproduces PIL's fixed-point resize).
* `dino_input`, `clip_input`, `lpips_input` run on the device on whole batches of views:
  the arithmetic steps (scale to float, normalise, the dreammatcher tensor resize).

The geometric steps reproduce the libraries the published evaluators used, without
calling them: torchvision's Resize/CenterCrop on PIL images (canonical; the crop offset
is rounded), Hugging Face's CLIPImageProcessor (the crop offset is floored; pixels are
multiplied by 1/255 in float64), and DreamMatcher's PIL resize to 256x256 followed by
x / 127.5 - 1 in float64. Tests check every pipeline tensor-for-tensor against
hand-written references.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from varbench.metrics.resample import resize_bicubic

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Pixels = Literal["canonical", "dreammatcher", "hf_clip"]


# --- geometric steps: PIL in decoding threads, or tensors on the device --------------------
def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side `size`; the long side is truncated, not rounded
    (torchvision's Resize(int) and Hugging Face's shortest_edge rule agree on this)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def crop_offsets(width: int, height: int, size: int, offsets: Literal["round", "floor"]) -> tuple[int, int]:
    """(left, top) of a centred square crop. torchvision rounds the offset (Python's round,
    so 1.5 -> 2 and 2.5 -> 2); Hugging Face floors it. Images are never smaller than `size`
    here because a short-side resize to `size` always comes first."""
    if offsets == "round":
        return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return (width - size) // 2, (height - size) // 2


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the short side is `size` (see `short_side_size`)."""
    new_size = short_side_size(*image.size, size)
    return image if new_size == image.size else image.resize(new_size, Image.BICUBIC)


def center_crop(image: Image.Image, size: int, offsets: Literal["round", "floor"]) -> Image.Image:
    left, top = crop_offsets(*image.size, size, offsets)
    return image.crop((left, top, left + size, top + size))


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize to size x size, ignoring the aspect ratio (DreamMatcher, LPIPS)."""
    return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)


def cpu_views(image: Image.Image, pixels: Pixels, with_square: bool = False) -> dict[str, np.ndarray]:
    """The uint8 HxWx3 arrays a mode needs from one decoded image.

    "dino224": Resize(256) -> CenterCrop(224), rounded offsets (canonical DINO pixels).
    "clip224": Resize(224) -> CenterCrop(224), offsets rounded (canonical) or floored
               (hf_clip).
    "square256": 256x256 without crop: every dreammatcher input and every LPIPS input.
    """
    views: dict[str, np.ndarray] = {}
    if pixels in ("canonical", "hf_clip"):
        views["dino224"] = np.asarray(center_crop(resize_short_side(image, 256), 224, "round"))
        offsets = "round" if pixels == "canonical" else "floor"
        views["clip224"] = np.asarray(center_crop(resize_short_side(image, 224), 224, offsets))
    if pixels == "dreammatcher" or with_square:
        views["square256"] = np.asarray(resize_square(image, 256))
    return views


def _resized_crop(images: torch.Tensor, short: int, crop: int, offsets: Literal["round", "floor"]) -> torch.Tensor:
    """Tensor version of center_crop(resize_short_side(.)) on uint8 (N, H, W, 3)."""
    _, height, width, _ = images.shape
    new_width, new_height = short_side_size(width, height, short)
    resized = resize_bicubic(images, new_height, new_width)
    left, top = crop_offsets(new_width, new_height, crop, offsets)
    return resized[:, top:top + crop, left:left + crop].contiguous()


def device_views(images: torch.Tensor, pixels: Pixels, with_square: bool = False) -> dict[str, torch.Tensor]:
    """`cpu_views` of a batch of same-size uint8 (N, H, W, 3) images, computed where the
    images are (the GPU when scoring on one) and equal to it bit for bit."""
    views: dict[str, torch.Tensor] = {}
    if pixels in ("canonical", "hf_clip"):
        views["dino224"] = _resized_crop(images, 256, 224, "round")
        views["clip224"] = _resized_crop(images, 224, 224, "round" if pixels == "canonical" else "floor")
    if pixels == "dreammatcher" or with_square:
        views["square256"] = resize_bicubic(images, 256, 256)
    return views


# --- arithmetic steps (on the device, whole batches) -----------------------------------
def _channels_first(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> contiguous (N, 3, H, W), still uint8: the layout ToTensor
    gives, so the encoders run the same kernels as the published evaluators."""
    return batch.permute(0, 3, 1, 2).contiguous()


def _normalize(batch: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    # float32 mean/std and subtract-then-divide: the order torchvision and HF both use
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def to_unit_torchvision(batch: torch.Tensor) -> torch.Tensor:
    """ToTensor: float32(x) / 255 in float32."""
    return _channels_first(batch).to(torch.float32) / 255


def to_unit_hf(batch: torch.Tensor) -> torch.Tensor:
    """Hugging Face rescale: x * (1/255) in float64, then float32."""
    return (_channels_first(batch).to(torch.float64) * (1 / 255)).to(torch.float32)


def to_signed_dreammatcher(batch: torch.Tensor) -> torch.Tensor:
    """DreamMatcher: x / 127.5 - 1 in float64 (numpy), then float32."""
    return (_channels_first(batch).to(torch.float64) / 127.5 - 1.0).to(torch.float32)


def dino_input(views: dict[str, torch.Tensor], pixels: Pixels) -> torch.Tensor:
    """The DINO encoder's input batch for a mode."""
    if pixels == "dreammatcher":
        return to_signed_dreammatcher(views["square256"])  # no ImageNet normalisation
    return _normalize(to_unit_torchvision(views["dino224"]), IMAGENET_MEAN, IMAGENET_STD)


def clip_input(views: dict[str, torch.Tensor], pixels: Pixels, antialias: bool = True) -> torch.Tensor:
    """The CLIP image encoder's input batch for a mode; `antialias`: dreammatcher's tensor
    resize as torchvision >= 0.17 computes it (the default there), or off as in 0.14."""
    if pixels == "canonical":
        return _normalize(to_unit_torchvision(views["clip224"]), CLIP_MEAN, CLIP_STD)
    if pixels == "hf_clip":
        return _normalize(to_unit_hf(views["clip224"]), CLIP_MEAN, CLIP_STD)
    # dreammatcher: Normalize(mean=-1, std=2) back to [0, 1], then torchvision's tensor
    # Resize(224, bicubic) (antialiased from torchvision 0.17 on; DreamMatcher pinned 0.14,
    # without), CenterCrop(224) (a no-op on a square 224 image), CLIP normalisation.
    unit = (to_signed_dreammatcher(views["square256"]) + 1.0) / 2.0
    resized = F.interpolate(unit, size=(224, 224), mode="bicubic", align_corners=False, antialias=antialias)
    return _normalize(resized, CLIP_MEAN, CLIP_STD)


def lpips_input(square256: torch.Tensor) -> torch.Tensor:
    """LPIPS input: the 256x256 view scaled to [-1, 1] (the ARBooth evaluator's tensors)."""
    return to_signed_dreammatcher(square256)


def encoder_input(views: dict[str, torch.Tensor], reads: str, pixels: Pixels,
                  clip_antialias: bool = True) -> torch.Tensor:
    """What an encoder reading `reads` gets (varbench.metrics.plugin.PIXELS): the mode's DINO
    or CLIP input batch, or the uint8 256x256 views ("square", for LPIPS)."""
    if reads == "dino":
        return dino_input(views, pixels)
    if reads == "clip":
        return clip_input(views, pixels, clip_antialias)
    return views["square256"]
