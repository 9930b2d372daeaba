"""Pretraining the toyworld's Infinity (infinity.py) on rendered scenes, as Infinity was
trained, in two stages:

1. the BSQ tokenizer as an autoencoder: the encoder's latents are quantized on the scale
   schedule as `bsq.multiscale_quantize` does (the same bits and codes), with straight-
   through gradients (each scale's normalised residual takes its code's value forward and
   passes its gradient back, as the release's BSQ quantizer does); the decoder sees the
   summed codes. Loss: mean squared error on pixels in [-1, 1] plus BSQ's commitment term
   (weight 0.25: the normalised residuals pulled to their codes);
2. the transformer and the T5 text encoder together, on Infinity's objective: teacher-forced
   next-scale prediction of the bit labels, with the inputs, labels and bitwise
   self-correction flips (at most 30% of the bits of every scale, as the release's
   training script sets) of `bsq.multiscale_quantize` and ARBooth's bitwise cross-entropy
   (`losses.weighted_ce`); tokens weighted per scale as the release's
   `reweight_loss_by_scale` does (final side / the scale's side, normalised to sum 1);
   captions from `world.caption`, 10% of them replaced by the learned null text
   (`cfg_uncond`, through `Infinity.condition`) so classifier-free guidance works.

Infinity-2B froze a pretrained Flan-T5-XL; no toyworld T5 exists, so this one learns with
the transformer (ARBooth still freezes it), as the toy SD's text encoder does.

Both stages draw batches from one pool of pretraining scenes rendered once (pool.py);
stage 2 encodes the pool once (the continuous latents: quantization and flips are redone
per step) and tokenizes its captions once. Everything random comes from the seed and the
step number (drop path is off in the toy size), so a run resumed from its checkpoint
(checkpoints.py: saved every two minutes) trains what an uninterrupted run would.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from varbench.toyworld.checkpoints import Checkpoints
from varbench.toyworld.infinity import RESOLUTION, ToyInfinity
from varbench.toyworld.pool import RENDER_CHUNK, Pool, step_random
from varbench.toyworld.train_encoders import Schedule, _step
from varbench.toyworld.train_sd import sd_pixels

COMMITMENT_WEIGHT = 0.25  # BSQ's commitment_loss_weight
FLIP_MAX = 0.3  # bitwise self-correction: the release's noise_apply_strength
CAPTION_DROP = 0.1  # share of null captions (classifier-free guidance)
ADAM_BETAS = (0.9, 0.97)  # the release's `--ada 0.9_0.97`
STAGES = ("infinity_vae", "infinity_transformer")


@dataclass(frozen=True)
class Recipe:
    """How much Infinity pretraining: the pool's size and each stage's schedule."""

    pool: int
    vae: Schedule
    transformer: Schedule


# "gpu": about 9 minutes on one H100, estimated from its step times (tokenizer 30 ms/step, transformer and T5 80-82 ms/step,
# the rest 12 s; its 3,000-step first version took 281 s and named the class of 73.6% of
# its pictures, 6,000 steps 87.5%: benchmarks/NOTES-toyworld.md);
# batches are large and steps few, as for the toy SD, whose toy steps there were measured
# bound by launching kernels rather than by arithmetic. "cpu": 1,432 s (24 minutes) run
# whole on the 2-core CPU, partly beside test runs (tokenizer about 1.3 s per step of 32,
# transformer and T5 about 1.5 s per step of 16); it draws the contexts but rarely the
# class (benchmarks/NOTES-toyworld.md).
RECIPES = {
    "gpu": Recipe(32768, Schedule(steps=1000, batch=128, learning_rate=1e-3),
                  Schedule(steps=6000, batch=256, learning_rate=1e-3, warmup=300)),
    "cpu": Recipe(8192, Schedule(steps=300, batch=32, learning_rate=1e-3),
                  Schedule(steps=600, batch=16, learning_rate=1e-3, warmup=60)),
}


def toy_schedule():
    """The scale schedule of a toyworld picture: 1 .. 16 tokens per side."""
    from varbench.models.infinity.architecture import get_size
    from varbench.models.infinity.schedule import schedule_for_pixels
    from varbench.toyworld.infinity import SIZE

    return schedule_for_pixels(RESOLUTION, RESOLUTION, get_size(SIZE).tokenizer.stride)


def checkpoints(path, identity: dict) -> Checkpoints:
    """Resumable state of the three parts (checkpoints.py)."""
    return Checkpoints(path, identity, STAGES, _part_states, _restore_parts)


def _part_states(parts: ToyInfinity) -> dict:
    return {"vae": parts.vae.state_dict(), "transformer": parts.transformer.state_dict(),
            "text_encoder": parts.text_encoder.model.state_dict()}


def _restore_parts(parts: ToyInfinity, state: dict) -> None:
    parts.vae.load_state_dict(state["vae"])
    parts.transformer.load_state_dict(state["transformer"])
    parts.text_encoder.model.load_state_dict(state["text_encoder"])


# ---- stage 1: the tokenizer ------------------------------------------------------------
def straight_through_quantize(z: torch.Tensor, schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed codes (B, d, h, w), commitment) of latents z on `schedule`: forward values
    those of `bsq.multiscale_quantize` without flips, gradients straight through each code."""
    from varbench.models.infinity.bsq import quantize_scale, resize

    summed = torch.zeros_like(z)
    commitment = z.new_zeros(())
    for size in schedule.scales:
        residual = F.normalize(resize(z - summed.detach(), size, "area"), dim=1)  # the release detaches too
        _, codes = quantize_scale(residual)
        commitment = commitment + F.mse_loss(residual, codes)
        summed = summed + resize(residual + (codes - residual).detach(), schedule.final, "trilinear")
    return summed, commitment / schedule.num_scales


