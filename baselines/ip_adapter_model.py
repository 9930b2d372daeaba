"""IP-Adapter through diffusers: the released adapter and its CLIP image encoder loaded into a
family pipeline (`load_ip_adapter`), the subject's photos encoded once, and images sampled
with those embeddings. See `baselines.ip_adapter` for the method.

The image encoder is loaded here and registered with the pipeline before
`load_ip_adapter` runs (which then keeps it), so a local encoder folder, the release's and
the random-init stand-ins all take the same path; the adapter file itself is always read
by `load_ip_adapter` from a folder laid out like the release. With `weights: tiny` or
`random` that folder is built in code (random adapter weights in the release's
safetensors keys, a random CLIP vision tower) into the shared cache, once per base model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from baselines.family_sampling import FamilyImages
from baselines.training import compute_dtype
from varbench.cache import get_or_build
from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.families import (
    TINY_VERSION,
    FamilyModel,
    building_on,
    expected_warnings_off,
    ip_adapter_tensors,
    tiny_image_encoder,
)
from varbench.weights import resolve_snapshot

EMBEDS_FILE = "reference_embeds.safetensors"
STAND_IN_ENCODER = "image_encoder"  # the image encoder's folder inside a built stand-in
# The releases' CLIP vision towers (hidden, MLP, heads, layers, projection, activation):
# OpenCLIP ViT-H/14 (SD 1.5), ViT-bigG/14 (SDXL), OpenAI ViT-L/14 (FLUX).
FULL_ENCODERS = {"sd15": (1280, 5120, 16, 32, 1024, "gelu"), "sdxl": (1664, 8192, 16, 48, 1280, "gelu"),
                 "flux": (1024, 4096, 16, 24, 768, "quick_gelu")}


# --- loading the adapter ------------------------------------------------------------------------

def load_adapter(model: FamilyModel, config: Any, release: Any, ctx: CellContext) -> None:
    """Put `release`'s adapter (or its stand-in) into `model.pipeline`, at `config.scale`."""
    from transformers import CLIPVisionModelWithProjection

    folder, encoder_folder = adapter_folders(model, config, release, ctx)
    dtype = compute_dtype(config, ctx.device)
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_folder), dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the IP-Adapter image encoder: {first_line(err)}", str(encoder_folder),
                        "Point image_encoder at a CLIP vision model folder (config.json, model.safetensors).") from None
    pipeline = model.pipeline
    pipeline.register_modules(image_encoder=encoder.to(ctx.device).eval().requires_grad_(False))
    try:
        with expected_warnings_off():
            load_weights(pipeline, model.family.name, folder, release.weight_name, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load the IP-Adapter weights: {first_line(err)}", str(folder / release.weight_name),
                        f"Use the release's file ({release.repo_id}/{release.weight_name}) for this base model."
                        ) from None
    pipeline.set_ip_adapter_scale(config.scale)


def load_weights(pipeline: Any, family: str, folder: Path, weight_path: str, dtype: torch.dtype) -> None:
    """`load_ip_adapter` on the adapter file at `folder/weight_path` (the image encoder is
    already registered, so the loader keeps it)."""
    subfolder, _, weight_name = weight_path.rpartition("/")
    if family == "flux":
        pipeline.load_ip_adapter(str(folder), weight_name=weight_name, subfolder=subfolder,
                                 image_encoder_pretrained_model_name_or_path=None, image_encoder_dtype=dtype)
    else:
        pipeline.load_ip_adapter(str(folder), subfolder=subfolder, weight_name=weight_name, image_encoder_folder=None)


def adapter_folders(model: FamilyModel, config: Any, release: Any, ctx: CellContext) -> tuple[Path, Path]:
    """(folder laid out like the release, image encoder folder) for this config."""
    if config.weights != "pretrained":
        folder = stand_in(model, config, release, ctx)
        return folder, folder / STAND_IN_ENCODER
    folder = Path(config.adapter).expanduser() if config.adapter else \
        resolve_snapshot(release.repo_id, release.revision, allow_patterns=[release.weight_name])
    if not (folder / release.weight_name).is_file():
        raise UserError(f"IP-Adapter folder lacks {release.weight_name}", str(folder),
                        f"Lay it out like {release.repo_id} or leave adapter unset to use the release.")
    if config.image_encoder:
        return folder, Path(config.image_encoder).expanduser()
    encoder = resolve_snapshot(release.encoder_repo, release.encoder_revision, allow_patterns=list(release.files()))
    return folder, encoder / release.encoder_folder


