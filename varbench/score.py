"""Scoring images made anywhere: `varbench score` and `varbench.score_images`.

Two ways to say what each image is:

  layout (default)   IMAGES/<subject>/<prompt index>_<sample index>.png   (.jpg .jpeg .webp)
                     the prompt index points into the dataset's own prompt list for that
                     subject (DreamBench: 25 object or 25 live templates)
  manifest           a CSV or JSONL file with columns image, subject, prompt [, sample]:
                     `image` relative to IMAGES, `prompt` as the images were generated
                     ("a sks dog in the snow"); `identifier` names the token to strip
                     for CLIP-T ("a dog in the snow")

Everything is checked before anything is written: unknown subjects, prompt indices out
of range, unreadable or missing images, subjects with no images, duplicated rows. Each
problem is one error line naming the file or row. The images then become one run in
the store (arm `name`, method "external"), under the dataset's protocol name unless
`protocol` says otherwise, so `varbench report` shows them beside generated arms. Each
cell's files are copied in and sealed, then scored by the same worker that scores
generated images, so a rerun scores only what is missing. The run id hashes the image
files themselves (and their prompts): other images make another run.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from varbench.cell import Cell, PlannedImage
from varbench.data import Dataset, open_dataset
from varbench.errors import UserError, did_you_mean
from varbench.hashing import content_hash
from varbench.method import Method
from varbench.metrics.settings import MODES, MetricsConfig
from varbench.protocol import Arm, DataSpec, Protocol, ProtocolSpec
from varbench.store import IMAGE_COLUMNS, STORE_LAYOUT, RunStore, check_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LAYOUT_NAME = re.compile(r"^(?P<prompt>\d+)_(?P<sample>\d+)$")
MANIFEST_COLUMNS = ("image", "subject", "prompt")


@dataclass
class ScoreRequest:
    """What `varbench score` takes (its flags, one to one)."""

    images: Path
    dataset: str = "dreambench"
    data_root: str | None = None
    manifest: Path | None = None
    identifier: str | None = None
    mode: str = "canonical"
    backbones: str = "real"
    name: str = "external"
    results: Path = Path("results")
    protocol: str | None = None  # the store's protocol folder; default: the dataset's name
    device: str = "auto"
    div: bool = True
    extra: list[str] = field(default_factory=list)  # extra metrics (metrics.extra), e.g. ["dinov2_s", "copy"]
    execution: dict[str, Any] = field(default_factory=dict)  # metric_batch_size, metric_precision, decode_workers


@dataclass(frozen=True)
class ExternalImage:
    subject: str
    prompt_index: int
    sample_index: int
    prompt: str  # as generated
    clip_text: str  # the subject phrase reduced to the class noun
    template: str  # the prompt with the subject phrase as "{}" (dreammatcher's CLIP-T text)
    file: Path
    where: str  # the file, or "manifest.csv, row 7", for error lines


# --- the method and arm of external images ----------------------------------------------
@dataclass
class ExternalConfig:
    identifier: str | None = None


class ExternalImages(Method):
    """Images made elsewhere: never fitted or generated here, only scored."""

    name = "external"
    version = "1"
    Config = ExternalConfig
    family = "external"
    description = "images made outside varbench (varbench score)"

    def subject_phrase(self, class_noun: str) -> str:
        return class_noun

    def load_base(self, ctx: Any) -> Any:
        raise UserError("external images are scored, not generated", ctx.subject_name,
                        "Score them with 'varbench score'.")

    def fit(self, base: Any, subject: Any, ctx: Any) -> Any:
        return self.load_base(ctx)  # never reached: their cells are staged done

    def load_artifact(self, base: Any, artifact_dir: Path, ctx: Any) -> Any:
        return self.load_base(ctx)


class ExternalArm(Arm):
    """An arm whose identity is its image files, not a method config."""

    images_fingerprint: str = ""
    files: int = 0

    @property
    def method_class(self) -> type:  # type: ignore[override]
        return ExternalImages

    def identity(self) -> dict[str, Any]:
        spec = self.protocol.spec
        return {"layout": STORE_LAYOUT, "protocol": spec.name, "arm": self.name, "method": "external",
                "method_version": ExternalImages.version, "external": True, "dataset": spec.data.dataset,
                **self._data_fingerprint(), "images_fingerprint": self.images_fingerprint, "files": self.files,
                "identifier": self.config.identifier}


# --- the entry point ------------------------------------------------------------------------
def score_external(request: ScoreRequest) -> list[Cell]:
    """Check, stage and score `request.images`; returns their cells (one per subject)."""
    cells = prepare_external(request)
    score_staged(request, cells)
    return cells


def prepare_external(request: ScoreRequest) -> list[Cell]:
    """Everything before scoring: check the request and every image, then stage each
    cell's files into the store; returns the cells."""
    from varbench.runner import check_results_root

    _check_request(request)
    root = Path(request.results)
    check_results_root(root, [])
    dataset = open_dataset(request.dataset, request.data_root)
    images = collect(request, dataset)
    checked = inspect(images)
    _, cells = external_cells(request, dataset, images, checked)
    check_results_root(root, cells)
    stage(root, cells, images, checked)
    return cells


