"""Your own subjects: a folder of subject folders described by `subjects.yaml`.

    my_subjects/
      subjects.yaml
      mybag/      01.jpg 02.jpg ...      (.png, .jpg, .jpeg, .webp)
      rex/        a.png b.png

    # subjects.yaml
    prompts:                      # the templates every subject uses ("{}" = the subject
      object: ["a {} on the beach", "a {} in the snow"]     #  phrase), by kind
      live: ["a {} sleeping", "a {} in the snow"]
    subjects:
      - {name: mybag, class: backpack}                   # object by default
      - {name: rex, class: dog, live: true, prompts: ["a {} wearing a hat"]}  # its own list

A subject's own `prompts` replace the shared list of its kind. Every image is read fully
when the dataset opens (readable, RGB or convertible, at least one per subject), and
`fingerprint` hashes the description and every image: a run's identity includes it,
so editing the folder makes a new run instead of silently mixing two versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from varbench.data import Dataset
from varbench.data.subject import Subject
from varbench.errors import UserError
from varbench.hashing import content_hash
from varbench.metrics.imagefile import FileRole, open_rgb

DESCRIPTION = "subjects.yaml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SUBJECT_IMAGE = FileRole("subject image not found", "Check the subject folder.",
                         "Replace the file with a valid PNG/JPEG/WebP or remove it from the subject folder.")
EXAMPLE = "e.g. subjects: [{name: mybag, class: backpack}] and prompts: {object: ['a {} on the beach']}"


@dataclass(frozen=True)
class FolderDataset(Dataset):
    """A Dataset whose subjects may carry their own prompt lists."""

    own_prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def prompts_for(self, subject: Subject) -> tuple[str, ...]:
        return self.own_prompts.get(subject.name) or super().prompts_for(subject)


def folder_dataset(root: str | None) -> FolderDataset:
    """The subjects described in `root`/subjects.yaml, their images checked."""
    folder = _root(root)
    description = _read_description(folder)
    shared = description.get("prompts") or {}
    _check_keys(shared, {"object", "live"}, "prompts", folder)
    shared_lists = {kind: _templates(shared.get(kind, []), f"prompts.{kind}", folder) for kind in ("object", "live")}
    subjects, own = [], {}
    for index, entry in enumerate(_subject_entries(description, folder)):
        subject = _subject(folder, entry, index)
        subjects.append(subject)
        if entry.get("prompts"):
            own[subject.name] = _templates(entry["prompts"], f"subjects[{index}].prompts", folder)
        elif not shared_lists["live" if subject.live else "object"]:
            kind = "live" if subject.live else "object"
            raise UserError(f"subject {subject.name} is {kind} but no {kind} prompts are given",
                            str(folder / DESCRIPTION), f"Add 'prompts: {{{kind}: [...]}}' or the subject's own "
                            "'prompts:' list.")
    return FolderDataset("folder", tuple(subjects), shared_lists["object"], shared_lists["live"], own_prompts=own)


def fingerprint(root: str | None) -> str:
    """A hash of the description and of every subject image (name and bytes)."""
    folder = _root(root)
    return _fingerprint(str(folder.resolve()), _mtimes(folder))


@lru_cache(maxsize=16)
def _fingerprint(folder: str, mtimes: tuple) -> str:
    from varbench.weights import sha256_file

    dataset = folder_dataset(folder)
    files = {DESCRIPTION: sha256_file(Path(folder) / DESCRIPTION)}
    for subject in dataset.subjects:
        for path in subject.image_paths:
            files[f"{subject.name}/{path.name}"] = sha256_file(path)
    return content_hash(files, length=16)


def _mtimes(folder: Path) -> tuple:
    """What invalidates the cached fingerprint: any file's size or modification time."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()))


def _root(root: str | None) -> Path:
    if not root:
        raise UserError("dataset 'folder' needs a folder", "data.root",
                        "Set 'data: {dataset: folder, root: DIR}' or pass --data-root DIR.")
    folder = Path(root).expanduser()
    if not (folder / DESCRIPTION).is_file():
        raise UserError(f"no {DESCRIPTION} in the subjects folder", str(folder),
                        f"Write {folder / DESCRIPTION} ({EXAMPLE}); README: 'Your own subjects'.")
    return folder


def _read_description(folder: Path) -> dict[str, Any]:
    from varbench.protocol import load_yaml_file

    data = load_yaml_file(folder / DESCRIPTION)
    if not isinstance(data, dict):
        raise UserError(f"{DESCRIPTION} is not a mapping", str(folder / DESCRIPTION), EXAMPLE)
    _check_keys(data, {"prompts", "subjects"}, "the top level", folder)
    return data


def _subject_entries(description: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    entries = description.get("subjects")
    if not isinstance(entries, list) or not entries:
        raise UserError("no subjects listed", str(folder / DESCRIPTION), EXAMPLE)
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    for index, (entry, name) in enumerate(zip(entries, names)):
        if not isinstance(entry, dict):
            raise UserError(f"subjects[{index}] is not a mapping", str(folder / DESCRIPTION), EXAMPLE)
        _check_keys(entry, {"name", "class", "live", "prompts"}, f"subjects[{index}]", folder)
        if names.count(name) > 1:
            raise UserError(f"subject {name!r} is listed twice", str(folder / DESCRIPTION), "Give each subject once.")
    return entries


def _subject(folder: Path, entry: dict[str, Any], index: int) -> Subject:
    from varbench.store import check_name

    where = f"{folder / DESCRIPTION}, subjects[{index}]"
    name, noun, live = entry.get("name"), entry.get("class"), entry.get("live", False)
    if not isinstance(name, str) or not isinstance(noun, str) or not noun.strip() or not isinstance(live, bool):
        raise UserError("a subject needs a name, a class noun and live true/false", where,
                        "e.g. {name: rex, class: dog, live: true}")
    check_name(name, "subject", where)
    images = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
        if (folder / name).is_dir() else []
    if not images:
        raise UserError(f"subject {name} has no images", str(folder / name),
                        f"Put at least one {'/'.join(IMAGE_SUFFIXES)} photo of the subject in that folder.")
    for path in images:
        open_rgb(path, role=SUBJECT_IMAGE)  # readable and RGB-convertible, or one error naming the file
    return Subject(name=name, class_noun=noun.strip(), live=live, image_paths=tuple(images))


def _templates(values: Any, key: str, folder: Path) -> tuple[str, ...]:
    from varbench.protocol import check_template

    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UserError(f"{key} is not a list of prompt templates", str(folder / DESCRIPTION),
                        "e.g. ['a {} on the beach', 'a {} in the snow']")
    for text in values:
        check_template(text, f"{folder / DESCRIPTION}, {key}")
    return tuple(values)


def _check_keys(mapping: Any, allowed: set[str], where: str, folder: Path) -> None:
    from varbench.errors import did_you_mean

    if not isinstance(mapping, dict):
        raise UserError(f"{where} is not a mapping", str(folder / DESCRIPTION), EXAMPLE)
    for key in mapping:
        if key not in allowed:
            raise UserError(f"unknown key {key!r} in {where}", str(folder / DESCRIPTION),
                            f"Use {', '.join(sorted(allowed))}." + did_you_mean(str(key), sorted(allowed)))
