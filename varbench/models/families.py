"""The diffusion model families of the LoRA and IP-Adapter baselines: Stable Diffusion 1.5,
SDXL base 1.0, Stable Diffusion 3 Medium and FLUX.1-dev, each as a diffusers pipeline.

A family is its hub release (repository, pinned commit, the files fetched, whether the
repository is gated) and its pipeline class. `load_family(...)` returns a `FamilyModel`
(the pipeline with its shipped scheduler, the scheduler config, what was loaded) from:
  - the release on the hub at its pinned commit, through the Hugging Face cache
    (`varbench.weights.resolve_snapshot`; SD 1.5 through `varbench.models.diffusion`, which
    also checks its weight files' sha256), or a local folder in diffusers layout;
  - "tiny": the same classes at toy size, random-initialised from a fixed seed and built
    in code (no download), for tests and the `smoke_lora` protocol;
  - "random": the real architecture at full size with random weights (`varbench run
    --backbones random`: real shapes and FLOPs, nothing to download).
Weights are read from safetensors only.

The gated releases (SD3 Medium, FLUX.1-dev) download only for an account that accepted
the licence on the model page and is logged in (`hf auth login`); a refused or missing
download is one error line saying so.

torch, diffusers and transformers are imported where a model is built: method configs
read `FAMILIES` while a protocol is planned.
"""
from __future__ import annotations

import inspect
import json
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from varbench.errors import UserError
from varbench.models.diffusion import PIPELINE_FILES, SD15_ID, SD15_REVISION, TINY_CORPUS

if TYPE_CHECKING:
    import torch

TINY_VERSION = 1  # bump when a tiny architecture below changes (it is part of cache keys)
TINY_SEED = 0


@dataclass(frozen=True)
class Family:
    name: str  # the config value: "sd15", "sdxl", "sd3", "flux"
    title: str
    repo_id: str
    revision: str | None  # the pinned commit of repo_id
    pipeline: str  # the diffusers pipeline class
    denoiser: str  # the network the pipeline denoises with: "unet" or "transformer"
    files: tuple[str, ...]  # what is fetched from the repository (no fp16 copies, no single-file checkpoints)
    gated: bool = False

    def pinned(self, repo_id: str) -> str | None:
        return self.revision if repo_id == self.repo_id else None

    def gate_hint(self) -> str:
        return (f"{self.repo_id} is gated: accept its licence at https://huggingface.co/{self.repo_id} "
                "and log in with `hf auth login`")


def _single(folder: str, weights: str = "model") -> tuple[str, ...]:
    return f"{folder}/config.json", f"{folder}/{weights}.safetensors"


def _sharded(folder: str, weights: str = "model") -> tuple[str, ...]:
    # (shards named "<weights>-00001-of-0000N"; fp16 copies, "<weights>.fp16-...", are not fetched)
    return (f"{folder}/config.json", f"{folder}/{weights}.safetensors.index.json",
            f"{folder}/{weights}-*-of-*.safetensors")


FAMILIES: dict[str, Family] = {
    family.name: family for family in (
        Family("sd15", "Stable Diffusion 1.5", SD15_ID, SD15_REVISION, "StableDiffusionPipeline", "unet",
               tuple(PIPELINE_FILES)),
        # Revisions: the repositories' main-branch heads, as pinned by public code that
        # downloads them (hub snapshot folders); the hub itself cannot be reached from here.
        Family("sdxl", "SDXL base 1.0", "stabilityai/stable-diffusion-xl-base-1.0",
               "462165984030d82259a11f4367a4eed129e94a7b", "StableDiffusionXLPipeline", "unet",
               ("model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*", *_single("text_encoder"),
                *_single("text_encoder_2"), *_single("unet", "diffusion_pytorch_model"),
                *_single("vae", "diffusion_pytorch_model"))),
        Family("sd3", "Stable Diffusion 3 Medium", "stabilityai/stable-diffusion-3-medium-diffusers",
               "ea42f8cef0f178587cf766dc8129abd379c90671", "StableDiffusion3Pipeline", "transformer",
               ("model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*", "tokenizer_3/*",
                *_single("text_encoder"), *_single("text_encoder_2"), *_sharded("text_encoder_3"),
                *_single("transformer", "diffusion_pytorch_model"), *_single("vae", "diffusion_pytorch_model")),
               gated=True),
        Family("flux", "FLUX.1-dev", "black-forest-labs/FLUX.1-dev", "3de623fc3c33e44ffbe2bad470d0f45bccf2eb21",
               "FluxPipeline", "transformer",
               ("model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*", *_single("text_encoder"),
                *_sharded("text_encoder_2"), *_sharded("transformer", "diffusion_pytorch_model"),
                *_single("vae", "diffusion_pytorch_model")), gated=True),
    )
}