def score_staged(request: ScoreRequest, cells: list[Cell]) -> None:
    """Score staged cells (a rerun of finished scores starts nothing)."""
    from varbench.launch import run_inprocess
    from varbench.plan import RunOptions, pending_cells

    root = Path(request.results)
    if pending_cells(root, cells, retry_failed=True):
        run_inprocess(cells[0].protocol, cells, RunOptions(results=root, device=request.device, retry_failed=True))


def _check_request(request: ScoreRequest) -> None:
    if request.mode not in MODES:
        raise UserError(f"unknown metric mode {request.mode!r}", "--mode",
                        f"Use one of {', '.join(MODES)}." + did_you_mean(request.mode, MODES))
    if request.backbones not in ("real", "tiny", "random", "toyworld"):
        raise UserError(f"unknown backbones {request.backbones!r}", "--backbones", "Use real, tiny, random or toyworld.")
    if not Path(request.images).is_dir():
        raise UserError("image folder not found", str(request.images), "Pass the folder holding your images.")
    check_name(request.name, "arm name", "--name")


# --- collecting: layout or manifest ------------------------------------------------------------
def collect(request: ScoreRequest, dataset: Dataset) -> list[ExternalImage]:
    """Every image to score, checked (module docstring); a problem is one UserError."""
    images = (from_manifest(Path(request.manifest), Path(request.images), dataset, request.identifier)
              if request.manifest else from_layout(Path(request.images), dataset))
    _refuse_duplicates(images)
    return images


def from_layout(folder: Path, dataset: Dataset) -> list[ExternalImage]:
    names = [s.name for s in dataset.subjects]
    images = []
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            raise UserError("not a subject folder", str(entry),
                            "IMAGES holds one folder per subject (IMAGES/<subject>/<prompt>_<sample>.png).")
        if entry.name not in names:
            raise UserError(f"unknown subject {entry.name!r} in dataset {dataset.name}", str(entry),
                            "Name subject folders as the dataset does." + did_you_mean(entry.name, names))
        found = _layout_images(entry, dataset)
        if not found:
            raise UserError(f"subject {entry.name} has no images", str(entry),
                            "Add <prompt index>_<sample index>.png files, or remove the folder.")
        images += found
    if not images:
        raise UserError("no subject folders found", str(folder), "Expected IMAGES/<subject>/<prompt>_<sample>.png.")
    return images


