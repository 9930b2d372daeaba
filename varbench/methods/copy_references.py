"""`copy_references`: the ceiling arm (the `reference_copy` arm of the toyworld protocol) of subject fidelity. It "generates" the subject's own
reference photos: image i is reference (seed i mod n), centre-cropped and resized to
`resolution`, whatever the prompt says. Its DINO and CLIP-I are what a perfect copy of
the references scores (near the dataset's real-vs-real ceiling, above it for the very
photo it copies) and its CLIP-T is what ignoring the prompt scores: any method is read
between this and a no-fit floor. No model, nothing trained; the artifact is the resized
photos themselves, so a reloaded model returns the same pixels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from varbench.method import CellContext, Method, PersonalizedModel


@dataclass
class CopyReferencesConfig:
    resolution: int = field(default=512, metadata={"range": (8, 4096)})  # pixels of the square copies


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, then bicubic resize to `size` (the protocols' image shape)."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)


class CopiedReferences(PersonalizedModel):
    def __init__(self, images: list[Image.Image]):
        self.images = images

    @property
    def trainable_parameters(self) -> int:
        return 0

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        return [self.images[seed % len(self.images)].copy() for seed in seeds]

    def save(self, artifact_dir: Path) -> None:
        for index, image in enumerate(self.images):
            image.save(Path(artifact_dir) / f"reference_{index:02d}.png")


class CopyReferences(Method):
    name = "copy_references"
    version = "1"
    Config = CopyReferencesConfig
    description = "The ceiling: returns the subject's own reference photos for every prompt"
    family = "reference"
    trains = False
    tiny_config = {"resolution": 64}

    def subject_phrase(self, class_noun: str) -> str:
        return class_noun

    def load_base(self, ctx: CellContext) -> Any:
        return None  # no model

    def fit(self, base: Any, subject: Any, ctx: CellContext) -> CopiedReferences:
        return CopiedReferences([square(image, self.config.resolution) for image in subject.load_images()])

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: CellContext) -> CopiedReferences:
        from varbench.data.subject import load_rgb

        paths = sorted(Path(artifact_dir).glob("reference_*.png"))
        return CopiedReferences([load_rgb(path) for path in paths])
