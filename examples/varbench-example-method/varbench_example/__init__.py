"""The reference-copy baseline: a complete, minimal varbench method plugin.

It "fits" by remembering the subject's reference photos and "generates" by returning
one of them (picked by the image's seed), resized. It ignores the prompt, so it sets
the ceiling for subject fidelity (DINO, CLIP-I) and the floor for prompt fidelity
(CLIP-T): a useful sanity row next to real methods.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from varbench.data.subject import load_rgb
from varbench.method import Method, PersonalizedModel


@dataclass
class Config:
    resolution: int = 64  # side of the square output images


class ReferenceCopyModel(PersonalizedModel):
    def __init__(self, references: list[Path], resolution: int):
        self.references = references
        self.resolution = resolution

    @property
    def trainable_parameters(self) -> int:
        return 0

    def generate(self, prompts, seeds):
        images = []
        for seed in seeds:
            path = self.references[random.Random(seed).randrange(len(self.references))]
            image = load_rgb(path).resize((self.resolution, self.resolution), Image.BICUBIC)
            images.append(image)
        return images

    def save(self, artifact_dir: Path) -> None:
        (artifact_dir / "references.json").write_text(json.dumps([str(p) for p in self.references]))


class ReferenceCopy(Method):
    name = "reference_copy"
    version = "1"
    Config = Config
    description = "Returns a reference photo: fidelity ceiling, prompt-following floor."
    family = "reference"  # no generative model: reports draw it apart from the real methods
    tiny_config = {"resolution": 64}  # `varbench check-method reference_copy` (nothing to shrink)

    def subject_phrase(self, class_noun: str) -> str:
        return class_noun

    def load_base(self, ctx):
        return None  # nothing pretrained to load

    def fit(self, base, subject, ctx):
        total = len(subject.image_paths)
        for step in range(1, total + 1):
            ctx.fit_step(step, total, loss=0.0)
        return ReferenceCopyModel(list(subject.image_paths), self.config.resolution)

    def load_artifact(self, base, artifact_dir, ctx):
        references = [Path(p) for p in json.loads((artifact_dir / "references.json").read_text())]
        return ReferenceCopyModel(references, self.config.resolution)
