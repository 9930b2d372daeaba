"""Next-scale autoregressive sampling with a KV cache, CFG on logits and per-image seeds.

For each scale k, coarse to fine: embed the scale's inputs (the SOS at k = 0), run all
blocks (the scale's queries attend to the cached keys of scales <= k), take the logits,
mix them for classifier-free guidance, `l = cfg * l_cond + (1 - cfg) * l_uncond`, divide by
tau, and draw each of the 32 bits as a 2-way categorical after top-k / top-p filtering.
The drawn codes are added to the running sum, whose resize to scale k+1 is the next
input. The final sum goes through the VAE decoder.

Work done once: conditional and unconditional rows run as one batch; every block's KV
cache is allocated once for the whole sequence; the text keys/values of the
cross-attention are computed once; RoPE tables are cached fp32. The loop has no host
syncs (no .item(), no branching on tensor values); bf16 autocast on CUDA (fp32 on the CPU).

Seeds: image i draws its uniforms from its own torch.Generator seeded with seeds[i], in a
fixed order, so its random draws do not depend on the batch. The arithmetic is per sample
too (text padding is masked out), so in fp32 the tokens of image i are the same alone or
inside any batch; only floating-point rounding of batched kernels differs (~1e-7 in fp32,
the decoder may move a pixel by one level). In bf16 on a GPU, kernels chosen per batch
size round differently, so a rare draw that lands within that rounding of its threshold
can flip: fix the batch size when bit-exact reruns matter.

Released-code quirks of ARBooth's samplers (`SamplingConfig`):
  (2) `next_input="area"`: the release built the next-scale input with area resizing at
      inference/teacher sampling, while training used trilinear. Default "trilinear"
      (consistent with training, as the Infinity release samples).
  (3) `attention="released_teacher"`: the release's teacher ran without KV cache, so each
      scale attended only to its own tokens, and with RoPE positions taken from the start
      of the table (offset 0) instead of the scale's own. Default "kv_cache" (correct).
  (8) `to_uint8="truncate"`: both releases turn decoded images into 8 bits by truncation
      (`(img + 1) / 2` then `.mul_(255).to(torch.uint8)`). Default "round".
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from varbench.models.infinity.bsq import (BSQTokenizer, Interpolation, ToUint8, bits_to_codes, flatten_grid,
                                          images_to_uint8, resize)
from varbench.models.infinity.layers import KVCache
from varbench.models.infinity.schedule import ScaleSchedule
from varbench.models.infinity.text import TextFeatures
from varbench.models.infinity.transformer import Condition, Infinity


@dataclass(frozen=True)
class SamplingConfig:
    cfg: float = 4.0  # classifier-free guidance on logits; 1 = off (no unconditional rows)
    tau: float = 0.5  # temperature: logits are divided by tau
    top_k: int = 900  # per bit there are 2 choices: k >= 2 keeps both, k = 1 is greedy, 0 = off
    top_p: float = 0.97  # drop the less likely value of a bit if its probability <= 1 - top_p
    next_input: Interpolation = "trilinear"  # quirk (2): "area" = ARBooth's teacher
    attention: Literal["kv_cache", "released_teacher"] = "kv_cache"  # quirk (3)
    to_uint8: ToUint8 = "round"  # quirk (8): "truncate" = both releases
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU, which runs fp32)


@dataclass
class SampleOutput:
    images: torch.Tensor | None  # (B, H, W, 3) uint8 RGB, or None when not decoded
    summed: torch.Tensor  # (B, d, H', W') fp32: the decoder input
    inputs: torch.Tensor  # (B, L - 1, d) fp32: every scale's input, for teacher forcing
    bits: torch.Tensor  # (B, L, d) bool: the sampled token maps, scales concatenated
    logits: torch.Tensor | None  # (B, L, 2d) fp32 when return_logits: guided, before 1/tau
    condition: Condition  # the conditional text condition (first B rows)
    schedule: ScaleSchedule

    def per_scale(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Split (B, L, ...) token-major data into per-scale maps (B, h, w, ...)."""
        pieces = torch.split(tokens, self.schedule.tokens_per_scale, dim=1)
        return [p.reshape(p.shape[0], h, w, *p.shape[2:]) for p, (h, w) in zip(pieces, self.schedule.scales)]

    def pil_images(self) -> list:
        from PIL import Image

        if self.images is None:
            raise ValueError("images were not decoded (decode=False)")
        return [Image.fromarray(image.cpu().numpy()) for image in self.images]


def sample_bits(logits: torch.Tensor, uniforms: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Draw bits from logits (B, n, 2d) (already guided and divided by tau) with uniforms
    (B, n, d): bit = 1 iff u < P(1) after top-k / top-p filtering."""
    pairs = logits.view(*logits.shape[:-1], -1, 2).float()
    if top_k == 1:
        return pairs[..., 1] > pairs[..., 0]
    p_one = torch.softmax(pairs, dim=-1)[..., 1]
    if 0 < top_p < 1:
        dropped = torch.minimum(p_one, 1 - p_one) <= 1 - top_p  # the less likely value falls out
        p_one = torch.where(dropped, (p_one > 0.5).to(p_one.dtype), p_one)
    return uniforms < p_one


def image_generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def draw_uniforms(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(B, *shape) uniforms; row i comes from generators[i] only."""
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in generators])


