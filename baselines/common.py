"""What the three diffusion baselines share as varbench methods: the config fields every
one has, their value checks, and loading Stable Diffusion.

This module imports no torch (nor diffusers, transformers): planning a protocol reads
the methods' configs and subject phrases without loading any model code. The training
and sampling code is imported where it runs (`load_base`, `fit`, `load_artifact`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from varbench.errors import UserError
from varbench.method import CellContext, Method
from varbench.models.diffusion import SD15_ID, SD15_RANDOM, SD15_REVISION, TINY, TOYWORLD
from varbench.schema import EXECUTION

if TYPE_CHECKING:
    from varbench.models.diffusion import DiffusionComponents


@dataclass
class DiffusionConfig:
    """Fields every baseline has; defaults are the releases' (DESIGN.md section 8)."""

    # hub id, local diffusers folder, "tiny" (random-init toy parts), "toyworld" (the toy SD
    # pretrained on the toyworld) or "sd15-random" (the full SD 1.5 architecture,
    # random weights: rehearsals)
    base_model: str = SD15_ID
    revision: str | None = SD15_REVISION  # hub commit; null = the repository's default branch
    resolution: int = 512  # training crops and generated images, in pixels
    mixed_precision: Literal["bf16", "no"] = "bf16"  # CUDA only: bf16 autocast, fp32 master weights
    sampler: Literal["ddim", "dpm"] = "ddim"  # evaluation sampler (DDIM, or DPM-Solver++ multistep)
    sample_steps: int = 50  # denoising steps per generated image
    guidance_scale: float = 7.5  # classifier-free guidance weight
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # Execution options (set under `execution:`, never hashed): how fast the same images and
    # weights are computed, never what they are. CUDA only unless noted; baselines/fast/
    # says what each swaps in, and benchmarks/NOTES-baselines.md what it measured.
    # cuDNN times every convolution algorithm per shape (no gain measured)
    cudnn_benchmark: bool = field(default=False, metadata={EXECUTION: "cudnn_benchmark"})
    channels_last: bool = field(default=True, metadata={EXECUTION: "channels_last"})  # fits: NHWC convolutions
    # sampling in NHWC too (slower than NCHW uncompiled)
    channels_last_sampling: bool = field(default=False, metadata={EXECUTION: "channels_last_sampling"})
    # UNet (and text encoder, VAE decoder) calls replayed as captured CUDA graphs
    cuda_graphs: bool = field(default=True, metadata={EXECUTION: "cuda_graphs"})
    # torch.compile the UNet (and CD's VAE encoder); minutes of compiling per shape. "auto":
    # see DiffusionMethod.compile_pays_after.
    compile: bool | Literal["auto"] = field(default=False, metadata={EXECUTION: "compile"})
    # sampling: one q/k/v matmul per attention layer (diffusers' fuse_qkv_projections)
    fuse_qkv: bool = field(default=True, metadata={EXECUTION: "fuse_qkv"})
    # the SDPA kernel tried first
    attention_backend: Literal["auto", "flash", "efficient", "cudnn"] = field(
        default="cudnn", metadata={EXECUTION: "attention_backend"})
    # every device; "diffusers" = the pipeline's own loop (the same images)
    sampling_loop: Literal["varbench", "diffusers"] = field(default="varbench", metadata={EXECUTION: "sampling_loop"})


class DiffusionMethod(Method):
    """What the three baselines share as methods: value checks on the config, the
    random-init flag, loading Stable Diffusion (`base_model`, `revision`), and restoring a
    loaded one for a worker's next cell (baselines/reuse.py)."""

    family = "diffusion"

    # `compile: auto`: compiling costs ~1-2.5 min per network, batch size and process and
    # saves ~25 s per DreamBench cell (Custom Diffusion's 500 steps at 17.5 -> 30 steps/s,
    # 100 images at 0.377 -> 0.236 s/image; benchmarks/NOTES-baselines.md): from ~5 cells.
    compile_pays_after = {"compile": 5}
    random_weights = {"base_model": SD15_RANDOM, "revision": None}
    fit_steps_field = "steps"
    rehearsal_config = {"num_class_images": 2, "class_batch_size": 2}  # class images: shared per class
    # varbench check-method: the tiny random-init parts, 64 px, 4 fit and 4 sampler steps
    tiny_config = {"base_model": TINY, "revision": None, "resolution": 64, "sample_steps": 4, "steps": 4}

    def __init__(self, config: Any = None):
        super().__init__(config)
        check_config(self.config, f"{self.name} config")

    def uses_random_init(self) -> bool:
        return self.config.base_model in (TINY, SD15_RANDOM)

    def toy_backbone(self) -> str | None:
        return "sd" if self.config.base_model == TOYWORLD else None

    def weights_needed(self) -> list[tuple[str, Any, Any]]:
        from varbench.models.diffusion import PIPELINE_FILES
        from varbench.weights import Snapshot

        base = self.config.base_model
        if base in (TINY, SD15_RANDOM, TOYWORLD):  # built in code, or the toyworld's checked folder
            return []
        local = base if base.startswith((".", "/", "~")) else None  # a local diffusers folder
        return [(f"{base} (diffusers pipeline)", Snapshot(base, self.config.revision, tuple(PIPELINE_FILES)), local)]

    def load_base(self, ctx: CellContext) -> DiffusionComponents:
        from varbench.models.diffusion import load_components

        return load_components(self.config.base_model, self.config.revision, ctx.device)

    def snapshot_base(self, base: DiffusionComponents) -> Any:
        from baselines.reuse import snapshot_components

        return snapshot_components(base)

    def restore_base(self, base: DiffusionComponents, snapshot: Any) -> None:
        from baselines.reuse import restore_components

        restore_components(base, snapshot)


def check_config(config: DiffusionConfig, where: str) -> None:
    """Values the type check cannot catch, as one clear error each."""
    if config.resolution < 8 or config.resolution % 8:
        raise UserError(f"resolution is {config.resolution}, must be a positive multiple of 8", where,
                        "The VAE works on 8x8 pixel cells; use e.g. 512 (or 64 with base_model tiny).")
    counts = ("steps", "batch_size", "sample_steps", "grad_accumulation", "num_class_images", "class_batch_size",
              "encode_ahead")
    for name in counts:
        value = getattr(config, name, 1)
        if value < 1:
            raise UserError(f"{name} is {value}, must be at least 1", where, f"Set {name} to a positive number.")
    if getattr(config, "learning_rate", 0.0) < 0:
        raise UserError(f"learning_rate is {config.learning_rate}, must not be negative", where, None)
