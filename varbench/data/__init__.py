"""Datasets: subjects (reference photos + class noun + live flag) and prompt templates.

A prompt template holds one "{}" where the subject phrase goes: "a {} in the jungle"
becomes "a sks dog in the jungle" for generation and "a dog in the jungle" for CLIP-T.
"""
from __future__ import annotations

from dataclasses import dataclass

from varbench.data.subject import Subject
from varbench.errors import UserError, did_you_mean

DATASETS = ("dreambench", "vico", "smoke", "toyworld", "folder")
DRAWN_DATASETS = ("smoke", "toyworld")  # drawn by varbench itself (varbench.data.drawn): nothing to fetch


@dataclass(frozen=True)
class Dataset:
    name: str
    subjects: tuple[Subject, ...]
    object_prompts: tuple[str, ...]
    live_prompts: tuple[str, ...]
    # Subjects the dataset defines but whose folder is absent from this copy (a public
    # copy of the ViCo set lacks tortoise_plushy); open_dataset warns about each.
    absent_subjects: tuple[str, ...] = ()

    def prompts_for(self, subject: Subject) -> tuple[str, ...]:
        return self.live_prompts if subject.live else self.object_prompts

    def subject(self, name: str) -> Subject:
        for subject in self.subjects:
            if subject.name == name:
                return subject
        if name in self.absent_subjects:
            raise UserError(f"subject {name!r} of dataset {self.name} is absent from this copy", None,
                            f"Fetch the full dataset with 'varbench data fetch {self.name}' "
                            "(or add its folder to the local copy), or leave it out of the protocol.")
        raise UserError(f"unknown subject {name!r} in dataset {self.name}", None,
                        "Pick from: " + ", ".join(s.name for s in self.subjects) + "."
                        + did_you_mean(name, [s.name for s in self.subjects]))


def open_dataset(name: str, root: str | None = None, fetch_missing: bool = True) -> Dataset:
    """Load dataset `name` from `root` (a local folder) or its verified cache copy.

    A given root is only read, never written (nor the folder a symlink there points
    to): a copy that fails its manifest check is a `UserError`. Without a root, smoke
    and toyworld draw their images into varbench's cache when they are first read
    (opening writes nothing); dreambench and vico fetch their cache copy on first open, unless
    `fetch_missing` is off (dry runs and `status` never download: a missing copy is an error).
    """
    if name == "smoke":
        from varbench.data.smoke import smoke_dataset

        return smoke_dataset(root)
    if name == "toyworld":  # held-out subjects of the procedural toyworld (varbench.toyworld)
        from varbench.toyworld.dataset import toyworld_dataset

        return toyworld_dataset(root)
    if name == "dreambench":
        from varbench.data.dreambench import dreambench_dataset

        return dreambench_dataset(root, fetch_missing)
    if name == "folder":  # your own subjects (varbench.data.folder)
        from varbench.data.folder import folder_dataset

        return folder_dataset(root)
    if name == "vico":
        from varbench.data.vico import vico_dataset

        return vico_dataset(root, fetch_missing)
    raise UserError(f"unknown dataset {name!r}", None,
                    f"Use one of: {', '.join(DATASETS)}." + did_you_mean(name, DATASETS))
