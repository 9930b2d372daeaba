"""Custom Diffusion's recipe, as diffusers' `examples/custom_diffusion/train_custom_diffusion.py`
runs it: the cross-attention key/value projections and one new word trained with the
release's augmentation and a masked loss, then sampled and saved in diffusers' formats.

A training step takes `batch_size` subject photos, each flipped and rescaled at random
(`rescale_augment`), encoded by the VAE (every step: the augmentation changes them), with
their prompts; with prior preservation, as many class images and their prompt. Every
latent gets noise at a random timestep. Loss: the UNet's squared error on each subject
image, summed over the latent channels inside its mask and divided by the mask's size,
averaged; plus `prior_loss_weight` x the MSE on the class images. See
`baselines.custom_diffusion` for the method.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from baselines.class_images import class_prompt
from baselines.data import LatentPool, ShuffledOrder, encode_prompts, image_to_tensor, pixel_batch, tokenize
from baselines.sampling import DiffusionModel
from baselines.tokens import add_token, apply_embeds, initial_vector, save_embeds, splice_in, splice_out
from baselines.training import (
    cast,
    compute_dtype,
    count_parameters,
    draw_noise,
    make_optimizer,
    prediction_error,
    training_loop,
    with_prior,
)
from varbench.data.subject import Subject, load_rgb
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.diffusion import DiffusionComponents

WEIGHTS_FILE = "pytorch_custom_diffusion_weights.safetensors"  # diffusers' name for this format
INSTANCE_TEMPLATE = "photo of a {}"  # the release's instance prompt: "photo of a <new1> cat"
FAR_PREFIXES = ("a far away ", "very small ")
NEAR_PREFIXES = ("zoomed in ", "close up ")


def train(base: DiffusionComponents, subject: Subject, class_paths: list[Path], config: Any, ctx: CellContext,
          phrase: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Train the cross-attention K/V and the modifier token's vector for `config.steps`
    steps; returns fp32 copies of both (the UNet keeps the processors, in the sampling
    precision, and the text encoder's table the vector)."""
    dtype = compute_dtype(config, ctx.device)
    token_id = add_token(base, config.modifier_token)
    initial = initial_vector(base, config.initializer_token.replace("{class}", subject.class_noun),
                             "method config 'initializer_token'")
    processors = make_processors(base.unet, kv_weights=None)  # fp32 copies of the pretrained K/V
    cast([base.text_encoder, base.vae, base.unet], dtype)  # frozen; the processors stay fp32 to train
    base.unet.set_attn_processor(dict(processors))
    spliced = splice_in(base, [token_id], initial)

    classes = None
    if class_paths:
        classes = LatentPool(base.vae, pixel_batch([load_rgb(p) for p in class_paths], config.resolution,
                                                   Image.Resampling.BILINEAR, ctx.device),
                             with_flips=config.hflip)
    cross_attention = [proc for name, proc in processors.items() if name.endswith("attn2.processor")]
    params = [p for proc in cross_attention for p in proc.parameters()] + [spliced.vectors]
    optimizer = make_optimizer(params, config.effective_learning_rate(), config, ctx.device)
    draw, loss = training_step(base, subject, classes, config, ctx, phrase)
    training_loop(draw, loss, params, optimizer, config.steps, ctx, dtype, max_grad_norm=config.max_grad_norm)

    vectors = splice_out(base, spliced)
    kv_state = kv_weights_of(base.unet)
    for processor in processors.values():
        processor.to(dtype)  # the trained processors join the sampling precision
    base.unet.eval()
    return kv_state, vectors


@dataclass
class StepDraws:
    """The host-side random choices of one training step: subject picks, their augmented
    pixels, loss masks and prompt token ids, and the flips of the class images."""
    picks: list[int]
    pixels: list[torch.Tensor]
    masks: list[torch.Tensor]
    ids: list[torch.Tensor]
    flips: list[bool]


class Batch(NamedTuple):
    """One step's inputs: subject latents first, then class latents (with the prior)."""

    latents: torch.Tensor
    token_ids: torch.Tensor  # the subject images' prompts
    masks: torch.Tensor  # (batch_size, 1, h, w) valid latent cells of the subject images
    noise: torch.Tensor
    timesteps: torch.Tensor


def encoded_steps(draw_step: Callable[[], StepDraws], vae: Any) -> Iterator[tuple[StepDraws, torch.Tensor]]:
    """Each step's draws and the latent moments of its augmented subject images."""
    while True:
        step = draw_step()
        yield step, latent_moments(vae, torch.stack(step.pixels))


