"""DreamBench: the 30 subjects and 25 + 25 prompts of the DreamBooth paper.

Everything but the live/object split is read from the dataset's own
`prompts_and_classes.txt`, which has three parts:

    Classes                      a "subject_name,class" table (class nouns may be two
    subject_name,class           words: "stuffed animal")
    backpack,backpack
    ...
    Object Prompts               prompt_list = [ ... ] of Python lines such as
    prompt_list = [                'a {0} {1} in the jungle'.format(unique_token, class_token),
    ...                          where {0} is the identifier and {1} the class noun
    Live Subject Prompts
    prompt_list = [ ... ]

Each template keeps its published text, with "{0} {1}" turned into varbench's single
"{}" for the subject phrase ("a {} in the jungle"). The file does not say which
subjects are live; the paper does: the cats and dogs.
"""
from __future__ import annotations

import re
from pathlib import Path

from varbench.data import Dataset
from varbench.data.fetch import open_checked
from varbench.data.subject import Subject
from varbench.errors import UserError

PROMPTS_FILE = "prompts_and_classes.txt"
LIVE_SUBJECTS = frozenset({"cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"})

# One template line: 'a {0} {1} in the jungle'.format(unique_token, class_token),
TEMPLATE_LINE = re.compile(r"^'(?P<text>[^']*)'\.format\(unique_token, class_token\),?$")
SUBJECT_PHRASE = "{0} {1}"


def dreambench_dataset(root: str | None = None, fetch_missing: bool = True) -> Dataset:
    """DreamBench from `root` (or $VARBENCH_DREAMBENCH_DIR, or the cache, fetched on first use)."""
    folder, manifest, _ = open_checked("dreambench", root, fetch_missing)
    classes, object_prompts, live_prompts = parse_prompts_and_classes(folder / PROMPTS_FILE)
    if sorted(classes) != manifest.subjects():
        raise UserError("the class table does not list the 30 DreamBench subjects", str(folder / PROMPTS_FILE),
                        "Re-fetch the dataset with 'varbench data fetch dreambench'.")
    subjects = tuple(
        Subject(name=name, class_noun=noun, live=name in LIVE_SUBJECTS, image_paths=manifest.image_paths(folder, name))
        for name, noun in classes.items()
    )
    return Dataset("dreambench", subjects, object_prompts, live_prompts)


def parse_prompts_and_classes(path: Path) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
    """(subject -> class noun in file order, object templates, live templates)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    object_start = _find_line(lines, "Object Prompts", path)
    live_start = _find_line(lines, "Live Subject Prompts", path)
    classes = _parse_classes(lines[:object_start], path)
    object_prompts = _parse_templates(lines, object_start + 1, live_start, path)
    live_prompts = _parse_templates(lines, live_start + 1, len(lines), path)
    return classes, object_prompts, live_prompts


def _find_line(lines: list[str], heading: str, path: Path) -> int:
    for index, line in enumerate(lines):
        if line.strip() == heading:
            return index
    raise UserError(f"no {heading!r} section", str(path), "Re-fetch the dataset with 'varbench data fetch dreambench'.")


def _parse_classes(lines: list[str], path: Path) -> dict[str, str]:
    header = _find_line(lines, "subject_name,class", path)
    classes: dict[str, str] = {}
    for line in lines[header + 1:]:
        if line.strip() == "Prompts":
            break
        if not line.strip():
            continue
        name, sep, noun = line.partition(",")
        if not sep or not name.strip() or not noun.strip():
            raise UserError(f"malformed class table line {line!r}", str(path), "Expected 'subject_name,class'.")
        classes[name.strip()] = noun.strip()
    return classes


def _parse_templates(lines: list[str], start: int, stop: int, path: Path) -> tuple[str, ...]:
    """The templates of one `prompt_list = [ ... ]` block between lines start and stop."""
    templates = []
    for number in range(start, stop):
        line = lines[number].strip()
        if not line or line.startswith("prompt_list") or line == "]":
            continue
        match = TEMPLATE_LINE.match(line)
        if match is None or match["text"].count(SUBJECT_PHRASE) != 1:
            raise UserError(f"malformed prompt template on line {number + 1}: {line!r}", str(path),
                            "Expected 'a {0} {1} ...'.format(unique_token, class_token),")
        templates.append(match["text"].replace(SUBJECT_PHRASE, "{}"))
    if not templates:
        raise UserError(f"no prompt templates after line {start}", str(path),
                        "Re-fetch the dataset with 'varbench data fetch dreambench'.")
    return tuple(templates)