def tokenizer_loss(vae, pixels: torch.Tensor, schedule) -> torch.Tensor:
    """Reconstruction MSE of pixels in [-1, 1] + COMMITMENT_WEIGHT * commitment."""
    summed, commitment = straight_through_quantize(vae.encode(pixels), schedule)
    return F.mse_loss(vae.decoder(summed), pixels) + COMMITMENT_WEIGHT * commitment


def train_tokenizer(parts: ToyInfinity, pool: Pool, schedule: Schedule, seed: int, device: torch.device,
                    advance: Callable[[int, float], None], checkpoints: Checkpoints) -> list[float]:
    """Stage 1 (module docstring), in place; returns the step losses."""
    vae = parts.vae.to(device).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=schedule.learning_rate, betas=ADAM_BETAS, weight_decay=0.0)
    first, losses = checkpoints.resume(STAGES[0], schedule.steps, parts, optimizer)
    scales = toy_schedule()
    images = torch.from_numpy(pool.images).to(device)  # once: indexing on the host bound GPU steps
    for step in range(first, schedule.steps):
        rng, _ = step_random(seed, 1, step, device)
        pixels = sd_pixels(images[torch.from_numpy(rng.integers(len(images), size=schedule.batch)).to(device)])
        loss = tokenizer_loss(vae, pixels, scales)
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
        checkpoints.maybe_save(STAGES[0], step + 1, parts, optimizer, losses)
    vae.eval().requires_grad_(False)
    if first < schedule.steps:
        checkpoints.maybe_save(STAGES[0], schedule.steps, parts, optimizer, losses, finished=True)
    return losses


# ---- stage 2: the transformer and the text encoder --------------------------------------
@torch.no_grad()
def encode_pool(vae, pool: Pool, device: torch.device) -> torch.Tensor:
    """The continuous latents (N, d, 16, 16) of every pool picture, on `device`."""
    chunks = [vae.encode(sd_pixels(torch.from_numpy(pool.images[first:first + RENDER_CHUNK]).to(device)))
              for first in range(0, len(pool.images), RENDER_CHUNK)]
    return torch.cat(chunks)


def caption_tokens(text_encoder, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, Lt) of `captions`, padded to the longest, and their key mask, as
    `TextEncoder.encode` tokenizes prompts."""
    ids, lengths = text_encoder.tokenize(captions)
    mask = torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return ids.to(device), mask.to(device)


def text_features(t5, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """T5's last hidden states, zero past each caption (`TextEncoder.encode`, with gradients)."""
    return t5(input_ids=ids, attention_mask=mask).last_hidden_state.float() * mask[:, :, None]


def scale_token_weights(schedule, device: torch.device) -> tuple[torch.Tensor, float]:
    """(per-token weights, normaliser) of the release's `reweight_loss_by_scale`: a token
    of an h x w scale weighs sqrt(H W / (h w)) of the final H x W grid, normalised to sum 1."""
    from varbench.methods.arbooth.scale_weights import loss_normalizer, token_weights

    final = schedule.final[0] * schedule.final[1]
    weights = token_weights([(final / (h * w)) ** 0.5 for h, w in schedule.scales], schedule)
    return weights.to(device), loss_normalizer(weights, "weights")


def train_transformer(parts: ToyInfinity, pool: Pool, schedule: Schedule, seed: int, device: torch.device,
                      advance: Callable[[int, float], None], checkpoints: Checkpoints) -> list[float]:
    """Stage 2 (module docstring), in place; returns the step losses."""
    from varbench.methods.arbooth.losses import weighted_ce
    from varbench.models.infinity.bsq import multiscale_quantize

    model, t5 = parts.transformer.to(device), parts.text_encoder.model.to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), *t5.parameters()], lr=schedule.learning_rate,
                                  betas=ADAM_BETAS, weight_decay=0.01)
    first, losses = checkpoints.resume(STAGES[1], schedule.steps, parts, optimizer)
    latents = encode_pool(parts.vae.to(device).eval(), pool, device)
    ids, mask = caption_tokens(parts.text_encoder, pool.captions, device)
    scales = toy_schedule()
    weights, normalizer = scale_token_weights(scales, device)
    model.train().requires_grad_(True)
    t5.train().requires_grad_(True)
    for step in range(first, schedule.steps):
        rng, generator = step_random(seed, 2, step, device)
        index = torch.from_numpy(rng.integers(len(latents), size=schedule.batch)).to(device)
        dropped = torch.from_numpy(rng.random(schedule.batch) < CAPTION_DROP).to(device)
        maps = multiscale_quantize(latents[index], scales, flip_max=FLIP_MAX, generator=generator)
        cond = model.condition(text_features(t5, ids[index], mask[index]), mask[index], drop=dropped)
        with _autocast(device):
            logits = model(cond, maps.inputs, scales)
        loss = weighted_ce(logits, maps.labels(), weights, normalizer)
        _step(optimizer, loss, schedule.rate(step))
        losses.append(loss.item())
        advance(step, losses[-1])
        checkpoints.maybe_save(STAGES[1], step + 1, parts, optimizer, losses)
    model.eval().requires_grad_(False)
    t5.eval().requires_grad_(False)
    if first < schedule.steps:
        checkpoints.maybe_save(STAGES[1], schedule.steps, parts, optimizer, losses, finished=True)
    return losses


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 blocks on CUDA (as the release trains; fp32 masters, fp32 residual stream), fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
