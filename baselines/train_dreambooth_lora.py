"""DreamBooth-LoRA's recipe, as diffusers' `examples/dreambooth/train_dreambooth_lora*.py`
run it for each family: LoRA adapters on the frozen denoiser, trained on the subject's
photos (and, with prior preservation, class images), then sampled and saved in diffusers'
LoRA format.

A training step takes `batch_size` subject images captioned "a photo of sks {class}" and,
with prior preservation, as many class images captioned "a photo of {class}". Each latent
is noised at a random time and the loss is the mean squared error of the denoiser's
output against the family's target, on the subject half, plus `prior_loss_weight` x the
same on the class half:
  SD 1.5, SDXL   DDPM noise at a uniform timestep; target: the noise (or the velocity of
                 a v-prediction model). SDXL also reads the pooled text embedding and six
                 numbers: original size, crop corner and target size.
  SD3            flow matching: x_t = (1 - s) x + s n, s drawn logit-normal; the output is
                 preconditioned (x_t - s * output) and compared with the clean latents.
  FLUX.1-dev     flow matching, s drawn uniformly; latents packed 2 x 2 into tokens, the
                 guidance scale embedded; target: the velocity n - x.
Prompts are encoded once (the text encoders are frozen). See `baselines.dreambooth_lora`
for the method.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image

from baselines.class_images import cached_class_images, class_image_key, class_prompt
from baselines.data import LatentPool, ShuffledOrder, pixel_batch
from baselines.family_sampling import FamilyImages, generate_images
from baselines.training import compute_dtype, count_parameters, draw_noise, make_optimizer, training_loop, with_prior
from varbench.data.subject import Subject, load_rgb
from varbench.errors import UserError
from varbench.fileio import write_png
from varbench.method import CellContext
from varbench.models.families import FamilyModel, expected_warnings_off
from varbench.seeding import derive_seed

LORA_FILE = "pytorch_lora_weights.safetensors"  # what save_lora_weights writes and load_lora_weights reads
# The layers each script adapts (its LoraConfig target_modules; names match by suffix).
TARGETS = {
    "sd15": ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"],
    "sdxl": ["to_k", "to_q", "to_v", "to_out.0"],
    "sd3": ["attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k", "attn.to_out.0",
            "attn.to_q", "attn.to_v"],
    "flux": ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
             "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
             "ff_context.net.2"],
}
# How each script resizes training images (--image_interpolation_mode lanczos; transforms.Resize bilinear).
RESAMPLE = {"sd15": Image.Resampling.LANCZOS, "sdxl": Image.Resampling.LANCZOS, "sd3": Image.Resampling.BILINEAR,
            "flux": Image.Resampling.BILINEAR}


# --- training ------------------------------------------------------------------------------

def train(model: FamilyModel, subject: Subject, class_paths: list[Path], config: Any, ctx: CellContext,
          phrase: str) -> int:
    """Add LoRA adapters to `model`'s denoiser and fit them for `config.steps` steps;
    returns the number of trained parameters (the adapters stay in the denoiser)."""
    dtype = compute_dtype(config, ctx.device)
    family = model.family.name
    instance = Examples(model, subject.load_images(), config, ctx.device)
    classes = Examples(model, [load_rgb(p) for p in class_paths], config, ctx.device) if class_paths else None
    texts = [encode_text(model, f"a photo of {phrase}", config), encode_text(model, class_prompt(subject.class_noun),
                                                                              config)]
    denoiser = model.denoiser
    params = add_lora(denoiser, family, config, derive_seed("lora_init", ctx.fit_seed))
    optimizer = make_optimizer(params, config.learning_rate, config, ctx.device)
    draw, loss = training_step(model, instance, classes, texts, config, ctx)
    denoiser.train()
    if config.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    try:
        training_loop(draw, loss, params, optimizer, config.steps, ctx, dtype, config.grad_accumulation,
                      config.max_grad_norm)
    finally:
        if config.gradient_checkpointing:
            denoiser.disable_gradient_checkpointing()
        denoiser.eval().requires_grad_(False)
    return count_parameters(params)


def add_lora(denoiser: Any, family: str, config: Any, seed: int) -> list[torch.Tensor]:
    """The script's adapters (Gaussian-initialised A, zero B, so training starts from the
    base model); trained in fp32 whatever the frozen weights' precision.

    peft draws A from torch's global generator; the scripts seed the whole process first
    (accelerate's set_seed). Here the draws come from `seed` inside a forked generator
    state, so a cell's adapters never depend on what ran before it in the process."""
    from peft import LoraConfig

    # (manual_seed reseeds every GPU's generator: fork them all)
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        denoiser.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                                        target_modules=TARGETS[family]))
    params = lora_parameters(denoiser)
    for param in params:
        param.data = param.data.float()
        param.requires_grad_(True)
    return params


