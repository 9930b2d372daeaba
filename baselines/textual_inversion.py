"""Textual Inversion (Gal et al., ICLR 2023) on Stable Diffusion, as in diffusers'
`examples/textual_inversion/textual_inversion.py`.

One new word `<placeholder>` is learnt; every network weight stays frozen. Its embedding
starts from the class noun's and is fitted on the subject's photos (random horizontal
flip, p = 0.5) captioned with a random template of the release's object list
("a photo of a {}", "a rendering of a {}", ...).

Subject phrase: by default the word stands for the whole subject ("a <placeholder> in the
jungle"), as in the Textual Inversion paper and the DreamBooth paper's comparison (their
"S*"): the release's templates contain no class noun, and training and evaluation
prompts must use the word the same way. `keep_class_noun: true` gives "<placeholder> dog"
in both, the variant some later benchmarks use. CLIP-T is unaffected either way: the
runner scores against the template with the class noun, not this phrase.

Artifact: `learned_embeds.safetensors` = {"<placeholder>": (1, dim)}, diffusers' own
format, loadable with `pipeline.load_textual_inversion(artifact_dir)`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from baselines.common import (
    DiffusionConfig,
    DiffusionMethod,
    DiffusionModel,
    LatentPool,
    ShuffledOrder,
    cast,
    compute_dtype,
    count_parameters,
    draw_noise,
    make_optimizer,
    pixel_batch,
    prediction_error,
    tokenize,
    train,
)
from baselines.speed import NoisePrediction, TextStates, accelerate, set_memory_format
from baselines.tokens import add_token, apply_embeds, initial_vector, save_embeds, splice_in, splice_out
from varbench.data.subject import Subject
from varbench.method import CellContext
from varbench.models.diffusion import DiffusionComponents

# The release's templates for objects (`imagenet_templates_small`).
OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}",
    "a cropped photo of a {}", "a photo of the {}", "a good photo of the {}", "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}", "a photo of a nice {}", "a good photo of a {}", "a photo of the nice {}",
    "a photo of the small {}", "a photo of the weird {}", "a photo of the large {}",
    "a photo of a cool {}", "a photo of a small {}",
)


@dataclass
class TextualInversionConfig(DiffusionConfig):
    placeholder_token: str = "<placeholder>"  # the learnt word
    keep_class_noun: bool = False  # False: "<placeholder>"; True: "<placeholder> dog" (see module docs)
    learning_rate: float = 5e-4  # before scaling
    scale_lr: bool = True  # x batch size x grad accumulation: 2e-3 effective (the release's --scale_lr)
    steps: int = 3000  # optimizer steps (each accumulates `grad_accumulation` micro-batches)
    batch_size: int = 1
    grad_accumulation: int = 4
    max_grad_norm: float | None = None  # the release does not clip gradients
    flip_probability: float = 0.5  # random horizontal flip of the subject's photos
    # Speed only: a step's `grad_accumulation` micro-batches go through the networks as one
    # batch. Same random draws, same gradient (the mean of equal-size micro-batch means is
    # the batch mean; SD has no batch-coupled layer); on an H100 the batch-1 calls leave
    # most of the GPU idle.
    fuse_micro_batches: bool = True

    def effective_learning_rate(self) -> float:
        if not self.scale_lr:
            return self.learning_rate
        return self.learning_rate * self.batch_size * self.grad_accumulation

    def fused_micro_batches(self) -> int:
        """How many micro-batches one network call carries."""
        return self.grad_accumulation if self.fuse_micro_batches else 1


class TextualInversionModel(DiffusionModel):
    def __init__(self, components: DiffusionComponents, config: TextualInversionConfig, vectors: torch.Tensor):
        self.vectors = vectors  # fp32 copy of the trained embedding (what is saved)
        super().__init__(components, components.unet, config, count_parameters([vectors]))

    def save(self, artifact_dir: Path) -> None:
        save_embeds(artifact_dir, self.config.placeholder_token, self.vectors)


class TextualInversion(DiffusionMethod):
    name = "textual_inversion"
    version = "1"
    Config = TextualInversionConfig
    description = "Textual Inversion: one learnt token embedding (Stable Diffusion 1.5)"

    def subject_phrase(self, class_noun: str) -> str:
        token = self.config.placeholder_token
        return f"{token} {class_noun}" if self.config.keep_class_noun else token

    def fit_subject(self, base: DiffusionComponents, subject: Subject, ctx: CellContext) -> TextualInversionModel:
        config = self.config
        dtype = compute_dtype(config, ctx.device)
        token_id = add_token(base, config.placeholder_token)
        initial = initial_vector(base, subject.class_noun, f"class noun of subject {subject.name}")
        cast([base.text_encoder, base.vae, base.unet], dtype)  # all frozen; the new vector stays fp32
        set_memory_format([base.unet, base.vae], config.channels_last, ctx.device)
        spliced = splice_in(base, [token_id], initial)
        pixels = pixel_batch(subject.load_images(), config.resolution, Image.Resampling.BICUBIC, ctx.device)
        instance = LatentPool(base.vae, pixels, with_flips=config.flip_probability > 0)
        params = [spliced.vectors]
        optimizer = make_optimizer(params, config.effective_learning_rate(), config, ctx.device)
        micro_step = self._micro_step(base, subject, instance, ctx)
        fused = config.fused_micro_batches()
        train(micro_step, params, optimizer, config.steps, ctx, dtype,
              grad_accumulation=config.grad_accumulation // fused, max_grad_norm=config.max_grad_norm)
        vectors = splice_out(base, spliced)
        return TextualInversionModel(base, config, vectors)

    def _micro_step(self, base: DiffusionComponents, subject: Subject, instance: LatentPool, ctx: CellContext):
        config = self.config
        rng = random.Random(ctx.fit_seed)
        generator = torch.Generator(device=ctx.device).manual_seed(ctx.fit_seed)
        noise_scheduler = base.noise_scheduler()
        order = ShuffledOrder(instance.count, rng)
        phrase = self.subject_phrase(subject.class_noun)
        template_ids = tokenize(base.tokenizer, [t.format(phrase) for t in OBJECT_TEMPLATES], ctx.device)
        # Small batches: a step is hundreds of small kernels, so on CUDA both network calls
        # (text encoder, for the placeholder's gradient, and UNet) replay as CUDA graphs.
        text_states = accelerate(TextStates(base.text_encoder), config, ctx.device, training=True,
                                 allow_compile=False)
        predict_noise = accelerate(NoisePrediction(base.unet), config, ctx.device, training=True)

        def draw_micro_batch() -> tuple[torch.Tensor, ...]:
            """One micro-batch's random draws, in the release's order: latents, ids, noise, timesteps."""
            picks = [order.next() for _ in range(config.batch_size)]
            flips = [rng.random() < config.flip_probability for _ in picks]
            templates = [rng.randrange(len(OBJECT_TEMPLATES)) for _ in picks]
            latents = instance.sample(picks, generator, flips)
            ids = torch.cat([template_ids[t:t + 1] for t in templates])
            return (latents, ids, *draw_noise(latents, noise_scheduler, generator))

        def micro_step() -> dict[str, torch.Tensor]:
            parts = [draw_micro_batch() for _ in range(config.fused_micro_batches())]
            latents, ids, noise, timesteps = (torch.cat(column) for column in zip(*parts))
            error = prediction_error(predict_noise, noise_scheduler, latents, noise, timesteps, text_states(ids))
            return {"loss": error.mean()}

        return micro_step

    def load_artifact(self, base: DiffusionComponents, artifact_dir: Path, ctx: CellContext) -> TextualInversionModel:
        dtype = compute_dtype(self.config, ctx.device)
        _token, vectors = apply_embeds(base, Path(artifact_dir))
        cast([base.text_encoder, base.vae, base.unet], dtype)
        return TextualInversionModel(base, self.config, vectors)
