"""IP-Adapter (Ye et al., 2023): tuning-free subject-driven generation through an image
prompt, on Stable Diffusion 1.5, SDXL base 1.0 or FLUX.1-dev, through diffusers'
`load_ip_adapter`.

Nothing is trained. The released adapter (an image projection that turns a CLIP image
embedding into 4 extra context tokens, and a second key/value projection per
cross-attention layer that attends to them, weighted by `scale`) is loaded into the
family pipeline; "fitting" encodes the subject's first `num_references` photos with the
adapter's CLIP image encoder (several photos: their tokens side by side, as diffusers
takes a list of images for one adapter). Prompts name the plain class ("a dog in the
snow"): the subject comes from the image prompt.

Weights: `h94/IP-Adapter` (`models/ip-adapter_sd15.safetensors` with its ViT-H/14 image
encoder; `sdxl_models/ip-adapter_sdxl.safetensors` with its ViT-bigG/14 one) and
`XLabs-AI/flux-ip-adapter` (`ip_adapter.safetensors`, with `openai/clip-vit-large-patch14`).

Artifact: `reference_embeds.safetensors`, the reference embeddings and the negative
(unconditional) ones the pipeline pairs them with, so a resumed cell reads them instead
of encoding again; `trainable_parameters` is 0 and the fit reports no steps (its time is
the encoding). The code is `baselines/ip_adapter_model.py`; defaults and their sources are
in baselines/README-lora.md.

This module imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baselines.families import FamilyConfig, FamilyMethod
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.models.families import is_local

if TYPE_CHECKING:
    from varbench.data.subject import Subject


@dataclass(frozen=True)
class AdapterRelease:
    """Where a family's released IP-Adapter and its image encoder live on the hub."""

    repo_id: str
    revision: str | None
    weight_name: str  # path of the adapter file in the repository
    encoder_repo: str
    encoder_revision: str | None
    encoder_folder: str  # the image encoder's folder in encoder_repo ("" for the top)

    def files(self) -> tuple[str, str]:
        prefix = f"{self.encoder_folder}/" if self.encoder_folder else ""
        return f"{prefix}config.json", f"{prefix}model.safetensors"


H94_REVISION = "018e402774aeeddd60609b4ecdb7e298259dc729"  # h94/IP-Adapter main, as pinned by public code
RELEASES = {
    "sd15": AdapterRelease("h94/IP-Adapter", H94_REVISION, "models/ip-adapter_sd15.safetensors",
                           "h94/IP-Adapter", H94_REVISION, "models/image_encoder"),
    "sdxl": AdapterRelease("h94/IP-Adapter", H94_REVISION, "sdxl_models/ip-adapter_sdxl.safetensors",
                           "h94/IP-Adapter", H94_REVISION, "sdxl_models/image_encoder"),
    # XLabs-AI/flux-ip-adapter: no commit hash could be found from here (no hub access and
    # none in public code), so it follows the default branch until one is pinned.
    "flux": AdapterRelease("XLabs-AI/flux-ip-adapter", None, "ip_adapter.safetensors",
                           "openai/clip-vit-large-patch14", "32bd64288804d66eefd0ccbe215aa642df71cc41", ""),
}

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": dict(resolution=512, sampler="shipped", sample_steps=50, guidance_scale=7.5, scale=0.5, true_cfg_scale=1.0),
    "sdxl": dict(resolution=1024, sampler="shipped", sample_steps=50, guidance_scale=5.0, scale=0.5,
                 true_cfg_scale=1.0),
    "flux": dict(resolution=1024, sampler="shipped", sample_steps=28, guidance_scale=3.5, scale=1.0,
                 true_cfg_scale=4.0),
}


@dataclass
class IPAdapterConfig(FamilyConfig):
    # a local folder laid out like the family's release repository (the adapter file at its
    # path there); None: the release from the hub at its pinned commit
    adapter: str | None = None
    image_encoder: str | None = None  # a local CLIP image encoder folder; None: the release's
    scale: float | None = None  # weight of the image-prompt attention (0: text only)
    num_references: int = 1  # the subject's first photos used as the image prompt
    true_cfg_scale: float | None = None  # FLUX: classifier-free guidance with an empty negative prompt (1: off)

    FAMILY_DEFAULTS = FAMILY_DEFAULTS


class IPAdapter(FamilyMethod):
    name = "ip_adapter"
    version = "1"
    Config = IPAdapterConfig
    description = "IP-Adapter: tuning-free image prompt from the subject's photos (SD 1.5, SDXL, FLUX.1-dev)"
    families = ("sd15", "sdxl", "flux")
    fit_steps_field = None  # nothing is trained
    trains = False  # (for the conformance kit: no fit steps, no losses; its artifact holds embeddings)
    # varbench check-method: the family's tiny parts and a tiny adapter built in code, 64 px
    tiny_config = {"weights": "tiny", "resolution": 64, "sample_steps": 4}

    def __init__(self, config: Any = None):
        super().__init__(config)
        if self.model_family().name != "flux" and self.config.true_cfg_scale != 1.0:
            raise UserError("true_cfg_scale applies to FLUX.1-dev only", f"{self.name} config",
                            "Remove it (SD 1.5 and SDXL use guidance_scale).")

    def subject_phrase(self, class_noun: str) -> str:
        return class_noun  # the subject is the image prompt

    def release(self) -> AdapterRelease:
        return RELEASES[self.model_family().name]

    def weights_needed(self) -> list[tuple[str, Any, Any]]:
        from varbench.weights import Snapshot, WeightFile

        needs = super().weights_needed()
        if self.config.weights != "pretrained":
            return needs
        release, adapter, encoder = self.release(), self.config.adapter, self.config.image_encoder
        if adapter is not None:
            needs.append((f"IP-Adapter {release.weight_name}", WeightFile(release.repo_id, release.weight_name),
                          adapter))
        else:
            needs.append((f"IP-Adapter {release.repo_id}/{release.weight_name}",
                          WeightFile(release.repo_id, release.weight_name, release.revision), None))
        label = f"IP-Adapter image encoder {release.encoder_repo}/{release.encoder_folder}".rstrip("/")
        needs.append((label, Snapshot(release.encoder_repo, release.encoder_revision, release.files()),
                      encoder if encoder is None or is_local(encoder) else None))
        return needs

    def load_base(self, ctx: CellContext) -> Any:
        from baselines.ip_adapter_model import load_adapter

        base = super().load_base(ctx)
        load_adapter(base, self.config, self.release(), ctx)
        return base

    def fit(self, base: Any, subject: Subject, ctx: CellContext) -> Any:
        from baselines.ip_adapter_model import encode_references

        return encode_references(base, subject, self.config)

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> Any:
        from baselines.ip_adapter_model import load_artifact

        return load_artifact(base, Path(artifact_dir), self.config)