def lora_parameters(denoiser: Any) -> list[torch.Tensor]:
    return [param for name, param in denoiser.named_parameters() if ".lora_" in name]


class Text(NamedTuple):
    """One prompt's conditioning, batch 1: states, and the pooled embedding and token
    positions where the family reads them."""

    states: torch.Tensor
    pooled: torch.Tensor | None = None
    ids: torch.Tensor | None = None  # FLUX: text token positions


def encode_text(model: FamilyModel, prompt: str, config: Any) -> Text:
    """A fixed prompt through the frozen text encoders, as the family's pipeline encodes it."""
    pipeline, device, family = model.pipeline, model.device, model.family.name
    with torch.no_grad():
        if family == "sd15":
            return Text(pipeline.encode_prompt(prompt, device, 1, do_classifier_free_guidance=False)[0])
        if family == "sdxl":
            states, _, pooled, _ = pipeline.encode_prompt(prompt, device=device, do_classifier_free_guidance=False)
            return Text(states, pooled)
        if family == "sd3":
            states, _, pooled, _ = pipeline.encode_prompt(prompt, prompt, prompt, device=device,
                                                          do_classifier_free_guidance=False,
                                                          max_sequence_length=config.max_sequence_length)
            return Text(states, pooled)
        states, pooled, ids = pipeline.encode_prompt(prompt, prompt, device=device,
                                                     max_sequence_length=config.max_sequence_length)
        return Text(states, pooled, ids)