# --- which family a config names (no model code) -------------------------------------------

def family_of(base_model: str, family: str | None, where: str) -> Family:
    """The family of `base_model` (a family name, a hub id, a local folder); `family`
    names it where the base model alone cannot (another hub id, a folder)."""
    named = FAMILIES.get(base_model) or next((f for f in FAMILIES.values() if f.repo_id == base_model), None)
    if family is not None and family not in FAMILIES:
        raise UserError(f"family is {family!r}", f"{where} 'family'", f"Use one of: {', '.join(FAMILIES)}.")
    if named is not None and family is not None and named.name != family:
        raise UserError(f"base_model {base_model!r} is {named.title}, but family says {family!r}", where,
                        "Drop 'family' (it is read from base_model) or make them agree.")
    if named is None and family is None:
        raise UserError(f"base_model {base_model!r} is not one of the known releases, so its family is unknown",
                        f"{where} 'base_model'", f"Use one of: {', '.join(FAMILIES)}, or add family: "
                        f"{'|'.join(FAMILIES)} for another hub id or a local diffusers folder.")
    return named or FAMILIES[family]


def is_local(base_model: str) -> bool:
    """A local folder rather than a release name or a hub id."""
    return base_model not in FAMILIES and (base_model.startswith((".", "/", "~"))
                                           or Path(base_model).expanduser().exists())


def repo_and_revision(family: Family, base_model: str, revision: str | None) -> tuple[str, str | None]:
    """The hub repository and commit `base_model` names (revision None: the release's pin)."""
    repo = family.repo_id if base_model == family.name else base_model
    return repo, revision if revision is not None else family.pinned(repo)


def snapshot_need(family: Family, base_model: str, revision: str | None) -> tuple[str, Any, Any]:
    """The preflight row of a pretrained base model: (label, Snapshot, local folder or None)."""
    from varbench.weights import Snapshot

    if is_local(base_model):
        return f"{base_model} ({family.title}, diffusers folder)", Snapshot(base_model, None, ()), base_model
    repo, pinned = repo_and_revision(family, base_model, revision)
    label = f"{repo} (diffusers pipeline)"  # SD 1.5: the same row as the other baselines'
    if family.gated:
        label = f"{repo} (diffusers pipeline; gated: accept its licence on the model page, then hf auth login)"
    return label, Snapshot(repo, pinned, family.files), None


# --- the loaded model -----------------------------------------------------------------------

@dataclass
class FamilyModel:
    """A family's diffusers pipeline (shipped scheduler) and what it was loaded from."""

    family: Family
    pipeline: Any
    scheduler_config: dict[str, Any]  # the shipped scheduler's (training noise schedule, samplers)
    source: str  # "repo@revision", an absolute folder, "sdxl-tiny-v1-seed0", "flux-random-seed0"
    random_init: bool = False

    @property
    def denoiser(self) -> Any:
        return getattr(self.pipeline, self.family.denoiser)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    def text_encoders(self) -> list[Any]:
        return [module for name in ("text_encoder", "text_encoder_2", "text_encoder_3")
                if (module := getattr(self.pipeline, name, None)) is not None]


