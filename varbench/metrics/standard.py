"""The five standard metrics, computed in every protocol (DESIGN.md section 4).

    dino    per eval image: the mode's DINO similarity to the references
    clip_i  per eval image: the mode's CLIP ViT-B/32 image similarity to the references
    clip_t  per eval image: CLIP cosine to its prompt text (the mode's CLIP-T text)
    div     per prompt with >= 2 images: mean pairwise LPIPS among its images (`div: true`)
    pres    per PRES image: the mode's DINO similarity to the references

What each mode changes (pixels, pairing, text, scale) is in `varbench.metrics.modes`.
Their values are pinned by the score ids of finished results: change what one computes
only together with a new score identity (varbench.metrics.settings).
"""
from __future__ import annotations

from varbench.metrics.encoder_specs import CLIP, DINO, LPIPS
from varbench.metrics.plugin import CellInputs, Metric, Values


class Dino(Metric):
    name, version = "dino", "1"
    needs = frozenset({"references"})
    encoders = (DINO,)
    description = "DINO ViT-S/16 (ViT-S/8 in dreambench++) similarity to the references"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.similarity(DINO))]


class ClipI(Metric):
    name, version = "clip_i", "1"
    needs = frozenset({"references"})
    encoders = (CLIP,)
    description = "CLIP ViT-B/32 image similarity to the references"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.similarity(CLIP))]


class ClipT(Metric):
    name, version = "clip_t", "1"
    needs = frozenset({"prompt"})
    encoders = (CLIP,)
    description = "CLIP ViT-B/32 image-text cosine to the prompt"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.text_alignment(CLIP))]


class Div(Metric):
    name, version = "div", "1"
    needs = frozenset({"prompt_images"})
    encoders = (LPIPS,)
    description = "mean pairwise LPIPS (AlexNet) among the images of one prompt"

    def score(self, cell: CellInputs) -> list[Values]:
        from varbench.metrics.diversity import Diversity
        from varbench.metrics.preprocess import lpips_input

        views, diversity, scored = cell.embeddings(LPIPS), Diversity(cell.model(LPIPS)), []
        for prompt_index, positions in sorted(cell.prompt_groups().items()):
            if len(positions) >= 2:  # a single image has no pair
                diversity.update(lpips_input(views[positions]))
                scored.append(prompt_index)
        if not scored:
            return []
        return [cell.per_prompt(scored, diversity.compute().reshape(-1))]


class Pres(Metric):
    name, version = "pres", "1"
    needs = frozenset({"references"})
    kind = "pres"
    better = "lower"
    encoders = (DINO,)
    description = "DINO similarity of 'a photo of {class}' images to the references (language drift)"

    def score(self, cell: CellInputs) -> list[Values]:
        return [cell.per_image(cell.similarity(DINO))]


def standard_metrics(div: bool) -> list[type[Metric]]:
    """The standard metrics of a config, in row order (DIV only with `div: true`)."""
    return [Dino, ClipI, ClipT] + ([Div] if div else []) + [Pres]


STANDARD = ("dino", "clip_i", "clip_t", "div", "pres")