class Examples:
    """Fixed training images: their VAE latent distributions (encoded once, re-sampled at
    every step) and, for SDXL, each image's size-and-crop conditioning."""

    def __init__(self, model: FamilyModel, images: Sequence[Image.Image], config: Any, device: torch.device):
        vae, size = model.pipeline.vae, config.resolution
        self.pool = LatentPool(vae, pixel_batch(images, size, RESAMPLE[model.family.name], device))
        self.count = self.pool.count
        # SD3 and FLUX latents are shifted before scaling: (z - shift) * scale
        self.offset = float(vae.config.shift_factor or 0.0) * self.pool.scaling_factor
        # SDXL: (original height, width, crop top, left, target height, width), as the script's compute_time_ids
        self.time_ids = torch.tensor([[image.height, image.width, *crop_corner(image, size), size, size]
                                      for image in images], dtype=torch.float32, device=device)

    def latents(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        return self.pool.sample(indices, generator) - self.offset


def crop_corner(image: Image.Image, size: int) -> tuple[int, int]:
    """(top, left) of the square `baselines.data.resize_and_crop` takes after resizing."""
    scale = size / min(image.width, image.height)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    return (height - size) // 2, (width - size) // 2


class Batch(NamedTuple):
    """One step's inputs: subject rows first, then class rows (with the prior)."""

    latents: torch.Tensor
    noise: torch.Tensor
    times: torch.Tensor  # DDPM timesteps (UNets) or schedule indices (flow matching)
    texts: list[Text]  # one per row
    time_ids: torch.Tensor  # SDXL's size-and-crop numbers, one row per latent


def training_step(model: FamilyModel, instance: Examples, classes: Examples | None, texts: list[Text], config: Any,
                  ctx: CellContext) -> tuple[Callable[[], Batch], Callable[[Batch], dict[str, torch.Tensor]]]:
    """The step's random draws and its loss (`baselines.training.training_loop`)."""
    generator = torch.Generator(device=ctx.device).manual_seed(ctx.fit_seed)
    # As the scripts' dataset: example i pairs subject image i % n with class image i % m.
    order = ShuffledOrder(max(instance.count, classes.count if classes else 0), random.Random(ctx.fit_seed))
    batch_size = config.batch_size
    error = denoising_error(model, config)

    def draw() -> Batch:
        picks = [order.next() for _ in range(batch_size)]
        parts = [(instance, [p % instance.count for p in picks], texts[0])]
        if classes is not None:
            parts.append((classes, [p % classes.count for p in picks], texts[1]))
        latents = torch.cat([examples.latents(rows, generator) for examples, rows, _ in parts])
        time_ids = torch.cat([examples.time_ids[row:row + 1] for examples, rows, _ in parts for row in rows])
        noise, times = error.draw(latents, generator)
        return Batch(latents, noise, times, [text for _, rows, text in parts for _ in rows], time_ids)

    def loss(batch: Batch) -> dict[str, torch.Tensor]:
        squared = error(batch)
        instance_loss = squared[:batch_size].mean()
        return with_prior(instance_loss, None if classes is None else squared[batch_size:], config.prior_loss_weight)

    return draw, loss


def denoising_error(model: FamilyModel, config: Any) -> Any:
    return UnetError(model, config) if model.family.denoiser == "unet" else FlowError(model, config)


def stack(texts: list[Text], field: str) -> torch.Tensor:
    return torch.cat([getattr(text, field) for text in texts])


class UnetError:
    """SD 1.5 and SDXL: the squared error of the predicted noise (or velocity)."""

    def __init__(self, model: FamilyModel, config: Any):
        from diffusers import DDPMScheduler

        self.model = model
        self.scheduler = DDPMScheduler.from_config(model.scheduler_config)  # the scripts' training schedule

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return draw_noise(latents, self.scheduler, generator)

    def __call__(self, batch: Batch) -> torch.Tensor:
        noisy = self.scheduler.add_noise(batch.latents, batch.noise, batch.times)
        extra = {}
        if self.model.family.name == "sdxl":
            extra["added_cond_kwargs"] = {"text_embeds": stack(batch.texts, "pooled"), "time_ids": batch.time_ids}
        prediction = self.model.denoiser(noisy, batch.times, stack(batch.texts, "states"), return_dict=False,
                                         **extra)[0]
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(batch.latents, batch.noise, batch.times)
        else:
            target = batch.noise
        return (prediction.float() - target.float()) ** 2


class FlowError:
    """SD3 and FLUX: the squared error of the flow-matching prediction."""

    def __init__(self, model: FamilyModel, config: Any):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.model, self.config = model, config
        schedule = FlowMatchEulerDiscreteScheduler.from_config(model.scheduler_config)
        device = model.device
        # On the device: a step indexes them with device indices, never reading back to the host.
        self.sigmas = schedule.sigmas.to(device=device, dtype=torch.float32)
        self.timesteps = schedule.timesteps.to(device=device, dtype=torch.float32)
        self.steps = schedule.config.num_train_timesteps

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise, then the schedule index of each row: u ~ logit-normal (SD3) or uniform
        (FLUX) in [0, 1), index = floor(u x 1000), as the scripts' timestep density."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        rows = (latents.shape[0],)
        if self.config.weighting_scheme == "logit_normal":
            normal = torch.randn(rows, generator=generator, device=latents.device)
            u = torch.sigmoid(normal * self.config.logit_std + self.config.logit_mean)
        else:
            u = torch.rand(rows, generator=generator, device=latents.device)
        return noise, (u * self.steps).long().clamp(max=self.steps - 1)

    def __call__(self, batch: Batch) -> torch.Tensor:
        sigma = self.sigmas[batch.times].view(-1, 1, 1, 1)
        noisy = (1.0 - sigma) * batch.latents + sigma * batch.noise
        if self.model.family.name == "sd3":
            output = self.model.denoiser(hidden_states=noisy, timestep=self.timesteps[batch.times],
                                         encoder_hidden_states=stack(batch.texts, "states"),
                                         pooled_projections=stack(batch.texts, "pooled"), return_dict=False)[0]
            prediction, target = noisy - sigma * output, batch.latents  # preconditioned: the clean latents
        else:
            prediction, target = self.flux_output(noisy, batch), batch.noise - batch.latents
        return (prediction.float() - target.float()) ** 2

    def flux_output(self, noisy: torch.Tensor, batch: Batch) -> torch.Tensor:
        from diffusers import FluxPipeline

        rows, channels, height, width = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, rows, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(rows, height // 2, width // 2, noisy.device, noisy.dtype)
        guidance = torch.full((rows,), float(self.config.train_guidance_scale), device=noisy.device)
        output = self.model.denoiser(hidden_states=packed, timestep=self.timesteps[batch.times] / 1000,
                                     guidance=guidance, pooled_projections=stack(batch.texts, "pooled"),
                                     encoder_hidden_states=stack(batch.texts, "states"), txt_ids=batch.texts[0].ids,
                                     img_ids=image_ids, return_dict=False)[0]
        scale = self.model.pipeline.vae_scale_factor
        return FluxPipeline._unpack_latents(output, height * scale, width * scale, scale)


# --- class images ------------------------------------------------------------------------------

def class_image_paths(model: FamilyModel, config: Any, class_noun: str, ctx: CellContext) -> list[Path]:
    """The `num_class_images` prior-preservation images of the pretrained model, from the
    shared cache (`baselines.class_images`). SD 1.5 with DDIM or DPM-Solver goes through
    DreamBooth's own code, so the same settings share DreamBooth's images; every other
    family and sampler is keyed the same way by its own settings and base model."""
    if model.family.name == "sd15" and config.sampler in ("ddim", "dpm"):
        return _dreambooth_class_images(model, config, class_noun, ctx)
    prompt = class_prompt(class_noun)
    key = class_image_key(model, config, prompt, compute_dtype(config, ctx.device))

    def build(folder: Path) -> None:
        for start in range(0, config.num_class_images, config.class_batch_size):
            indices = range(start, min(start + config.class_batch_size, config.num_class_images))
            seeds = [derive_seed("class_image", config.class_image_seed, prompt, i) for i in indices]
            for index, image in zip(indices, generate_images(model.pipeline, [prompt] * len(seeds), seeds, config)):
                write_png(folder / f"{index:04d}.png", image)

    return cached_class_images(ctx, key, build, config.num_class_images)


def _dreambooth_class_images(model: FamilyModel, config: Any, class_noun: str, ctx: CellContext) -> list[Path]:
    from baselines import class_images
    from baselines.dreambooth import DreamBoothConfig
    from varbench.models.diffusion import DiffusionComponents

    pipeline = model.pipeline
    components = DiffusionComponents(pipeline.tokenizer, pipeline.text_encoder, pipeline.vae, pipeline.unet,
                                     model.scheduler_config, model.source, model.random_init)
    # DreamBooth's settings for these images. Its speed options stay off where they would change
    # the UNet in place (fused q/k/v, NHWC weights): here it is the frozen base the adapters go
    # on next, not a copy. (Speed options are not part of the cache key: the images are shared.)
    settings = DreamBoothConfig(resolution=config.resolution, mixed_precision=config.mixed_precision,
                                sampler=config.sampler, sample_steps=config.sample_steps,
                                guidance_scale=config.guidance_scale, num_class_images=config.num_class_images,
                                class_image_seed=config.class_image_seed, class_batch_size=config.class_batch_size,
                                fuse_qkv=False, channels_last_sampling=False, cuda_graphs=False, compile=False)
    return class_images.class_image_paths(components, settings, class_noun, ctx)


# --- the fitted model ------------------------------------------------------------------------------

class LoraModel(FamilyImages):
    """The family pipeline with its adapters; saves them in diffusers' LoRA format.

    It keeps the adapters' values as they came (fp32 after a fit) for `save`, and samples
    with them in the sampling precision (bf16 on CUDA), the precision `load_lora_weights`
    gives them in a bf16 pipeline: a reloaded artifact samples exactly like the fit."""

    def __init__(self, model: FamilyModel, config: Any, trainable_parameters: int):
        from peft.utils import get_peft_model_state_dict

        super().__init__(model.pipeline, config)
        self.model = model
        self._trainable_parameters = trainable_parameters
        denoiser = model.denoiser
        (name, adapter), = denoiser.peft_config.items()  # "default" after a fit, "default_0" when loaded
        self.adapter = adapter.to_dict()  # rank, alpha, targets
        self.layers = {key: tensor.detach().clone()
                       for key, tensor in get_peft_model_state_dict(denoiser, adapter_name=name).items()}
        dtype = compute_dtype(config, denoiser.device)
        for param in lora_parameters(denoiser):
            param.data = param.data.to(dtype)

    @property
    def trainable_parameters(self) -> int:
        return self._trainable_parameters

    def save(self, artifact_dir: Path) -> None:
        family, layers = self.model.family, self.layers
        if family.denoiser == "unet":  # the UNet scripts convert peft's names to diffusers'
            from diffusers.utils import convert_state_dict_to_diffusers

            layers = convert_state_dict_to_diffusers(layers)
        # with the adapter's rank and alpha as metadata, so a reload scales it alike
        type(self.pipeline).save_lora_weights(str(artifact_dir), safe_serialization=True,
                                              **{f"{family.denoiser}_lora_layers": layers,
                                                 f"{family.denoiser}_lora_adapter_metadata": self.adapter})


def load_artifact(model: FamilyModel, artifact_dir: Path, config: Any) -> LoraModel:
    """The adapters saved by `LoraModel.save`, loaded by the pipeline's own `load_lora_weights`."""
    from safetensors import SafetensorError

    if not (artifact_dir / LORA_FILE).is_file():
        raise UserError(f"LoRA artifact has no {LORA_FILE}", str(artifact_dir),
                        "Delete the artifact folder so the cell is fitted again.")
    try:
        with expected_warnings_off():
            model.pipeline.load_lora_weights(str(artifact_dir), weight_name=LORA_FILE)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot load the LoRA weights: {first_line}", str(artifact_dir),
                        "Delete the artifact folder so the cell is fitted again.") from None
    return LoraModel(model, config, count_parameters(lora_parameters(model.denoiser)))