def _layout_images(folder: Path, dataset: Dataset) -> list[ExternalImage]:
    subject = dataset.subject(folder.name)
    templates = dataset.prompts_for(subject)
    images = []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        match = LAYOUT_NAME.match(path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or not match or not path.is_file():
            raise UserError("not an image named <prompt index>_<sample index>.png", str(path),
                            f"Rename it (e.g. 3_0.png: prompt 3, first sample; {'/'.join(IMAGE_SUFFIXES)}) or "
                            "move it out.")
        prompt_index, sample_index = int(match["prompt"]), int(match["sample"])
        if prompt_index >= len(templates):
            raise UserError(f"prompt index {prompt_index} is out of range: subject {subject.name} has "
                            f"{len(templates)} prompts", str(path), f"Use 0 to {len(templates) - 1}.")
        template = templates[prompt_index]
        images.append(ExternalImage(subject.name, prompt_index, sample_index, template.format(subject.class_noun),
                                    template.format(subject.class_noun), template, path, str(path)))
    return images


def from_manifest(manifest: Path, folder: Path, dataset: Dataset, identifier: str | None) -> list[ExternalImage]:
    rows = _read_manifest(manifest)
    names = [s.name for s in dataset.subjects]
    prompt_numbers: dict[tuple[str, str], int] = {}
    samples: dict[tuple[str, str], int] = {}
    images = []
    for number, row in rows:
        where = f"{manifest}, row {number}"
        subject_name = str(row["subject"])
        if subject_name not in names:
            raise UserError(f"unknown subject {subject_name!r} in dataset {dataset.name}", where,
                            "Use the dataset's subject names." + did_you_mean(subject_name, names))
        noun, prompt = dataset.subject(subject_name).class_noun, str(row["prompt"])
        key = (subject_name, prompt)
        prompt_index = prompt_numbers.setdefault(key, sum(1 for s, _ in prompt_numbers if s == subject_name))
        sample_index = _sample(row.get("sample"), samples.get(key, 0), where)
        samples[key] = max(samples.get(key, 0), sample_index + 1)
        path = _inside(folder, str(row["image"]), where)
        clip_text, template = phrase_texts(prompt, identifier, noun)
        images.append(ExternalImage(subject_name, prompt_index, sample_index, prompt, clip_text, template, path,
                                    where))
    if not images:
        raise UserError("the manifest lists no images", str(manifest), "Add one row per image.")
    return images


def phrase_texts(prompt: str, identifier: str | None, noun: str) -> tuple[str, str]:
    """(CLIP-T text, template) of a generated prompt: "a sks dog in the snow" with
    identifier "sks" -> ("a dog in the snow", "a {} in the snow")."""
    words = prompt.split()
    clip_text = " ".join(w for w in words if w != identifier) if identifier else prompt
    phrase = f"{identifier} {noun}" if identifier else noun
    template = prompt.replace(phrase, "{}", 1) if phrase in prompt else clip_text.replace(noun, "{}", 1)
    return clip_text, template


def _read_manifest(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise UserError("manifest not found", str(path), "Pass a CSV or JSONL file (--manifest).")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise UserError(f"not a JSON object: {err.msg}", f"{path}, line {number}",
                                    "Write one JSON object per line.") from None
    else:
        rows = [(number, row) for number, row in enumerate(csv.DictReader(text.splitlines()), start=2)]
    for number, row in rows:
        missing = [c for c in MANIFEST_COLUMNS if not isinstance(row, dict) or row.get(c) in (None, "")]
        if missing:
            raise UserError(f"missing {', '.join(missing)}", f"{path}, row {number}",
                            f"Every row needs {', '.join(MANIFEST_COLUMNS)} (and optionally sample).")
    return rows


def _sample(value: Any, next_free: int, where: str) -> int:
    if value in (None, ""):
        return next_free
    try:
        sample = int(value)
    except (TypeError, ValueError):
        sample = -1
    if sample < 0 or str(value).strip() != str(sample):
        raise UserError(f"sample is {value!r}, not a non-negative integer", where, "Use 0, 1, 2, ... or leave it empty.")
    return sample


def _inside(folder: Path, name: str, where: str) -> Path:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise UserError(f"image {name!r} lies outside the image folder", where, "Give paths relative to IMAGES.")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"image {name!r} is not a {'/'.join(IMAGE_SUFFIXES)} file", where, "Convert it or drop the row.")
    return path


def _refuse_duplicates(images: list[ExternalImage]) -> None:
    seen_files: dict[Path, str] = {}
    seen_keys: dict[tuple, str] = {}
    for image in images:
        key = (image.subject, image.prompt_index, image.sample_index)
        if image.file in seen_files:
            raise UserError(f"image listed twice (also {seen_files[image.file]})", image.where,
                            "List each image once.")
        if key in seen_keys:
            raise UserError(f"subject {image.subject}, prompt {image.prompt_index}, sample {image.sample_index} "
                            f"given twice (also {seen_keys[key]})", image.where, "Give each sample its own index.")
        seen_files[image.file], seen_keys[key] = image.where, image.where


@dataclass(frozen=True)
class FileCheck:
    """What `inspect` read of one file: its sha256, and the file's identity then (inode,
    size, modification and change times). A copy made while all four still hold has the
    bytes that were hashed: rewriting or replacing a file moves its ctime or inode, which
    no program can set back (`touch -r` and `cp -p` restore mtime only)."""

    sha256: str
    stamp: tuple[int, int, int, int]


def _stamp(path: Path) -> tuple[int, int, int, int]:
    found = path.stat()
    return found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


def inspect(images: list[ExternalImage]) -> dict[Path, FileCheck]:
    """Each file's sha256, read once, after checking it is present and a readable image
    (header and checksums; the full decode happens while scoring, where a damaged file
    fails its cell naming the file). A problem is one UserError naming the file or row."""
    def one(image: ExternalImage) -> tuple[str | None, FileCheck | None]:
        if not image.file.is_file():
            return "image file not found", None
        stamp = _stamp(image.file)
        data = image.file.read_bytes()
        return _unreadable(data), FileCheck(hashlib.sha256(data).hexdigest(), stamp)

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(one, images))
    for image, (problem, _) in zip(images, found):
        if problem:
            raise UserError(problem, image.where if image.where == str(image.file) else f"{image.where}: "
                            f"{image.file}", "Replace the file with a valid image or remove it.")
    return {image.file: check for image, (_, check) in zip(images, found)}


def _unreadable(data: bytes) -> str | None:
    from PIL import Image

    from varbench.metrics.imagefile import DECODE_ERRORS

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.verify()
    except DECODE_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {str(err)[:80]})"
    return None


