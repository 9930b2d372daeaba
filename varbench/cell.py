"""A cell: one method arm x one subject, with every image it must produce planned up front
(prompt, sample, seed, file name), so a resumed cell knows exactly what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from varbench.data.subject import Subject
from varbench.protocol import Arm, Protocol
from varbench.seeding import derive_seed, fit_seed, image_seed

PRES_PROMPT = "a photo of {}"  # PRES: the plain class prompt, no identifier


@dataclass(frozen=True)
class PlannedImage:
    kind: str  # "eval" or "pres"
    prompt_index: int  # -1 for "pres"
    sample_index: int
    seed: int
    prompt: str  # what the method generates from (with the identifier)
    clip_text: str  # identifier removed, class noun kept (CLIP-T text)
    template: str  # the raw template with "{}"
    path: str  # relative to the cell folder


@dataclass
class Cell:
    protocol: Protocol
    arm: Arm
    subject: Subject
    templates: tuple[str, ...]
    # images made elsewhere (`varbench score`): the cell scores exactly these, nothing is planned
    given: tuple[PlannedImage, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.protocol.name}/{self.arm.name}/{self.subject.name}"

    @property
    def fit_seed(self) -> int:
        return fit_seed(self.protocol.spec.seeds.base, self.subject.name, self.arm.name)

    @cached_property
    def images(self) -> list[PlannedImage]:
        """Every image of the cell: evaluation prompts x samples, then PRES images."""
        if self.given is not None:
            return list(self.given)
        spec = self.protocol.spec
        phrase = self.arm.make_method().subject_phrase(self.subject.class_noun)
        noun = self.subject.class_noun
        planned = []
        for p, template in enumerate(self.templates):
            for s in range(spec.images_per_prompt):
                planned.append(PlannedImage("eval", p, s, self._seed(p, s), template.format(phrase),
                                            template.format(noun), template, f"images/p{p:03d}_s{s:02d}.png"))
        for s in range(spec.metrics.pres_images):
            planned.append(PlannedImage("pres", -1, s, self._seed("pres", s), PRES_PROMPT.format(noun),
                                        PRES_PROMPT.format(noun), PRES_PROMPT, f"pres/s{s:02d}.png"))
        return planned

    def _seed(self, prompt_index: int | str, sample_index: int) -> int:
        seeds = self.protocol.spec.seeds
        if seeds.scheme == "sample_index":
            return seeds.base + sample_index
        if prompt_index == "pres":
            return derive_seed("pres", seeds.base, self.subject.name, sample_index)
        return image_seed(seeds.base, self.subject.name, int(prompt_index), sample_index)