def stand_in(model: FamilyModel, config: Any, release: Any, ctx: CellContext) -> Path:
    """A random-init adapter for `model` in the release's layout (tiny: a toy image encoder;
    random: the release's encoder architecture), built once into the shared cache."""
    dtype = compute_dtype(config, ctx.device)
    key = {"format": 1, "base_model": model.source, "weights": config.weights, "tiny_version": TINY_VERSION,
           "file": release.weight_name, "dtype": str(dtype)}

    def build(folder: Path) -> None:
        if config.weights == "tiny":
            encoder = tiny_image_encoder()
        else:
            with building_on("cpu", dtype):  # (ViT-bigG: 1.8B parameters, never held in fp32)
                encoder = full_image_encoder(model.family.name)
        encoder.to(dtype).save_pretrained(str(folder / STAND_IN_ENCODER), safe_serialization=True)
        tensors = ip_adapter_tensors(model, encoder.config.projection_dim)
        (folder / release.weight_name).parent.mkdir(parents=True, exist_ok=True)
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(folder / release.weight_name))

    return get_or_build(ctx.cache_dir, "ip_adapter_stand_in", key, build)


def full_image_encoder(family: str) -> Any:
    """The release's CLIP vision tower at full size, random weights (rehearsals)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, mlp, heads, layers, projection, act = FULL_ENCODERS[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=hidden, intermediate_size=mlp, num_attention_heads=heads, num_hidden_layers=layers,
            image_size=224, patch_size=14, projection_dim=projection, hidden_act=act))


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# --- encoding the references (the "fit") ----------------------------------------------------------

def encode_references(model: FamilyModel, subject: Subject, config: Any) -> IPAdapterModel:
    """The subject's first `num_references` photos through the adapter's image encoder, with
    the negative embeddings the pipeline would pair them with (SD 1.5, SDXL: zeros; FLUX: a
    black image's, as its pipeline makes when none is given)."""
    pipeline, device = model.pipeline, model.device
    references = subject.load_images()[:config.num_references]
    if model.family.name == "flux":
        black = np.zeros((config.resolution, config.resolution, 3), dtype=np.uint8)
        positive = pipeline.prepare_ip_adapter_image_embeds([references], None, device, 1)[0]
        negative = pipeline.prepare_ip_adapter_image_embeds([black], None, device, 1)[0]
    else:
        both = pipeline.prepare_ip_adapter_image_embeds([references], None, device, 1, True)[0]
        negative, positive = both.chunk(2)
    return IPAdapterModel(pipeline, config, positive, negative)


class IPAdapterModel(FamilyImages):
    """The pipeline with its IP-Adapter, sampling with the stored reference embeddings."""

    def __init__(self, pipeline: Any, config: Any, positive: torch.Tensor, negative: torch.Tensor):
        super().__init__(pipeline, config)
        self.positive, self.negative = positive, negative  # (1, references, dim) / (1, n, dim)
        self.flux = type(pipeline).__name__ == "FluxPipeline"

    @property
    def trainable_parameters(self) -> int:
        return 0  # tuning-free: nothing was trained

    def call_options(self, count: int) -> dict[str, Any]:
        if self.flux:
            options = {"ip_adapter_image_embeds": [self.positive],
                       "negative_ip_adapter_image_embeds": [self.negative],
                       "true_cfg_scale": self.config.true_cfg_scale}
            if self.config.true_cfg_scale > 1:
                options["negative_prompt"] = [""] * count
            return options
        guided = self.config.guidance_scale > 1  # the pipeline expects the negative half first
        return {"ip_adapter_image_embeds": [torch.cat([self.negative, self.positive]) if guided else self.positive]}

    def save(self, artifact_dir: Path) -> None:
        save_file({"image_embeds": self.positive.contiguous(), "negative_image_embeds": self.negative.contiguous()},
                  str(Path(artifact_dir) / EMBEDS_FILE))


def load_artifact(model: FamilyModel, artifact_dir: Path, config: Any) -> IPAdapterModel:
    from safetensors import SafetensorError

    path = artifact_dir / EMBEDS_FILE
    if not path.is_file():
        raise UserError(f"IP-Adapter artifact has no {EMBEDS_FILE}", str(artifact_dir),
                        "Delete the artifact folder so the references are encoded again.")
    try:
        tensors = load_file(str(path), device=str(model.device))
        positive, negative = tensors["image_embeds"], tensors["negative_image_embeds"]
    except (OSError, KeyError, SafetensorError) as err:
        raise UserError(f"cannot read the reference embeddings: {first_line(err)}", str(path),
                        "Delete the artifact folder so the references are encoded again.") from None
    return IPAdapterModel(model.pipeline, config, positive, negative)

