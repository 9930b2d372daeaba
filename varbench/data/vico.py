"""The ViCo/DreamMatcher concept set: 16 concepts, 31 live and 31 object prompts.

This is the evaluation set of the ARBooth paper (arXiv 2504.02612), shipped in the
`inputs/` folder of its repository: one folder per concept, plus
`prompts_live_objects.txt` and `prompts_nonlive_objects.txt` with one template per
line ("a {} in the jungle"; {} becomes "<identifier> <class>"). The class nouns and
live flags are not in those files; they are the table below, as the paper's
evaluation scripts list them.

The prompt files are kept exactly as published, quirks included: the object list's
25th template ends with a space ("a {} with Japanese modern city street in the
background "), the live list's does not.

tortoise_plushy: a widely shared copy of this set lacks that concept's folder. Such a
copy still opens, without it, with a `DatasetWarning` (and `Dataset.absent_subjects`
names it, so reports can say "15 of 16 concepts"); a protocol that lists it explicitly
gets a clear error. `varbench data fetch vico` downloads all 16.
"""
from __future__ import annotations

from pathlib import Path

from varbench.data import Dataset
from varbench.data.fetch import open_checked
from varbench.data.subject import Subject
from varbench.errors import UserError

LIVE_PROMPTS_FILE = "prompts_live_objects.txt"
OBJECT_PROMPTS_FILE = "prompts_nonlive_objects.txt"

# (folder name, class noun, live), in the order of the paper's evaluation scripts.
VICO_CONCEPTS: tuple[tuple[str, str, bool], ...] = (
    ("cat_statue", "statue", False),
    ("elephant_statue", "statue", False),
    ("duck_toy", "toy", False),
    ("monster_toy", "toy", False),
    ("brown_teddybear", "teddybear", False),
    ("tortoise_plushy", "plushy", False),
    ("brown_dog", "dog", True),
    ("fat_dog", "dog", True),
    ("brown_dog2", "dog", True),
    ("black_cat", "cat", True),
    ("brown_cat", "cat", True),
    ("alarm_clock", "clock", False),
    ("pink_sunglasses", "sunglasses", False),
    ("red_teapot", "teapot", False),
    ("red_vase", "vase", False),
    ("wooden_barn", "barn", False),
)


def vico_dataset(root: str | None = None, fetch_missing: bool = True) -> Dataset:
    """The 16 concepts from `root` (or $VARBENCH_VICO_DIR, or the cache, fetched on first use)."""
    folder, manifest, absent = open_checked("vico", root, fetch_missing)
    subjects = tuple(
        Subject(name=name, class_noun=noun, live=live, image_paths=manifest.image_paths(folder, name))
        for name, noun, live in VICO_CONCEPTS
        if name not in absent
    )
    return Dataset(
        name="vico",
        subjects=subjects,
        object_prompts=read_templates(folder / OBJECT_PROMPTS_FILE),
        live_prompts=read_templates(folder / LIVE_PROMPTS_FILE),
        absent_subjects=tuple(absent),
    )


def read_templates(path: Path) -> tuple[str, ...]:
    """One template per line, each with exactly one "{}"; spacing kept as published."""
    # Split on "\n" only: the published files have no "\r", and stripping would change
    # a template's text.
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":  # a final newline ends the last line; it adds no template
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if line.count("{}") != 1:
            raise UserError(f"prompt template on line {number} must hold exactly one '{{}}': {line!r}", str(path),
                            "Re-fetch the dataset with 'varbench data fetch vico'.")
    return tuple(lines)
