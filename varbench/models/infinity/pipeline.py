"""Text in, images out: the transformer, the VAE and the text encoder of one size, together.

    pipe = load_infinity("infinity-2b", device="cuda")       # released weights, bf16 blocks
    pipe = load_infinity("infinity-tiny")                    # random init (tests, smoke)
    images = pipe.generate(["a dog in the snow"], seeds=[7])  # PIL images

`pipe.random_init` is True when any part has random weights: numbers computed from such
a pipeline check the pipeline, not the method, and must be labelled so.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from varbench.models.infinity.bsq import BSQTokenizer
from varbench.models.infinity.architecture import ModelSize, get_size
from varbench.models.infinity.factory import build_infinity, build_vae, load_transformer, load_vae
from varbench.models.infinity.sampler import SampleOutput, SamplingConfig, sample
from varbench.models.infinity.schedule import ScaleSchedule, get_schedule, schedule_for_pixels
from varbench.models.infinity.text import TextEncoder, TextFeatures, load_text_encoder
from varbench.models.infinity.transformer import Infinity


@dataclass
class InfinityPipeline:
    model: Infinity
    vae: BSQTokenizer
    text_encoder: TextEncoder
    size: ModelSize
    random_init: bool
    schedule: ScaleSchedule = field(default=None)  # default: the size's default schedule
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.schedule is None:
            scales, h_div_w = self.size.default_schedule
            self.schedule = get_schedule(scales, h_div_w)

    @property
    def device(self) -> torch.device:
        return self.model.pos_start.device

    def schedule_for(self, height: int, width: int) -> ScaleSchedule:
        return schedule_for_pixels(height, width, self.vae.stride)

    def encode(self, prompts: Sequence[str], placeholder: str | None = None,
               placeholder_vectors: torch.Tensor | None = None) -> TextFeatures:
        return self.text_encoder.encode(prompts, placeholder, placeholder_vectors).to(self.device)

    def sample(self, text: TextFeatures, seeds: Sequence[int], **options) -> SampleOutput:
        """Sampler output for precomputed text (options: schedule, sampling, return_logits, decode)."""
        schedule = options.pop("schedule", None) or self.schedule
        config = options.pop("sampling", None) or self.sampling
        return sample(self.model, self.vae, text, schedule, seeds, config, **options)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 8,
                 placeholder: str | None = None, placeholder_vectors: torch.Tensor | None = None,
                 schedule: ScaleSchedule | None = None, sampling: SamplingConfig | None = None) -> list:
        """One PIL image per (prompt, seed); image i does not depend on the batching."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        images = []
        for first in range(0, len(prompts), batch_size):
            chunk = slice(first, first + batch_size)
            with torch.no_grad():
                text = self.encode(prompts[chunk], placeholder, placeholder_vectors)
            out = self.sample(text, seeds[chunk], schedule=schedule, sampling=sampling)
            images += out.pil_images()
        return images


def load_infinity(name: str = "infinity-2b", weights: str | Path | None = None,
                  vae_weights: str | Path | None = None, text_encoder: str | Path | None = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype | None = None, seed: int = 0,
                  **overrides) -> InfinityPipeline:
    """The pipeline of size `name`.

    Sizes with published weights load them (from `weights` / `vae_weights` paths, or the
    hub cache, or $VARBENCH_INFINITY_DIR); random-init sizes ("infinity-tiny", ...) build
    deterministic weights from `seed` unless paths are given. `text_encoder`: a local
    folder for Flan-T5-XL (default: the hub cache). `dtype` defaults to bf16 blocks on
    CUDA, fp32 on the CPU.
    """
    size = get_size(name)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    random_model = size.random_init_only and weights is None
    random_vae = size.random_init_only and vae_weights is None
    if random_model:
        model = build_infinity(name, device=device, dtype=dtype, seed=seed, **overrides)
    else:
        model = load_transformer(name, weights, device=device, dtype=dtype, **overrides)
    vae = build_vae(name, device=device, seed=seed) if random_vae else load_vae(name, vae_weights, device=device)
    if size.text_encoder == "tiny":
        encoder = load_text_encoder("tiny", device=device)
    else:
        encoder = load_text_encoder(size.text_encoder, device=device, local=text_encoder)
    model.eval().requires_grad_(False)
    return InfinityPipeline(model, vae, encoder, size, random_init=random_model or random_vae or encoder.name == "tiny")
