"""What the LoRA and IP-Adapter baselines share as varbench methods: the config fields that
pick a model family and its weights, each family's defaults, loading its pipeline, and
what the preflight needs.

A family default is a config field left at None: the config fills it from the method's
`FAMILY_DEFAULTS` when it is built, so the run id hashes the values actually used (their
sources: baselines/README-lora.md). The families themselves (hub ids, pinned commits,
random-init parts) are `varbench.models.families`.

This module imports no torch: planning a protocol reads these configs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from varbench.errors import UserError
from varbench.method import CellContext, Method
from varbench.models.families import FAMILIES, Family, family_of, snapshot_need

if TYPE_CHECKING:
    from varbench.models.families import FamilyModel


@dataclass
class FamilyConfig:
    """Fields every family method has; a None takes the family's default."""

    # "sd15", "sdxl", "sd3", "flux": that release from the hub at its pinned commit; or a hub
    # id or a local diffusers folder of one of them (then set `family`)
    base_model: str = "sd15"
    family: Literal["sd15", "sdxl", "sd3", "flux"] | None = None  # None: read from base_model
    revision: str | None = None  # hub commit; None: the release's pinned one (another hub id: its default branch)
    # pretrained; random: the full architecture with random weights (rehearsals, `--backbones
    # random`); tiny: toy-size random-init parts built in code (tests, smoke protocols)
    weights: Literal["pretrained", "random", "tiny"] = "pretrained"
    resolution: int | None = None  # training crops and generated images, in pixels
    # evaluation sampler: DDIM, DPM-Solver++ (multistep) or the release's own scheduler
    # (PNDM for SD 1.5, Euler for SDXL, flow-matching Euler for SD3 and FLUX)
    sampler: Literal["ddim", "dpm", "shipped"] | None = None
    sample_steps: int | None = None  # denoising steps per generated image
    guidance_scale: float | None = None  # classifier-free guidance (FLUX.1-dev: its embedded guidance)
    mixed_precision: Literal["bf16", "no"] = "bf16"  # CUDA only: bf16 frozen weights and autocast

    FAMILY_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        family = self.model_family(quiet=True)
        if family is None:
            return  # the method's check says what is wrong, naming the config
        for name, value in self.FAMILY_DEFAULTS.get(family.name, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def model_family(self, quiet: bool = False) -> Family | None:
        try:
            return family_of(self.base_model, self.family, "method config")
        except UserError:
            if quiet:
                return None
            raise


class FamilyMethod(Method):
    """A method over one of `families` (value checks, random-init flag, loading, preflight)."""

    family = "diffusion"  # the report family (Method.family), not the model family
    families: ClassVar[tuple[str, ...]] = tuple(FAMILIES)
    random_weights = {"weights": "random"}

    def __init__(self, config: Any = None):
        super().__init__(config)
        check_config(self.config, f"{self.name} config", self.families)

    def model_family(self) -> Family:
        return self.config.model_family()

    def uses_random_init(self) -> bool:
        return self.config.weights != "pretrained"

    def weights_needed(self) -> list[tuple[str, Any, Any]]:
        if self.config.weights != "pretrained":
            return []
        return [snapshot_need(self.model_family(), self.config.base_model, self.config.revision)]

    def load_base(self, ctx: CellContext) -> FamilyModel:
        from baselines.training import compute_dtype
        from varbench.models.families import load_family, sampling_scheduler

        config = self.config
        model = load_family(self.model_family(), config.base_model, config.revision, config.weights, ctx.device,
                            compute_dtype(config, ctx.device))
        model.pipeline.scheduler = sampling_scheduler(model, config.sampler)
        return model


def check_config(config: FamilyConfig, where: str, families: tuple[str, ...]) -> None:
    """Values the type check cannot catch, as one clear error each."""
    try:
        family = family_of(config.base_model, config.family, where)
    except UserError as err:
        raise UserError(err.what, where, err.fix) from None
    if family.name not in families:
        raise UserError(f"{family.title} is not supported by this method", f"{where} 'base_model'",
                        f"Use one of: {', '.join(families)}.")
    if config.sampler in ("ddim", "dpm") and family.denoiser != "unet":
        raise UserError(f"sampler {config.sampler} does not apply to {family.title} (a flow-matching model)",
                        f"{where} 'sampler'", "Use sampler: shipped (or leave it out).")
    cell = 16 if family.denoiser == "transformer" else 8  # VAE x 8, then 2 x 2 patches or packing
    if config.resolution < cell or config.resolution % cell:
        raise UserError(f"resolution is {config.resolution}, must be a positive multiple of {cell} for {family.title}",
                        where, f"Use e.g. {FAMILY_NATIVE[family.name]} (or 64 with weights: tiny).")
    counts = [f.name for f in fields(config) if f.name in COUNTS]
    for name in counts:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise UserError(f"{name} is {value}, must be at least 1", where, f"Set {name} to a positive number.")
    for name in ("learning_rate", "scale", "guidance_scale"):
        value = getattr(config, name, None)
        if value is not None and value < 0:
            raise UserError(f"{name} is {value}, must not be negative", where, None)


COUNTS = {"steps", "batch_size", "grad_accumulation", "sample_steps", "num_class_images", "class_batch_size", "rank",
          "num_references", "max_sequence_length"}
FAMILY_NATIVE = {"sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}  # the releases' training resolutions