def latent_moments(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE's (mean, log-variance) of `pixels`. Plain bf16, outside the step's autocast:
    the release calls the VAE outside the autocast that wraps the UNet."""
    with torch.no_grad(), torch.autocast(pixels.device.type, enabled=False):
        return vae.encode(pixels.to(vae.dtype)).latent_dist.parameters


def training_step(base: DiffusionComponents, subject: Subject, classes: LatentPool | None, config: Any,
                  ctx: CellContext,
                  phrase: str) -> tuple[Callable[[], Batch], Callable[[Batch], dict[str, torch.Tensor]]]:
    """The step's random draws and its loss (`baselines.training.training_loop`)."""
    rng = random.Random(ctx.fit_seed)
    generator = torch.Generator(device=ctx.device).manual_seed(ctx.fit_seed)
    noise_scheduler = base.noise_scheduler()
    originals = [image_to_tensor(image).to(ctx.device) for image in subject.load_images()]
    order = ShuffledOrder(max(len(originals), classes.count if classes else 0), rng)
    prefixes = ("",) + FAR_PREFIXES + NEAR_PREFIXES
    instance_prompt = INSTANCE_TEMPLATE.format(phrase)
    prompt_ids = dict(zip(prefixes, tokenize(base.tokenizer, [p + instance_prompt for p in prefixes], ctx.device)))
    class_states = encode_prompts(base, [class_prompt(subject.class_noun)]) if classes else None
    latent_factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    batch_size = config.batch_size

    def draw_step() -> StepDraws:
        """Every host-side random draw of one step, in the release's order."""
        picks = [order.next() for _ in range(batch_size)]
        pixels, masks, ids = augment(originals, picks, config, latent_factor, rng, prompt_ids)
        flips = [config.hflip and rng.random() < 0.5 for _ in picks] if classes is not None else []
        return StepDraws(picks, pixels, masks, ids, flips)

    steps = encoded_steps(draw_step, base.vae)

    def draw() -> Batch:
        step, moments = next(steps)
        latents = [DiagonalGaussianDistribution(moments).sample(generator=generator).float()
                   * base.vae.config.scaling_factor]
        if classes is not None:
            latents.append(classes.sample([p % classes.count for p in step.picks], generator, step.flips))
        latents = torch.cat(latents)
        return Batch(latents, torch.stack(step.ids), torch.stack(step.masks).unsqueeze(1),
                     *draw_noise(latents, noise_scheduler, generator))

    def loss(batch: Batch) -> dict[str, torch.Tensor]:
        states = [base.text_encoder(batch.token_ids)[0]]  # the new word's gradient flows through here
        if classes is not None:
            states.append(class_states.expand(batch_size, -1, -1))
        error = prediction_error(base.unet, noise_scheduler, batch.latents, batch.noise, batch.timesteps,
                                 torch.cat(states))
        # As released: squared error summed over the 4 latent channels, divided by the
        # number of valid (single-channel) mask cells. The clamp only matters at toy
        # resolutions, where a small placed image can cover no whole latent cell.
        mask = batch.masks
        instance_loss = ((error[:batch_size] * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3]).clamp(min=1)).mean()
        return with_prior(instance_loss, None if classes is None else error[batch_size:], config.prior_loss_weight)

    return draw, loss


