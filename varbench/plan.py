"""Planning: which cells a protocol has, and which images each cell must produce.

A cell is one method arm x one subject. Its images are planned up front (prompt,
sample, seed, file name), so a resumed cell knows exactly what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from varbench.data import Dataset, open_dataset
from varbench.data.subject import Subject
from varbench.errors import UserError, did_you_mean
from varbench.protocol import Arm, Protocol
from varbench.seeding import derive_seed, fit_seed, image_seed
from varbench.store import check_name

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

    @property
    def label(self) -> str:
        return f"{self.protocol.name}/{self.arm.name}/{self.subject.name}"

    @property
    def fit_seed(self) -> int:
        return fit_seed(self.protocol.spec.seeds.base, self.subject.name, self.arm.name)

    @cached_property
    def images(self) -> list[PlannedImage]:
        """Every image of the cell: evaluation prompts x samples, then PRES images."""
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


def dataset_of(protocol: Protocol, root: str | None = None, fetch_missing: bool = True) -> Dataset:
    return open_dataset(protocol.spec.data.dataset, root or protocol.spec.data.root, fetch_missing)


def templates_for(protocol: Protocol, dataset: Dataset, subject: Subject) -> tuple[str, ...]:
    prompts = protocol.spec.prompts
    if prompts.source == "custom":
        templates = tuple(prompts.live if subject.live else prompts.object)
        if not templates:
            kind = "live" if subject.live else "object"
            raise UserError(f"protocol has no custom {kind} prompts but subject {subject.name} is {kind}",
                            str(protocol.path), f"Add a 'prompts.{kind}:' list.")
    else:
        templates = dataset.prompts_for(subject)
    return templates[: prompts.limit] if prompts.limit else templates


def plan_cells(protocol: Protocol, dataset: Dataset, arms: list[str] | None = None,
               subjects: list[str] | None = None) -> list[Cell]:
    """The protocol's cells, optionally narrowed to some arms (or methods) and subjects."""
    chosen_arms = _select_arms(protocol, arms)
    names = protocol.spec.data.subjects
    chosen = [s.name for s in dataset.subjects] if names == "all" else list(names)
    if subjects:
        for name in subjects:
            if name not in chosen:
                raise UserError(f"subject {name!r} is not in protocol {protocol.name}", str(protocol.path),
                                "Pick from: " + ", ".join(chosen) + "." + did_you_mean(name, chosen))
        chosen = [n for n in chosen if n in subjects]
    cells = []
    for arm in chosen_arms:
        for name in chosen:
            subject = dataset.subject(check_name(name, "subject", str(protocol.path)))
            cells.append(Cell(protocol, arm, subject, templates_for(protocol, dataset, subject)))
    return cells


def _select_arms(protocol: Protocol, wanted: list[str] | None) -> list[Arm]:
    if not wanted:
        return list(protocol.arms)
    chosen = []
    for name in wanted:
        matches = [a for a in protocol.arms if name in (a.name, a.method_name)]
        if not matches:
            protocol.arm(name)  # raises the "no arm named ..." error with suggestions
        chosen += [a for a in matches if a not in chosen]
    return chosen