def load_family(family: Family, base_model: str, revision: str | None, weights: str, device: torch.device | str,
                dtype: torch.dtype) -> FamilyModel:
    """`family`'s pipeline on `device`: pretrained weights (the release, a hub id or a local
    folder), or random-init parts ("tiny", "random"); frozen, in eval mode, in `dtype`."""
    if weights == "tiny":
        model = tiny_family(family)
    elif weights == "random":
        model = random_family(family, device, dtype)
    elif family.name == "sd15":
        model = _load_sd15(base_model, revision)
    else:
        model = _load_pipeline(family, base_model, revision, dtype)
    from varbench.models.diffusion import cast_module

    for module in model.pipeline.components.values():
        if hasattr(module, "parameters"):
            module.requires_grad_(False).eval()
            cast_module(module, dtype)
    model.pipeline.to(device)
    model.pipeline.set_progress_bar_config(disable=True)
    return model


def _load_sd15(base_model: str, revision: str | None) -> FamilyModel:
    from varbench.models.diffusion import load_components

    repo = SD15_ID if base_model == "sd15" else base_model
    components = load_components(repo, revision if revision is not None else FAMILIES["sd15"].pinned(repo))
    return _sd15_model(components)


def _sd15_model(components: Any) -> FamilyModel:
    """SD 1.5 parts (`varbench.models.diffusion.DiffusionComponents`) as a pipeline with the
    release's PNDM scheduler."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    config = {"skip_prk_steps": True, **components.scheduler_config}  # the SD 1.5 scheduler_config.json
    scheduler = PNDMScheduler.from_config(config)
    pipeline = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    return FamilyModel(FAMILIES["sd15"], pipeline, dict(scheduler.config), components.source,
                       components.random_init)


def _load_pipeline(family: Family, base_model: str, revision: str | None, dtype: torch.dtype) -> FamilyModel:
    import diffusers
    from safetensors import SafetensorError

    folder, source = family_folder(family, base_model, revision)
    options: dict[str, Any] = {"add_watermarker": False} if family.name == "sdxl" else {}
    try:
        pipeline = getattr(diffusers, family.pipeline).from_pretrained(
            str(folder), dtype=dtype, use_safetensors=True, **options)
    except (OSError, ValueError, SafetensorError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot load {family.title}: {first_line}", str(folder),
                        f"Re-download the model ({family.repo_id}; safetensors weights are required).") from None
    return FamilyModel(family, pipeline, dict(pipeline.scheduler.config), source)


def family_folder(family: Family, base_model: str, revision: str | None) -> tuple[Path, str]:
    """The diffusers folder of `base_model` and a string naming what it is (cache keys)."""
    from varbench.weights import resolve_snapshot

    if is_local(base_model):
        folder = resolve_snapshot(base_model, None, local=base_model).resolve()
        check_pipeline_class(folder, family)
        return folder, str(folder)
    repo, pinned = repo_and_revision(family, base_model, revision)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise UserError(f"base_model {base_model!r} is neither an existing folder nor a hub id",
                        "method config 'base_model'", f"Use {family.name!r}, a hub id or a local diffusers folder.")
    try:
        folder = resolve_snapshot(repo, pinned, allow_patterns=list(family.files))
    except UserError as err:
        if not family.gated:
            raise
        raise UserError(f"{err.what} ({family.gate_hint()})", err.where, err.fix) from None
    return folder, f"{repo}@{pinned or 'main'}"


def check_pipeline_class(folder: Path, family: Family) -> None:
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError("model folder has no model_index.json", str(folder),
                        f"Point base_model at a {family.title} folder in diffusers layout (pipeline.save_pretrained).")
    found = json.loads(index.read_text()).get("_class_name")
    if found != family.pipeline:
        raise UserError(f"model folder holds a {found}, not a {family.pipeline}", str(folder),
                        f"Set family to the folder's family, or point base_model at a {family.title} folder.")


@contextmanager
def expected_warnings_off():
    """diffusers' loaders warn about what is expected here (the frozen text encoders get no
    LoRA keys; an IP-Adapter load moves the UNet with an empty fp32 keep-list): errors only
    inside the block."""
    from diffusers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)


# --- samplers -------------------------------------------------------------------------------

SAMPLERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler", "shipped": None}  # diffusers classes


def sampling_scheduler(model: FamilyModel, sampler: str) -> Any:
    """The scheduler `sampler` names, over the release's noise schedule ("shipped": the
    release's own: PNDM for SD 1.5, Euler for SDXL, flow-matching Euler for SD3 and FLUX)."""
    import diffusers

    shipped = type(model.pipeline.scheduler).from_config(model.scheduler_config)
    if SAMPLERS[sampler] is None:
        return shipped
    return getattr(diffusers, SAMPLERS[sampler]).from_config(shipped.config)


