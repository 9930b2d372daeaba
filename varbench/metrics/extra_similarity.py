"""Extra metrics (metrics.extra): the standard similarities on newer encoders.

    dinov2_s  DINOv2 ViT-S/14 CLS similarity to the references (DSH-Bench, DreamBench++ era)
    dinov2_l  DINOv2 ViT-L/14 CLS similarity to the references
    clip_l_i  CLIP ViT-L/14 image similarity to the references
    clip_l_t  CLIP ViT-L/14 image-text cosine to the prompt

Each follows the mode exactly as its standard counterpart does (dino, clip_i, clip_t):
same pixels, same pairing (all references, or the paired one), same CLIP-T text, same
scale. clip_l_i and clip_l_t share one CLIP ViT-L/14 pass.
"""
from __future__ import annotations

from varbench.metrics.encoder_specs import CLIP_L, DINOV2_L, DINOV2_S
from varbench.metrics.plugin import CellInputs, Metric, Values


class DinoV2Small(Metric):
    name, version = "dinov2_s", "1"
    needs = frozenset({"references"})
    encoders = (DINOV2_S,)
    description = "DINOv2 ViT-S/14 similarity to the references"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.similarity(DINOV2_S))]


class DinoV2Large(Metric):
    name, version = "dinov2_l", "1"
    needs = frozenset({"references"})
    encoders = (DINOV2_L,)
    description = "DINOv2 ViT-L/14 similarity to the references"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.similarity(DINOV2_L))]


class ClipLargeImage(Metric):
    name, version = "clip_l_i", "1"
    needs = frozenset({"references"})
    encoders = (CLIP_L,)
    description = "CLIP ViT-L/14 image similarity to the references"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.similarity(CLIP_L))]


class ClipLargeText(Metric):
    name, version = "clip_l_t", "1"
    needs = frozenset({"prompt"})
    encoders = (CLIP_L,)
    description = "CLIP ViT-L/14 image-text cosine to the prompt"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.text_alignment(CLIP_L))]