def augment(originals: list[torch.Tensor], picks: list[int], config: Any, latent_factor: int,
            rng: random.Random, prompt_ids: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """The release's augmentation of the picked subject images: pixels, loss masks and the
    token ids of the matching prompts (flip, then rescale with its prompt prefix)."""
    pixels, masks, ids = [], [], []
    for pick in picks:
        image = originals[pick % len(originals)]
        if config.hflip and rng.random() < 0.5:
            image = torch.flip(image, dims=[-1])
        augmented, mask, prefix = rescale_augment(image, config.resolution, latent_factor, rng,
                                                  config.scale_augmentation)
        pixels.append(augmented)
        masks.append(mask)
        ids.append(prompt_ids[prefix])
    return pixels, masks, ids


def rescale_augment(image: torch.Tensor, size: int, latent_factor: int, rng: random.Random,
                    enabled: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The release's rescale augmentation of one (3, H, W) image in [-1, 1].

    Two times in three the image shrinks to size/3..size and sits at a random place on a
    zero (mid-grey) canvas; otherwise it grows to 1.2..1.4 x size and a random crop is
    taken. Returns the image, a (size/f, size/f) mask of latent cells covered by it (one
    cell of margin, all ones for crops), and the prompt prefix that describes the scale.
    """
    scale = size
    if enabled:
        if rng.random() < 0.66:
            scale = rng.randint(size // 3, size)
        else:
            scale = rng.randint(int(1.2 * size), int(1.4 * size) - 1)
    outer, inner = (scale, size) if scale > size else (size, scale)
    top, left = rng.randint(0, outer - inner), rng.randint(0, outer - inner)
    resized = F.interpolate(image[None], size=(scale, scale), mode="bilinear", antialias=True, align_corners=False)[0]
    cells = size // latent_factor
    mask = image.new_zeros(cells, cells)
    if scale > size:
        pixels = resized[:, top:top + size, left:left + size]
        mask.fill_(1.0)
    else:
        pixels = image.new_zeros(3, size, size)
        pixels[:, top:top + scale, left:left + scale] = resized
        f = latent_factor
        mask[top // f + 1:(top + scale) // f - 1, left // f + 1:(left + scale) // f - 1] = 1.0
    prefix = ""
    if scale < 0.6 * size:
        prefix = rng.choice(FAR_PREFIXES)
    elif scale > size:
        prefix = rng.choice(NEAR_PREFIXES)
    return pixels, mask, prefix


def make_processors(unet: Any, kv_weights: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Custom Diffusion processors for every attention layer, in fp32 on the UNet's device.

    Cross-attention layers get trainable K/V copies (of the UNet's own projections, or of
    `kv_weights` keyed as in the saved file); self-attention layers get weightless
    pass-through processors, as in the release (`save_attn_procs` expects them).
    """
    processors = {}
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            processors[name] = CustomDiffusionAttnProcessor2_0(train_kv=False, train_q_out=False)
            continue
        layer = unet.get_submodule(name[: -len(".processor")])
        processor = CustomDiffusionAttnProcessor2_0(train_kv=True, train_q_out=False,
                                                    hidden_size=layer.to_k.out_features,
                                                    cross_attention_dim=layer.to_k.in_features)
        for projection in ("to_k", "to_v"):
            key = f"{name}.{projection}_custom_diffusion.weight"
            if kv_weights is None:
                weight = getattr(layer, projection).weight
            elif key in kv_weights:
                weight = kv_weights[key]
            else:
                raise UserError(f"Custom Diffusion weights lack {key}", WEIGHTS_FILE,
                                "The artifact belongs to another base model; delete it so the cell is fitted again.")
            getattr(processor, f"{projection}_custom_diffusion").weight.data.copy_(weight.float())
        processors[name] = processor.to(device=unet.device, dtype=torch.float32)
    return processors


def kv_weights_of(unet: Any) -> dict[str, torch.Tensor]:
    """fp32 copies of the trained K/V projections, keyed as `save_attn_procs` keys them."""
    state = {}
    for name, processor in unet.attn_processors.items():
        if isinstance(processor, CustomDiffusionAttnProcessor2_0) and processor.train_kv:
            for key, tensor in processor.state_dict().items():
                state[f"{name}.{key}"] = tensor.detach().float().cpu().clone()
    return state


class CustomDiffusionModel(DiffusionModel):
    def __init__(self, components: DiffusionComponents, config: Any, kv_state: dict[str, torch.Tensor],
                 vectors: torch.Tensor):
        self.kv_state = kv_state  # fp32 copies of the trained projections (what is saved)
        self.vectors = vectors
        trainable = count_parameters(list(kv_state.values())) + count_parameters([vectors])
        super().__init__(components, components.unet, config, trainable)

    def save(self, artifact_dir: Path) -> None:
        state = dict(self.kv_state)
        for name in self.pipeline.unet.attn_processors:
            if not name.endswith("attn2.processor"):
                state[name] = torch.zeros(0)  # diffusers reads a zero-length entry as "no weights"
        save_file(state, str(Path(artifact_dir) / WEIGHTS_FILE), metadata={"format": "pt"})
        save_embeds(artifact_dir, self.config.modifier_token, self.vectors)


def load_artifact(base: DiffusionComponents, artifact_dir: Path, config: Any, ctx: CellContext) -> CustomDiffusionModel:
    kv_state = read_kv_weights(Path(artifact_dir) / WEIGHTS_FILE)
    _token, vectors = apply_embeds(base, Path(artifact_dir))
    base.unet.set_attn_processor(dict(make_processors(base.unet, kv_weights=kv_state)))
    cast([base.text_encoder, base.vae, base.unet], compute_dtype(config, ctx.device))
    base.unet.eval()
    return CustomDiffusionModel(base, config, kv_state, vectors)


def read_kv_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError("Custom Diffusion weights file missing", str(path),
                        "Delete the artifact folder so the cell is fitted again.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"cannot read Custom Diffusion weights: {err}", str(path),
                        "Delete the artifact folder so the cell is fitted again.") from None
    return {key: tensor for key, tensor in state.items() if tensor.numel() > 0}
