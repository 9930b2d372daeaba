"""The toyworld's Stable Diffusion: SD 1.x's classes (CLIP text encoder, AutoencoderKL,
UNet2DConditionModel with cross-attention) at toy size, pretrained on the toyworld and
loaded by the diffusion baselines as a local model folder (`base_model:` that folder),
through the same `varbench.models.diffusion.load_folder` as a real SD 1.5 folder.

    part          toy size                                        real SD 1.5
    tokenizer     byte-level BPE CLIP tokenizer, the world's words  49,408 tokens
    text encoder  CLIP text transformer, width 64, 4 layers        width 768, 12 layers
    VAE           KL autoencoder, stride 4 (64 px -> 16x16x4)       stride 8 (512 px -> 64x64x4)
    UNet          3 levels (48, 96, 96), cross-attention            4 levels (320 ... 1280)

The VAE's stride is 4 rather than SD's 8 so that a 64 px subject's colours, patterns and
parts survive in its latents (stride 8 would leave 8x8 latents); the pipeline reads the
stride from the VAE's config, as diffusers does.
"""
from __future__ import annotations

import re
from typing import Any

from varbench.models.diffusion import DiffusionComponents, _random_components, build_tiny_tokenizer
from varbench.toyworld.world import CLASSES, CONTEXT_NAMES, MODIFIERS

SOURCE = "toyworld-sd"
IDENTIFIERS = ("sks", "photo", "rendering", "close", "up", "bright", "dark", "good", "cropped")  # method prompts

UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(48, 96, 96), norm_num_groups=16, cross_attention_dim=64, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
    block_out_channels=(32, 64, 64), sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
)
TEXT = dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=4, projection_dim=64)


def world_words() -> list[str]:
    """Every word a toyworld caption or prompt can hold, plus the methods' own words."""
    phrases = [spec.name for spec in CLASSES] + list(CONTEXT_NAMES) + list(MODIFIERS) + ["a photo of a"]
    words = [word for phrase in phrases for word in re.findall(r"[a-z]+", phrase.lower())]
    return list(dict.fromkeys(words + list(IDENTIFIERS)))


PROMPT_TOKENS = 24  # the tokenizer's model_max_length: the longest caption is 21 tokens, method prompt 14


def toyworld_tokenizer() -> Any:
    """A CLIP tokenizer whose merges make every world word one token, padding prompts to
    PROMPT_TOKENS rather than 77 (the pipelines pad to the tokenizer's length)."""
    tokenizer = build_tiny_tokenizer(merge_count=1200, corpus=world_words())
    tokenizer.model_max_length = PROMPT_TOKENS
    return tokenizer


def random_sd(seed: int = 0) -> DiffusionComponents:
    """The toy SD parts, random-initialised from `seed` (what pretraining starts from)."""
    return _random_components(toyworld_tokenizer(), UNET, VAE, TEXT, seed, source=SOURCE)
