"""Fitting one subject: prepare the data, the teacher and the optimizers, then iterate.

Order matters: the storage plan is applied first (training.prepare_storage), then the
teacher copies the tuned tensors' pretrained values (and samples its pool, if any),
then training changes them. Everything random derives from `ctx.fit_seed`. The teacher
samples through the speed layer as `speed_options(config, device, "teacher")` says.
The benchmark (bench.py) builds synthetic `TrainingData` and reuses `make_trainer`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from varbench.data.subject import Subject
from varbench.method import CellContext
from varbench.methods.arbooth.base import ARBoothBase, speed_options, teacher_sampling
from varbench.methods.arbooth.config import ARBoothConfig
from varbench.methods.arbooth.data import PromptFeatures, encode_latents, pixel_batch, prior_prompt, training_prompt
from varbench.methods.arbooth.lora import LowRankUpdate, add_adapters
from varbench.methods.arbooth.tuned_layers import trains_identifier
from varbench.methods.arbooth.model import ARBoothModel, identifier_shape, tuned_tensor_names
from varbench.methods.arbooth.teacher import OnTheFly, Pool, Teacher, build_pool, frozen_twin, pool_key
from varbench.methods.arbooth.training import NoClock, Trainer, TrainingData, prepare_storage, uses_amp
from varbench.models.infinity.fast import accelerate
from varbench.models.infinity.schedule import ScaleSchedule
from varbench.models.infinity.transformer import Condition, Infinity
from varbench.seeding import seed_everything


def fit_subject(base: ARBoothBase, subject: Subject, config: ARBoothConfig, ctx: CellContext,
                subject_phrase: str) -> ARBoothModel:
    """Personalize `base` (modified in place) to `subject`; see the module docstring."""
    device = torch.device(ctx.device)
    seed_everything(ctx.fit_seed)  # drop path draws from torch's global generator
    model = base.pipeline.model
    tuned = tuned_tensor_names(model, config)
    prepare_storage(model, tuned, config, device)
    data = prepare_data(base, subject, config, ctx, subject_phrase, tuned)
    adapters = add_adapters(model, config, ctx.fit_seed)  # after the teacher copied the base
    trainer = make_trainer(model, tuned, config, base.schedule, data, device, ctx.fit_seed, adapters=adapters)
    identifier = trainer.identifier
    model.train()
    try:
        for step in range(1, config.iterations + 1):
            ctx.fit_step(step, config.iterations, **trainer.iteration(step))
    finally:
        model.eval().requires_grad_(False)
    del trainer, data  # optimizer state, teacher copy and pool go before sampling storage
    return ARBoothModel.after_fit(base, config, tuned, identifier, adapters)


def make_trainer(model: Infinity, tuned: list[str], config: ARBoothConfig, schedule: ScaleSchedule,
                 data: TrainingData, device: torch.device, fit_seed: int, clock: NoClock | None = None,
                 adapters: Mapping[str, LowRankUpdate] | None = None) -> Trainer:
    """The trainer over `tuned` and the LoRA `adapters` (the only tensors left trainable
    here) and new zero identifier vectors."""
    identifier = torch.nn.Parameter(torch.zeros(identifier_shape(model, config), device=device),
                                    requires_grad=trains_identifier(config.layers))
    model.requires_grad_(False)
    params = [model.get_parameter(name).requires_grad_(True) for name in tuned]
    low_rank = [p.requires_grad_(True) for adapter in (adapters or {}).values() for p in (adapter.lora_A, adapter.lora_B)]
    return Trainer(config, model, identifier, params, schedule, data, device, fit_seed, clock, low_rank)


def prepare_data(base: ARBoothBase, subject: Subject, config: ARBoothConfig, ctx: CellContext,
                 subject_phrase: str, tuned: list[str]) -> TrainingData:
    """Subject latents, the two prompts (T5 once), the prior condition and the teacher."""
    pipeline, device = base.pipeline, torch.device(ctx.device)
    pixels = pixel_batch(subject.load_images(), config.resolution)
    latents = encode_latents(pipeline.vae, pixels, device)
    encoder = pipeline.text_encoder
    prompt = PromptFeatures.encode(encoder, training_prompt(subject_phrase), config.placeholder, device)
    prior = PromptFeatures.encode(encoder, prior_prompt(subject.class_noun), None, device)
    if config.offload_text_encoder and device.type == "cuda":
        encoder.to("cpu")  # 2.4 GB of T5-XL is not needed again until generation
    if config.offload_vae and device.type == "cuda":
        pipeline.vae.to("cpu")  # nor the tokenizer, which decodes only generated images
    condition = prior_condition(pipeline.model, prior, config.distill_batch_size, device)
    teacher = None
    if config.distill != "off":
        teacher = make_teacher(pipeline.model, tuned, config, base.schedule, prior, device, ctx.fit_seed,
                               ctx.cache_dir, base.identity, prior_prompt(subject.class_noun))
    return TrainingData(latents, prompt, condition, teacher)


def prior_condition(model: Infinity, prior: PromptFeatures, rows: int, device: torch.device) -> Condition:
    """The prior prompt's condition: constant, since top-level modules are never tuned."""
    with torch.no_grad():
        drop = torch.zeros(rows, dtype=torch.bool, device=device)
        return model.condition(prior.rows(rows).features, None, drop=drop).detach()


def make_teacher(model: Infinity, tuned: list[str], config: ARBoothConfig, schedule: ScaleSchedule,
                 prior: PromptFeatures, device: torch.device, fit_seed: int, cache_dir: Path,
                 base_identity: dict, prompt: str) -> OnTheFly | Pool:
    """The teacher source of `config`: fresh samples every iteration, or the shared pool."""
    copy_dtype = torch.bfloat16 if uses_amp(config, device) else None  # autocast runs bf16 anyway
    twin = frozen_twin(model, tuned, copy_dtype)
    accelerate(twin, speed_options(config, device, "teacher"))  # for the twin's lifetime
    teacher = Teacher(twin, schedule, teacher_sampling(config))
    rows = config.distill_batch_size
    if config.teacher_source == "on_the_fly":
        return OnTheFly(teacher, prior.rows(rows), rows, fit_seed)
    bf16 = uses_amp(config, device) or config.faithful("quirk_bf16_weights")
    precision = f"{device.type}-{'bf16' if bf16 else 'fp32'}"
    key = pool_key(base_identity, prompt, schedule, config.teacher_pool_size, config.teacher_seed,
                   teacher.sampling, model.config.lvl_embed_every_chunk, precision)
    samples = build_pool(teacher, prior.rows(1), key, cache_dir, rows, device)
    return Pool(samples, rows, fit_seed)
