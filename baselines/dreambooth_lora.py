"""DreamBooth with LoRA (Ruiz et al., CVPR 2023; Hu et al., ICLR 2022) on Stable Diffusion
1.5, SDXL base 1.0, Stable Diffusion 3 Medium or FLUX.1-dev, as diffusers'
`examples/dreambooth/train_dreambooth_lora.py`, `train_dreambooth_lora_sdxl.py`,
`train_dreambooth_lora_sd3.py` and `train_dreambooth_lora_flux.py` run it.

Low-rank adapters (peft, rank 4, Gaussian init) are added to the denoiser's attention
projections (FLUX: and its feed-forward layers); the denoiser, the text encoders and the
VAE stay frozen. The adapters are trained on the subject's photos captioned "a photo of
sks {class}" with the family's objective: noise prediction for the UNets (SDXL with its
size and crop conditioning), flow matching for SD3 (logit-normal timesteps, outputs
preconditioned to predict the clean latents) and FLUX (uniform timesteps, velocity,
embedded guidance 3.5). Prior preservation is off by default, as in the scripts; on, it
adds as many class images "a photo of {class}" from the pretrained model (shared cache,
`baselines.class_images`) with their own loss. The recipe is
`baselines/train_dreambooth_lora.py`; every default and its source is in
baselines/README-lora.md.

Artifact: `pytorch_lora_weights.safetensors`, written by the family pipeline's
`save_lora_weights` (diffusers' LoRA format, with the adapter's rank and alpha as
metadata), loadable with `pipeline.load_lora_weights(artifact_dir)`.

This module imports no torch: the recipe is imported where it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from baselines.families import FamilyConfig, FamilyMethod
from varbench.errors import UserError
from varbench.method import CellContext
from varbench.schema import EXECUTION

if TYPE_CHECKING:
    from varbench.data.subject import Subject

# Each family's defaults where they differ (sources: baselines/README-lora.md; `cudnn_attention`, a
# speed option: measured, see its field).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": dict(resolution=512, learning_rate=5e-4, adam_weight_decay=1e-2, sampler="dpm", sample_steps=25,
                 guidance_scale=7.5, cudnn_attention=True),
    "sdxl": dict(resolution=1024, learning_rate=1e-4, adam_weight_decay=1e-4, sampler="dpm", sample_steps=25,
                 guidance_scale=5.0, cudnn_attention=True),
    "sd3": dict(resolution=512, learning_rate=1e-4, adam_weight_decay=1e-4, sampler="shipped", sample_steps=28,
                guidance_scale=7.0, weighting_scheme="logit_normal", max_sequence_length=77, cudnn_attention=True),
    "flux": dict(resolution=512, learning_rate=1e-4, adam_weight_decay=1e-4, sampler="shipped", sample_steps=28,
                 guidance_scale=3.5, weighting_scheme="none", max_sequence_length=512, train_guidance_scale=3.5,
                 lora_alpha=4, cudnn_attention=False),
}


# `auto` compiles from this many cells of an arm on one worker: the compile's one-time
# seconds (the first compiled step or call less the uncompiled first one) over the seconds
# saved per DreamBench cell (500 fit steps; 25 prompts x 4 images at batch 4), rounded up.
# Each measured on one H100 against the uncompiled defaults (CUDA graphs; FLUX.1-dev's
# checkpointed fit has none) with the family's default cuDNN attention and one-pass q/k/v
# (benchmarks/NOTES-baselines.md, sessions 13, 14, 16, 19 and 21). Assumed: a worker pays a
# compile once. Its later cells, on freshly loaded bases, compiled in about a second,
# measured on SD 1.5 only (fit and sampling, session 14). A compiled fit then compiled
# sampling at batch 1 in one process was measured on FLUX.1-dev (session 21: the card's
# memory in use peaked at 56 GB, of 80). Not measured: batch 8 (vico, vico_live). A
# family or field not listed never compiles on `auto`.
COMPILE_PAYS_AFTER: dict[str, dict[str, int]] = {
    # fit: 126 s once, 18.4 -> 30.2 steps/s saves 10.6 s; sampling: 67 s once, 0.236 -> 0.176 s/image saves 6.0 s
    "sd15": {"compile": 12, "compile_generation": 12},
    # fit: 270 s once, 277 -> 197 ms per step (under the profiler) saves 40.1 s (peak 35.1 -> 34.8 GiB);
    # sampling: 150 s once, 1.224 -> 1.024 s/image saves 20.0 s
    "sdxl": {"compile": 7, "compile_generation": 8},
    # fit: 129 s once, 12.3 -> 18.4 steps/s saves 13.5 s; sampling: 61 s once, 0.489 -> 0.378 s/image saves 11.0 s
    "sd3": {"compile": 10, "compile_generation": 6},
    # fit (checkpointed): 340 s once, 0.93-1.02 -> 1.68 steps/s saves 193-239 s (peak 36.5 -> 53.4 GiB);
    # sampling: 138 s once, 1.81 -> 1.25 s/image saves 56 s
    "flux": {"compile": 2, "compile_generation": 3},
}


@dataclass
class DreamBoothLoraConfig(FamilyConfig):
    identifier: str = "sks"  # the rare word that names the subject: "a photo of sks dog"
    rank: int = 4  # LoRA rank
    lora_alpha: int | None = None  # LoRA scale alpha / rank; None: = rank (FLUX: 4, its own default)
    learning_rate: float | None = None  # constant, no warm-up
    steps: int = 500  # optimizer steps
    batch_size: int = 4  # subject images per step (plus as many class images with the prior)
    grad_accumulation: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # gradient clipping
    prior_preservation: bool = False
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    class_image_seed: int = 0  # class image seeds derive from (this, prompt, image index)
    class_batch_size: int = 4  # class images generated per batch (speed only)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float | None = None
    adam_epsilon: float = 1e-8
    # SD3, FLUX: how flow-matching timesteps are drawn (logit-normal or uniform); the loss is unweighted
    weighting_scheme: Literal["logit_normal", "none"] | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    max_sequence_length: int | None = None  # SD3, FLUX: T5 tokens of the training prompts
    train_guidance_scale: float | None = None  # FLUX.1-dev: the guidance it is trained with (embedded)
    # Speed only: recompute activations in the backward pass (memory for FLUX at full size)
    gradient_checkpointing: bool = field(default=False, metadata={EXECUTION: "gradient_checkpointing"})
    # Speed only, CUDA only (baselines/fast/ says what each swaps in): the denoiser's forward and
    # backward replayed as CUDA graphs (not with gradient checkpointing), compiled, NHWC UNet weights
    cuda_graphs: bool = field(default=True, metadata={EXECUTION: "cuda_graphs"})
    # ("auto": from COMPILE_PAYS_AFTER cells per worker, for the families measured)
    compile: bool | Literal["auto"] = field(default="auto", metadata={EXECUTION: "compile"})
    channels_last: bool = field(default=True, metadata={EXECUTION: "channels_last"})
    # cuDNN's fused attention allowed in a fit; None: the family's default (H100, torch 2.11;
    # benchmarks/NOTES-baselines.md). On for SD 1.5 (1.09-1.14x on CUDA graphs; attention
    # kernels 7.2 ms of a step instead of flash's 13.1), SDXL (1.05-1.07x; attention 28 ms
    # instead of 49) and SD3 (1.06x). A fresh machine's first process pays 8-11 s more for
    # SD 1.5's first step (session 16), a later process under a second (session 19). Off for
    # FLUX.1-dev: its backward fails on the joint attention ("mha_graph.execute ... is_good()").
    cudnn_attention: bool | None = field(default=None, metadata={EXECUTION: "cudnn_attention"})
    # CUDA, UNet families (SD 1.5, SDXL): a self-attention's adapted q/k/v computed as one
    # LoRA (baselines/fast/lora_qkv.py): one rank-r product per role instead of three;
    # 1.05-1.11x on CUDA graphs, and SDXL's peak 0.8-0.9 GiB lower (session 19)
    fuse_lora_qkv: bool = field(default=True, metadata={EXECUTION: "fuse_lora_qkv"})
    # CUDA: the denoiser's sampling steps compiled too (inside their CUDA graphs): one (SD
    # 1.5, SD3) to two and a half (SDXL) minutes of compiling per model and batch size, then
    # faster images ("auto": from COMPILE_PAYS_AFTER cells per worker, for the families measured)
    compile_generation: bool | Literal["auto"] = field(default="auto", metadata={EXECUTION: "compile_generation"})

    FAMILY_DEFAULTS = FAMILY_DEFAULTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_alpha is None:
            self.lora_alpha = self.rank  # SD 1.5, SDXL, SD3: the scripts tie alpha to the rank


class DreamBoothLora(FamilyMethod):
    name = "dreambooth_lora"
    version = "2"  # 2: the adapters' initial draws come from the fit seed (1 left them to the process's generator)
    Config = DreamBoothLoraConfig
    description = "DreamBooth-LoRA: rank-4 adapters on the denoiser (SD 1.5, SDXL, SD3 Medium, FLUX.1-dev)"
    fit_steps_field = "steps"
    @classmethod
    def compile_break_even(cls, config: Any) -> dict[str, int]:
        """The cells of an arm from which a worker compiles, for `config`'s family
        (COMPILE_PAYS_AFTER); a family with no measured break-even never compiles on `auto`."""
        family = config.model_family(quiet=True)
        return COMPILE_PAYS_AFTER.get(family.name, {}) if family is not None else {}

    rehearsal_config = {"num_class_images": 2, "class_batch_size": 2}  # class images: shared per class
    # varbench check-method: the family's tiny random-init parts, 64 px, 4 fit and 4 sampler steps
    tiny_config = {"weights": "tiny", "resolution": 64, "sample_steps": 4, "steps": 4, "num_class_images": 2}

    def __init__(self, config: Any = None):
        super().__init__(config)
        if self.model_family().name != "flux" and self.config.train_guidance_scale is not None:
            raise UserError("train_guidance_scale applies to FLUX.1-dev only", f"{self.name} config",
                            "Remove it (the other families train without guidance).")

    def subject_phrase(self, class_noun: str) -> str:
        return f"{self.config.identifier} {class_noun}"

    def fit(self, base: Any, subject: Subject, ctx: CellContext) -> Any:
        from baselines.fast import accelerated
        from baselines.train_dreambooth_lora import LoraModel, class_image_paths, train

        config = self.config
        # Class images come from the pretrained model, so they are made before the adapters exist.
        class_paths = class_image_paths(base, config, subject.class_noun, ctx) if config.prior_preservation else []
        with accelerated(base, config, ctx.device, training=True):
            count = train(base, subject, class_paths, config, ctx, self.subject_phrase(subject.class_noun))
        return LoraModel(base, config, count)

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> Any:
        from baselines.train_dreambooth_lora import load_artifact

        return load_artifact(base, Path(artifact_dir), self.config)