# --- the run in the store ---------------------------------------------------------------------
def external_cells(request: ScoreRequest, dataset: Dataset, images: list[ExternalImage],
                   checked: dict[Path, FileCheck]) -> tuple[Protocol, list[Cell]]:
    name = request.protocol or request.dataset
    check_name(name, "protocol", "--protocol")
    metrics = MetricsConfig(mode=request.mode, backbones=request.backbones, div=request.div,  # type: ignore[arg-type]
                            pres_images=0, extra=list(request.extra))
    spec = ProtocolSpec(name=name, version=1, arms=[], data=DataSpec(dataset=request.dataset, root=request.data_root),  # type: ignore[arg-type]
                        metrics=metrics, description=f"images scored with varbench score ({request.dataset})")
    protocol = Protocol(spec=spec, path=Path(request.images))
    from varbench import execution

    arm = ExternalArm(name=request.name, method_name="external", config=ExternalConfig(request.identifier),
                      protocol=protocol)
    arm.execution = execution.resolve(ExternalConfig, {}, request.execution, "--set")
    arm.images_fingerprint, arm.files = fingerprint(images, [checked[i.file].sha256 for i in images]), len(images)
    protocol.arms.append(arm)
    cells = []
    for subject in dataset.subjects:
        mine = [image for image in images if image.subject == subject.name]
        if mine:
            given = tuple(_planned(image) for image in sorted(mine, key=lambda i: (i.prompt_index, i.sample_index)))
            cells.append(Cell(protocol, arm, subject, (), given=given))
    return protocol, cells


def _planned(image: ExternalImage) -> PlannedImage:
    path = f"images/p{image.prompt_index:03d}_s{image.sample_index:02d}{image.file.suffix.lower()}"
    return PlannedImage("eval", image.prompt_index, image.sample_index, -1, image.prompt, image.clip_text,
                        image.template, path)


def fingerprint(images: list[ExternalImage], hashes: list[str]) -> str:
    """A hash of what was scored: each image's bytes (`hashes`), subject, prompt and indices."""
    return content_hash(sorted((i.subject, i.prompt_index, i.sample_index, i.prompt, h) for i, h in zip(images, hashes)),
                        length=16)


def stage(root: Path, cells: list[Cell], images: list[ExternalImage], checked: dict[Path, FileCheck]) -> None:
    """Copy each cell's files into the store and seal them as its generated images (a
    cell already staged and intact is left alone; a half-copied one is staged again).
    The seal takes the digests `inspect` computed: each copy is a kernel copy of a file
    whose identity (FileCheck) is what it was when it was hashed, checked after copying,
    so hashing the copies again would only read the same bytes once more."""
    for cell in cells:
        run = RunStore(root, cell.protocol.name, cell.arm.run_id)
        run.write_identity(cell.arm.identity())
        store = run.cell(cell.subject.name)
        if store.state().state == "done":
            continue
        store.refuse_links(root)
        sources = {_planned(image).path: image for image in images if image.subject == cell.subject.name}
        (store.dir / "images").mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(8) as pool:  # copies release the GIL
            list(pool.map(lambda p: _copy_unchanged(sources[p.path], store.dir / p.path, checked), cell.images))
        store.replace_rows("images", IMAGE_COLUMNS, [_image_row(cell, p) for p in cell.images])
        store.update_facts(subject=cell.subject.name, class_noun=cell.subject.class_noun, live=cell.subject.live,
                           external=True, trainable_parameters=0,
                           sources={p.path: str(sources[p.path].file) for p in cell.images})
        store.set_status("done", known={p.path: checked[sources[p.path].file].sha256 for p in cell.images},
                         external=True)


def _copy_unchanged(image: ExternalImage, target: Path, checked: dict[Path, FileCheck]) -> None:
    expected = checked[image.file]
    try:
        shutil.copyfile(image.file, target)
        unchanged = _stamp(image.file) == expected.stamp and target.stat().st_size == expected.stamp[1]
    except OSError as err:  # deleted or made unreadable since it was checked
        target.unlink(missing_ok=True)
        raise UserError(f"the image could not be copied ({type(err).__name__}: {err.strerror or err})",
                        str(image.file), "Check the file is still there and readable, then run again.") from None
    if not unchanged:
        target.unlink()
        raise UserError("the image changed while varbench read it", str(image.file),
                        "Let whatever writes the folder finish, then run varbench score again.")


def _image_row(cell: Cell, image: PlannedImage) -> dict[str, Any]:
    return {"run_id": cell.arm.run_id, "subject": cell.subject.name, "kind": image.kind,
            "prompt_index": image.prompt_index, "sample_index": image.sample_index, "seed": "",
            "prompt": image.prompt, "clip_text": image.clip_text, "template": image.template, "path": image.path}
