"""DINO / CLIP-I / PRES and CLIP-T as torchmetrics metrics that keep per-image values.

Both metrics take embeddings (the encoders in `varbench.models.encoders` make them) and
hold one value per image in a list state, so `compute` returns every image's value in
update order, and in a distributed run the lists are concatenated across processes.
The subject-level number is the mean of those values (the report averages them).

ImageSimilarity: per image, the mean cosine between its embedding and the reference
    embeddings it is paired with: all references (canonical, dreammatcher) or one
    reference per image (kosmosg, dreambench++). With all references, the mean over a
    subject's images is the mean over all (generated x reference) pairs.
TextAlignment: per image, the cosine between its CLIP image embedding and the CLIP
    text embedding of its prompt.
Values are multiplied by `scale` (1 for the 0-1 modes, 100 for kosmosg and
dreambench++). Nothing is clamped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class _PerImageMetric(Metric):
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def compute(self) -> torch.Tensor:
        """One value per image seen since the last `reset`, in update order (torchmetrics
        squeezes a single value to a 0-d tensor: `.reshape(-1)` restores the list)."""
        return dim_zero_cat(self.values) if self.values else torch.zeros(0)


class ImageSimilarity(_PerImageMetric):
    """Cosine similarity of images to references (DINO, CLIP-I, PRES)."""

    def update(self, embeddings: torch.Tensor, references: torch.Tensor,
               paired_reference: torch.Tensor | None = None) -> None:
        """embeddings (N, D), references (R, D); `paired_reference` (N,) long: the one
        reference each image is compared with, or None for all references."""
        cosines = F.normalize(embeddings.float(), dim=-1) @ F.normalize(references.float(), dim=-1).T
        if paired_reference is None:
            values = cosines.mean(dim=1)
        else:
            values = cosines.gather(1, paired_reference.view(-1, 1).to(cosines.device)).squeeze(1)
        self.values.append(values * self.scale)


class TextAlignment(_PerImageMetric):
    """Cosine similarity of each image to its own text (CLIP-T)."""

    def update(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> None:
        """image_embeddings (N, D) and text_embeddings (N, D): row i is image i's text."""
        if image_embeddings.shape != text_embeddings.shape:
            raise ValueError(f"{tuple(image_embeddings.shape)} image embeddings vs "
                             f"{tuple(text_embeddings.shape)} text embeddings")
        values = F.cosine_similarity(image_embeddings.float(), text_embeddings.float(), dim=-1)
        self.values.append(values * self.scale)


def mean_offdiagonal_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the ordered pairs (i, j), i != j, of a set of images
    (real-vs-real calibration). Needs at least two images."""
    if len(embeddings) < 2:
        raise ValueError("need at least two images for real-vs-real similarity")
    unit = F.normalize(embeddings.float(), dim=-1)
    cosines = unit @ unit.T
    count = len(unit)
    return (cosines.sum() - cosines.diagonal().sum()) / (count * (count - 1))