# --- random-init families: tiny (tests, smoke) and full size (rehearsals) ---------------------

def tiny_family(family: Family, seed: int = TINY_SEED) -> FamilyModel:
    """Toy-size parts of `family`, identical on every machine for a given seed: the real
    classes (and SDXL's added conditioning, FLUX's guidance embedding and latent packing,
    SD3's three text encoders) at widths of 32-64, 64 px images -> 8x8 latents.
    SD 1.5 is `varbench.models.diffusion.tiny_components` (shared with DreamBooth)."""
    if family.name == "sd15":
        from varbench.models.diffusion import tiny_components

        return _sd15_model(tiny_components(seed))
    source = f"{family.name}-tiny-v{TINY_VERSION}-seed{seed}"
    return _random_family(family, _PARTS[family.name](full=False), seed, source)


def random_family(family: Family, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> FamilyModel:
    """`family`'s full architecture with random weights, built on `device` in `dtype` (FLUX's
    12B-parameter transformer never passes through host memory in fp32)."""
    if family.name == "sd15":
        from varbench.models.diffusion import sd15_components

        return _sd15_model(sd15_components(seed))
    return _random_family(family, _PARTS[family.name](full=True), seed, f"{family.name}-random-seed{seed}",
                          building=lambda: building_on(device, dtype))


def _random_family(family: Family, parts: dict[str, Any], seed: int, source: str,
                   building: Any = nullcontext) -> FamilyModel:
    """The pipeline of `parts`: models are given as functions, built here in order (inside
    `building()`); tokenizers and schedulers as they are (their tables stay fp32, on the host)."""
    import diffusers
    import torch

    options = {"add_watermarker": False} if family.name == "sdxl" else {}
    # Seed a forked RNG so building parts never disturbs the caller's random state.
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        built = {}
        for name, part in parts.items():
            if inspect.isfunction(part):
                with building():
                    part = part()
                part.requires_grad_(False).eval()
            built[name] = part
    pipeline = getattr(diffusers, family.pipeline)(**built, **options)
    return FamilyModel(family, pipeline, dict(pipeline.scheduler.config), source, random_init=True)


@contextmanager
def building_on(device: torch.device | str, dtype: torch.dtype):
    """New tensors default to `device` and `dtype` inside the block (full-size random init)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _sdxl_parts(full: bool) -> dict[str, Any]:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    from varbench.models.diffusion import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    # CLIP ViT-L (768) and OpenCLIP ViT-bigG (1280); the UNet reads both states side by side
    # and bigG's pooled projection plus six size/crop numbers as its added conditioning.
    first = (768, 3072, 12, 12, 768) if full else (32, 64, 4, 2, 32)
    second = (1280, 5120, 20, 32, 1280) if full else (32, 64, 4, 2, 32)
    time_dim = 256 if full else 8
    unet = dict(
        sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                                   "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ) if full else dict(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    return dict(
        tokenizer=tokenizer, tokenizer_2=tokenizer,
        text_encoder=lambda: _clip_text(tokenizer, *first, projection=False, act="quick_gelu"),
        text_encoder_2=lambda: _clip_text(tokenizer, *second, projection=True, act="gelu"),
        unet=lambda: UNet2DConditionModel(
            in_channels=4, out_channels=4, use_linear_projection=True, norm_num_groups=32,
            cross_attention_dim=first[0] + second[0], addition_embed_type="text_time",
            addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=second[4] + 6 * time_dim, **unet),
        vae=lambda: _vae(full, latent_channels=4, scaling_factor=0.13025, shift_factor=None, quant_conv=True),
        scheduler=EulerDiscreteScheduler(  # the release's scheduler/scheduler_config.json
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="epsilon", timestep_spacing="leading", steps_offset=1),
    )


def _sd3_parts(full: bool) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    from varbench.models.diffusion import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    t5_tokenizer = build_tiny_t5_tokenizer()
    # Two projected CLIP encoders (pooled 768 + 1280 = 2048) and T5; the CLIP states
    # (768 + 1280) are zero-padded to T5's width (4096), the transformer's context width.
    first = (768, 3072, 12, 12, 768) if full else (32, 64, 4, 2, 32)
    second = (1280, 5120, 20, 32, 1280) if full else (32, 64, 4, 2, 32)
    t5 = (4096, 10240, 64, 24) if full else (64, 64, 4, 1)
    transformer = dict(sample_size=128, num_layers=24, attention_head_dim=64, num_attention_heads=24,
                       caption_projection_dim=1536, pos_embed_max_size=192) if full else \
        dict(sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
             pos_embed_max_size=16)
    return dict(
        tokenizer=tokenizer, tokenizer_2=tokenizer, tokenizer_3=t5_tokenizer,
        text_encoder=lambda: _clip_text(tokenizer, *first, projection=True, act="quick_gelu"),
        text_encoder_2=lambda: _clip_text(tokenizer, *second, projection=True, act="gelu"),
        text_encoder_3=lambda: _t5(t5_tokenizer, *t5),
        transformer=lambda: SD3Transformer2DModel(patch_size=2, in_channels=16, out_channels=16,
                                                  joint_attention_dim=t5[0],
                                                  pooled_projection_dim=first[4] + second[4], **transformer),
        vae=lambda: _vae(full, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
    )


def _flux_parts(full: bool) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from varbench.models.diffusion import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    t5_tokenizer = build_tiny_t5_tokenizer()
    # CLIP ViT-L's pooled output (768) and T5's states (4096) condition the transformer;
    # FLUX.1-dev embeds the guidance scale (guidance distillation).
    clip = (768, 3072, 12, 12, 768) if full else (32, 64, 4, 2, 32)
    t5 = (4096, 10240, 64, 24) if full else (32, 64, 4, 1)
    transformer = dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                       axes_dims_rope=(16, 56, 56)) if full else \
        dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, axes_dims_rope=(4, 6, 6))
    return dict(
        tokenizer=tokenizer, tokenizer_2=t5_tokenizer,
        text_encoder=lambda: _clip_text(tokenizer, *clip, projection=False, act="quick_gelu"),
        text_encoder_2=lambda: _t5(t5_tokenizer, *t5),
        # 16 latent channels packed 2x2 into 64 per token
        transformer=lambda: FluxTransformer2DModel(patch_size=1, in_channels=64, joint_attention_dim=t5[0],
                                                   pooled_projection_dim=clip[0], guidance_embeds=True,
                                                   **transformer),
        vae=lambda: _vae(full, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False),
        scheduler=FlowMatchEulerDiscreteScheduler(  # the release's scheduler/scheduler_config.json
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096),
    )


_PARTS = {"sdxl": _sdxl_parts, "sd3": _sd3_parts, "flux": _flux_parts}


def _clip_text(tokenizer: Any, hidden: int, intermediate: int, heads: int, layers: int, projection_dim: int,
               projection: bool, act: str) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408 if hidden >= 768 else len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_attention_heads=heads, num_hidden_layers=layers, projection_dim=projection_dim, hidden_act=act,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _t5(tokenizer: Any, d_model: int, d_ff: int, heads: int, layers: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=32128 if d_model >= 4096 else len(tokenizer), d_model=d_model, d_ff=d_ff, d_kv=d_model // heads,
        num_heads=heads, num_layers=layers, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        layer_norm_epsilon=1e-6, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=0, is_encoder_decoder=False))


def _vae(full: bool, latent_channels: int, scaling_factor: float, shift_factor: float | None,
         quant_conv: bool) -> Any:
    from diffusers import AutoencoderKL

    size = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                sample_size=1024) if full else \
        dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=quant_conv,
                         use_post_quant_conv=quant_conv, **size)


def build_tiny_t5_tokenizer() -> Any:
    """An offline T5 (Unigram, SentencePiece-style "▁" word starts) tokenizer with a small
    vocabulary: the special tokens, every printable ASCII character with and without a word
    start, and the whole words of the tiny CLIP tokenizer's corpus (preferred: a higher
    score), so prompts tokenize deterministically into short sequences."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    characters = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    pieces += [(f"▁{c}", -8.0) for c in characters] + [(c, -10.0) for c in characters]
    pieces += [(f"▁{word}", -3.0) for word in dict.fromkeys(TINY_CORPUS)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


# --- a stand-in IP-Adapter (tests, smoke) ------------------------------------------------------

def tiny_image_encoder(seed: int = TINY_SEED) -> Any:
    """A toy CLIP vision tower with a projection (what IP-Adapter encodes references with)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, image_size=32,
            patch_size=8, projection_dim=32)).eval()


def ip_adapter_tensors(model: FamilyModel, image_dim: int, seed: int = TINY_SEED) -> dict[str, Any]:
    """Random IP-Adapter weights for `model`'s denoiser, keyed as the released files are:
    h94/IP-Adapter for the UNets (`image_proj.proj`, `image_proj.norm`, and per
    cross-attention layer, numbered 1, 3, 5, ... in processor order, `ip_adapter.N.to_k_ip`
    / `to_v_ip`, no bias), XLabs-AI/flux-ip-adapter for FLUX (`ip_adapter_proj_model.*`,
    and per double-stream block `double_blocks.N.processor.ip_adapter_double_stream_{k,v}_proj`
    with bias). The image projection makes 4 tokens of the context width per reference."""
    import torch

    tokens = 4
    denoiser = model.denoiser
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.05

    if model.family.name == "flux":
        width, inner = denoiser.config.joint_attention_dim, denoiser.inner_dim
        prefix, tensors = "ip_adapter_proj_model", {}
        for index in range(len(denoiser.transformer_blocks)):
            for kv in ("k", "v"):
                name = f"double_blocks.{index}.processor.ip_adapter_double_stream_{kv}_proj"
                tensors[f"{name}.weight"], tensors[f"{name}.bias"] = normal(inner, width), normal(inner)
    else:
        width = denoiser.config.cross_attention_dim
        prefix, tensors = "image_proj", {}
        cross = [name for name in denoiser.attn_processors if not name.endswith("attn1.processor")]
        for index, name in enumerate(cross):
            hidden = _hidden_size(denoiser, name)
            for kv in ("k", "v"):
                tensors[f"ip_adapter.{2 * index + 1}.to_{kv}_ip.weight"] = normal(hidden, width)
    tensors |= {f"{prefix}.proj.weight": normal(tokens * width, image_dim),
                f"{prefix}.proj.bias": normal(tokens * width),
                f"{prefix}.norm.weight": 1 + normal(width), f"{prefix}.norm.bias": normal(width)}
    return tensors


def _hidden_size(unet: Any, processor_name: str) -> int:
    """The width of the UNet block a cross-attention processor sits in."""
    channels = list(unet.config.block_out_channels)
    if processor_name.startswith("mid_block"):
        return channels[-1]
    block = int(processor_name.split(".")[1])
    return (channels[::-1] if processor_name.startswith("up_blocks") else channels)[block]
