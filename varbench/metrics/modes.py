"""Metric modes: which evaluator convention a number follows (DESIGN.md section 4).

A DINO score of 0.668 and one of 69.4 can describe the same images: evaluators differ
in preprocessing, in which reference each image is compared with, in the CLIP-T text and
in the scale. varbench computes every mode from the same images and stores the mode
with every metric row, so a table never mixes them. One `ModeSpec` per mode says what
differs; `varbench.metrics.preprocess` implements the pixel pipelines it names.

canonical (default; the DreamBooth paper's convention)
    DINO ViT-S/16 (timm `vit_small_patch16_224.dino`), normed CLS token.
    DINO pixels: Resize(256, bicubic) -> CenterCrop(224) -> ImageNet mean/std.
    CLIP ViT-B/32 (OpenAI weights); pixels: Resize(224, bicubic) -> CenterCrop(224) ->
    CLIP mean/std. Resizes are torchvision's on PIL images, crop offsets rounded as
    torchvision does. Each image is compared with every reference: the per-image value
    is the mean cosine over references, so the subject mean over images is the
    all-pairs mean. CLIP-T text: the prompt without the identifier ("a dog in the
    jungle"). Scale: raw cosine, 0-1 (no x100, no 2.5 weight, no clamp).

dreammatcher (the ARBooth paper's evaluator, inherited from DreamMatcher:
    jiwoogit/ARBooth `tools/evaluate.py`, `booth_evaluation/`; cvlab-kaist/DreamMatcher
    `evaluation/`)
    Every image is resized to 256x256 (PIL bicubic, no crop) and scaled to [-1, 1]
    (x / 127.5 - 1, computed in float64 as numpy does). DINO ViT-S/16 gets those tensors
    as they are, with no ImageNet normalisation, at 256 px (its position embedding
    interpolated the way the official DINO code does). CLIP un-normalises to [0, 1],
    then Resize(224, bicubic) on the tensor (torchvision 0.14, the evaluator's pinned
    version: no antialiasing) -> CenterCrop(224) -> CLIP mean/std. Pairing: all
    references; the subject value is the mean over prompts of per-prompt all-pairs
    means (`varbench.metrics.stats` does that averaging). CLIP-T text: the raw template
    with a literal "{}" ("a {} in the jungle"), a bug of that evaluator reproduced only
    here. Scale: raw cosine, 0-1.

kosmosg (microsoft/unilm `kosmos-g/sample_kosmosg_dreambench.py`, `kosmos-g/eval/`)
    One fixed reference image per subject and 1:1 pairing: every generated image is
    compared with that one image (varbench uses the reference at
    `MetricsConfig.reference_index`, default the first in file order; the release does
    not say which image it kept). DINO ViT-S/16 with the canonical DINO pixels. CLIP-I
    and CLIP-T through Hugging Face's CLIPProcessor for openai/clip-vit-base-patch32,
    reproduced here: PIL bicubic resize of the short side to 224, center crop with
    floor offsets, x * (1/255) in float64, CLIP mean/std. CLIP-T text: the class-noun
    prompt ("a dog in the jungle"). Scale: x100 (the release clamps only the final mean
    at 0; per-image values are not clamped).

dreambench++ (yuangpeng/dreambench_plus `dreambench_plus/metrics/`)
    DINO ViT-S/8 (timm `vit_small_patch8_224.dino`) with the canonical DINO pixels;
    CLIP-I / CLIP-T through the same Hugging Face CLIP pipeline as kosmosg. Images are
    paired 1:1 with one reference (DreamBench++ has one reference per subject; on
    DreamBench varbench uses the reference at `reference_index`). Images are loaded
    with EXIF orientation applied and transparency composited on white, as that
    release does. CLIP-T text: `clip_text`. Scale: x100.

Extras, in every mode:
    DIV: mean LPIPS (AlexNet) over the unordered pairs of one prompt's images, each
    resized to 256x256 (PIL bicubic) and scaled to [-1, 1], as the ARBooth evaluator
    feeds LPIPS. Raw LPIPS (0-1) in every mode; higher = more diverse.
    PRES: the mode's DINO similarity (same pixels, pairing and scale as its DINO
    column) between the references and each "a photo of {class}" image; lower = less
    language drift.

Extra metrics (`metrics.extra`, `varbench list metrics`), in every mode:
    dinov2_s, dinov2_l: as DINO (the mode's DINO pixels, pairing and scale) with DINOv2
    ViT-S/14 or ViT-L/14; clip_l_i, clip_l_t: as CLIP-I and CLIP-T with CLIP ViT-L/14.
    copy (rows copy_dino, copy_clip_i, copy): each image's highest DINO and CLIP-I
    similarity to any one reference (every reference, whatever the pairing; the mode's
    scale), and 1 when copy_dino exceeds the highest DINO similarity between two
    different references of the subject (varbench.metrics.copy_guard).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from varbench.errors import UserError, did_you_mean
from varbench.metrics.settings import MODES


@dataclass(frozen=True)
class ModeSpec:
    name: str
    dino_patch: int  # 16: DINO ViT-S/16, 8: ViT-S/8
    dino_input_size: int  # pixels the DINO encoder sees (256 for dreammatcher)
    pixels: Literal["canonical", "dreammatcher", "hf_clip"]  # see varbench.metrics.preprocess
    pairing: Literal["all", "fixed"]  # all references, or the one at reference_index
    clip_text: Literal["clip_text", "template"]  # which GeneratedImage field CLIP-T reads
    scale: float  # multiplies every DINO / CLIP-I / CLIP-T / PRES value
    exif_and_alpha: bool = False  # apply EXIF orientation, composite alpha on white

    @property
    def label(self) -> str:
        """How a table caption names the mode and its scale."""
        return f"{self.name} mode ({'x100' if self.scale == 100 else '0-1'} scale)"


MODE_SPECS: dict[str, ModeSpec] = {
    "canonical": ModeSpec("canonical", dino_patch=16, dino_input_size=224, pixels="canonical",
                          pairing="all", clip_text="clip_text", scale=1.0),
    "dreammatcher": ModeSpec("dreammatcher", dino_patch=16, dino_input_size=256,
                             pixels="dreammatcher", pairing="all", clip_text="template", scale=1.0),
    "kosmosg": ModeSpec("kosmosg", dino_patch=16, dino_input_size=224, pixels="hf_clip",
                        pairing="fixed", clip_text="clip_text", scale=100.0),
    "dreambench++": ModeSpec("dreambench++", dino_patch=8, dino_input_size=224, pixels="hf_clip",
                             pairing="fixed", clip_text="clip_text", scale=100.0,
                             exif_and_alpha=True),
}
assert tuple(MODE_SPECS) == MODES, "every mode in MetricsConfig needs a ModeSpec"


def mode_spec(name: str) -> ModeSpec:
    if name not in MODE_SPECS:
        raise UserError(f"unknown metric mode {name!r}", "metrics.mode",
                        f"Use one of: {', '.join(MODE_SPECS)}." + did_you_mean(name, MODE_SPECS))
    return MODE_SPECS[name]
