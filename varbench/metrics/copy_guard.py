"""The copy guard (metrics.extra: copy): does a generated image copy a reference photo?

A model that returns (nearly) a training photo scores DINO above the real-vs-real ceiling
(OmniGen issue 87); the mean over references hides it. Per eval image this writes

    copy_dino    its highest DINO similarity to any single reference
    copy_clip_i  its highest CLIP-I similarity to any single reference
    copy         1 when copy_dino exceeds the subject's near-duplicate threshold, else 0

The threshold is calibrated on real-vs-real pairs: the highest DINO similarity between two
different reference photos of the subject (deterministic per subject and mode). An image
closer to one reference than any two real photos are to each other is a copy. A subject
with a single reference has no real pair, hence no threshold and no `copy` row.
Similarities use the mode's DINO and CLIP pixels and scale, but always every reference
(a copy of any one counts, whatever the mode's pairing).
"""
from __future__ import annotations

from typing import Any

from varbench.metrics.encoder_specs import CLIP, DINO
from varbench.metrics.plugin import CellInputs, Metric, Values


class CopyGuard(Metric):
    name, version = "copy", "1"
    needs = frozenset({"references"})
    better = "lower"
    encoders = (DINO, CLIP)
    rows = ("copy_dino", "copy_clip_i", "copy")
    description = "highest similarity to one reference; copy = 1 above the real-vs-real maximum"

    def score(self, cell: CellInputs) -> list[Values]:
        scale = cell.mode.scale
        dino = nearest(cell.embeddings(DINO), cell.references(DINO))
        clip = nearest(cell.embeddings(CLIP), cell.references(CLIP))
        values = [cell.per_image(dino * scale, "copy_dino"), cell.per_image(clip * scale, "copy_clip_i")]
        threshold = near_duplicate_threshold(cell.references(DINO))
        if threshold is not None:
            values.append(cell.per_image((dino > threshold).float(), "copy"))
        return values


def nearest(embeddings: Any, references: Any) -> Any:
    """Per image, the highest cosine to any one reference: (N, D), (R, D) -> (N,)."""
    import torch.nn.functional as F

    cosines = F.normalize(embeddings.float(), dim=-1) @ F.normalize(references.float(), dim=-1).T
    return cosines.max(dim=1).values


def near_duplicate_threshold(references: Any) -> Any:
    """The highest cosine between two different references (a 0-d tensor), None for one."""
    if len(references) < 2:
        return None
    import torch
    import torch.nn.functional as F

    unit = F.normalize(references.float(), dim=-1)
    cosines = unit @ unit.T
    off_diagonal = ~torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    return cosines[off_diagonal].max()