def build_condition(model: Infinity, text: TextFeatures, cfg: float) -> Condition:
    """Condition rows: the prompts, then (if cfg != 1) the same with the null text."""
    features, mask = text.features, text.mask
    # Drop flags are made on the features' device: copying a CPU tensor there would wait for
    # all queued GPU work (the teacher samples inside ARBooth's training loop).
    rows = torch.zeros(text.batch_size, dtype=torch.bool, device=features.device)
    if cfg == 1:
        return model.condition(features, mask, drop=rows)
    drop = torch.cat([rows, ~rows])
    both_mask = None if mask is None else torch.cat([mask, mask])
    return model.condition(torch.cat([features, features]), both_mask, drop=drop)


def autocast_for(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def sample(model: Infinity, vae: BSQTokenizer | None, text: TextFeatures, schedule: ScaleSchedule,
           seeds: Sequence[int], config: SamplingConfig = SamplingConfig(), return_logits: bool = False,
           decode: bool = True) -> SampleOutput:
    """Generate one image per (text row, seed). See the module docstring."""
    device = model.pos_start.device
    batch = text.batch_size
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} prompts")
    was_training = model.training
    model.eval()
    try:
        text = text.to(device)
        cond = build_condition(model, text, config.cfg)
        with autocast_for(device, config.amp):
            summed, inputs, bits, logits = _scale_loop(model, cond, schedule, seeds, config, return_logits)
    finally:
        model.train(was_training)
    images = None
    if decode:
        if vae is None:
            raise ValueError("decode=True needs the VAE")
        images = decode_images(vae, summed, config.amp, config.to_uint8)
    return SampleOutput(images, summed, inputs, bits, logits, cond.select(slice(0, batch)), schedule)


def _scale_loop(model: Infinity, cond: Condition, schedule: ScaleSchedule, seeds: Sequence[int],
                config: SamplingConfig, return_logits: bool):
    device, batch, bits_per_token = cond.pooled.device, len(seeds), model.config.token_bits
    guided = config.cfg != 1
    length, final = schedule.num_tokens, schedule.final
    generators = image_generators(seeds, device)
    forward_scale = scale_forward(model, cond, schedule, config)
    summed = torch.zeros(batch, bits_per_token, *final, device=device)
    inputs = torch.zeros(batch, length - 1, bits_per_token, device=device)
    bits_out = torch.zeros(batch, length, bits_per_token, dtype=torch.bool, device=device)
    logits_out = torch.zeros(batch, length, 2 * bits_per_token, device=device) if return_logits else None
    x = model.sos(cond)
    for k, ((start, end), (h, w)) in enumerate(zip(schedule.bounds(), schedule.scales)):
        count = end - start
        logits = forward_scale(k, x)
        if guided:
            logits = config.cfg * logits[:batch] + (1 - config.cfg) * logits[batch:]
        if logits_out is not None:
            logits_out[:, start:end] = logits
        uniforms = draw_uniforms(generators, (count, bits_per_token), device)
        bits = sample_bits(logits / config.tau, uniforms, config.top_k, config.top_p)
        bits_out[:, start:end] = bits
        summed = summed + resize(bits_to_codes(bits.view(batch, h, w, bits_per_token)), final, "trilinear")
        if k + 1 < schedule.num_scales:
            nxt = flatten_grid(resize(summed, schedule.scales[k + 1], config.next_input))
            inputs[:, end - 1:end - 1 + nxt.shape[1]] = nxt
            x = model.embed_inputs(nxt)
            x = torch.cat([x, x]) if guided else x
    return summed, inputs, bits_out, logits_out


def scale_forward(model: Infinity, cond: Condition, schedule: ScaleSchedule, config: SamplingConfig):
    """A function (scale index, input tokens) -> logits: all blocks, then the head."""
    text_kvs = [block.ca.text_kv(cond.text) for block in model.blocks]  # once for all scales
    cached = config.attention == "kv_cache"
    caches = [KVCache(schedule.num_tokens) for _ in model.blocks] if cached else None
    rope = model.rope.get(schedule, model.config.head_dim, cond.pooled.device)
    bounds = schedule.bounds()

    def forward(k: int, x: torch.Tensor) -> torch.Tensor:
        start, end = bounds[k]
        level = model.lvl_embed.weight[k]
        if cached:
            hidden = model.run_blocks(x, cond, level, rope[start:end], (), text_kvs, caches, start)
        else:  # quirk (3): self-only attention, RoPE rows from offset 0
            count = end - start
            hidden = model.run_blocks(x, cond, level, rope[:count], ((0, count, count),), text_kvs)
        return model.logits(hidden, cond)

    return forward


@torch.no_grad()
def decode_images(vae: BSQTokenizer, summed: torch.Tensor, amp: bool = True,
                  to_uint8: ToUint8 = "round") -> torch.Tensor:
    """Summed codes -> (B, H, W, 3) uint8 images (bf16 autocast on CUDA)."""
    with autocast_for(summed.device, amp):
        return images_to_uint8(vae.decode(summed), to_uint8)
