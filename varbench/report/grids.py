"""Sample grids: per subject, the reference photos, then one row of generated images per arm.

Every arm with results gets its row, plugins included; rows are grouped by method family
(`Method.family`, in order of first appearance), and each row names its family under
its label. Columns are the prompts chosen in the spec (prompt index, one sample each); every row
is labelled with its arm, every column with the prompt text (identifier removed). An
image that is not on disk (pending or failed cell) becomes a grey tile naming the cell's
state, so a gap is visible rather than silently closed. When the dataset cannot be
opened the grid is drawn without references and its header says why.

The image paths come from `images.csv`, which anyone can edit: a path that resolves
outside the results root (`..`, an absolute path, a symlink leading elsewhere) is never
opened; its tile says "outside results".
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont, ImageOps

from varbench.data.subject import load_rgb
from varbench.errors import UserError
from varbench.report.paths import inside
from varbench.report.results import RANDOM_INIT_NOTE
from varbench.report.families import families_in_order
from varbench.report.section import Row, SectionView
from varbench.report.spec import GridSpec

LABEL_WIDTH = 150
MIN_WIDTH = 480  # room for the title lines of narrow grids
PAD = 4
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (215, 215, 215)
TEXT = (20, 20, 20)
WARNING = (178, 34, 34)
FAMILY = (110, 110, 110)
OUTSIDE = "outside results"


@dataclass
class GridFile:
    name: str  # file stem under <out>/grids/
    title: str
    caption: str
    png: bytes


def build_grids(view: SectionView, data_root: str | None = None) -> tuple[list[GridFile], list[str]]:
    spec = view.spec.grids
    if spec is None:
        return [], []
    images = view.protocol.images
    evals = images[images["kind"] == "eval"] if not images.empty else images
    subjects = spec.subjects or [s for s in view.protocol.subjects if s in set(evals["subject"])][:spec.max_subjects]
    references, reason = _reference_paths(view, subjects, spec.references, data_root)
    grids = [_subject_grid(view, spec, subject, evals, references.get(subject, []), reason) for subject in subjects]
    notes = [f"{view.title}: sample grids drawn without reference photos ({reason})."] if reason else []
    return grids, notes


def _reference_paths(view: SectionView, subjects: list[str], count: int,
                     data_root: str | None) -> tuple[dict[str, list[Path]], str]:
    """Reference photo paths per subject, or an empty mapping and why they are missing (a
    report reads the local copy and never downloads: that is `varbench data fetch`'s job)."""
    if count == 0 or not view.runs:
        return {}, ""
    from varbench.data import open_dataset

    name = view.runs[0].dataset
    try:
        dataset = open_dataset(name, data_root, fetch_missing=False)
        return {s: list(dataset.subject(s).image_paths[:count]) for s in subjects}, ""
    except UserError as err:
        return {}, f"dataset {name!r} could not be opened: {err.line()}"
    except (OSError, ImportError) as err:
        return {}, f"dataset {name!r} could not be opened: {type(err).__name__}: {err}"


def _subject_grid(view: SectionView, spec: GridSpec, subject: str, evals: pd.DataFrame,
                  references: list[Path], reason: str) -> GridFile:
    size, font = spec.thumbnail, grid_font()
    mine = evals[evals["subject"] == subject]
    headers = [_prompt_text(mine, index) for index in spec.prompts]
    rows: list[tuple[str, str, list[Image.Image]]] = []
    if references:
        rows.append(("references", "", [_tile(path, size, "unreadable") for path in references]))
    for row in by_family([row for row in view.rows if row.run is not None]):
        state = _cell_state(view, row.run_id, subject)
        root = row.run.store.root
        # a damaged cell's images are not shown as results: a grey tile says why
        tiles = [_generated_tile(None if state == "damaged" else _image_path(mine, row.run_id, index, spec.sample),
                                 root, size, state) for index in spec.prompts]
        rows.append((row.label, row.family, tiles))
    title_lines = [f"{view.protocol.name} / {subject} ({_subject_kind(view, subject)}), sample {spec.sample}"]
    if view.random_init:
        title_lines.append(RANDOM_INIT_NOTE)
    if reason:
        title_lines.append("no reference photos: " + reason)
    png = _compose(title_lines, headers, rows, size, font)
    caption = (f"Subject {subject}: " + ("reference photos, then " if references else "")
               + f"one row per arm, grouped by method family, over prompts "
               f"{', '.join(str(i) for i in spec.prompts)} (sample {spec.sample}).")
    if view.random_init:
        caption += f" Warning, {RANDOM_INIT_NOTE}."
    return GridFile(f"{view.stem}-{subject}", f"{view.title}: {subject}", caption, png)


def by_family(rows: list[Row]) -> list[Row]:
    """Rows grouped by method family, families in order of first appearance (stable)."""
    order = {family: index for index, family in enumerate(families_in_order([row.family for row in rows]))}
    return sorted(rows, key=lambda row: order[row.family])


def _compose(title_lines: list[str], headers: list[str], rows: list[tuple[str, str, list[Image.Image]]],
             size: int, font: ImageFont.ImageFont) -> bytes:
    columns = max([len(headers)] + [len(tiles) for _, _, tiles in rows])
    line = _line_height(font)
    width = max(LABEL_WIDTH + columns * (size + PAD) + PAD, MIN_WIDTH)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [(piece, index > 0) for index, text in enumerate(title_lines)
               for piece in _wrap(measure, text, font, width - 2 * PAD)]
    header_height = 3 * line + PAD
    title_height = len(wrapped) * line + 2 * PAD
    height = title_height + header_height + len(rows) * (size + PAD) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, (text, warning) in enumerate(wrapped):
        draw.text((PAD, PAD + index * line), text, fill=WARNING if warning else TEXT, font=font)
    for column, text in enumerate(headers):
        x = LABEL_WIDTH + column * (size + PAD)
        for index, piece in enumerate(_wrap(draw, text, font, size)[:3]):
            draw.text((x, title_height + index * line), piece, fill=TEXT, font=font)
    for row_index, (label, family, tiles) in enumerate(rows):
        y = title_height + header_height + row_index * (size + PAD)
        pieces = [(piece, TEXT) for piece in _wrap(draw, label, font, LABEL_WIDTH - 2 * PAD)[:3]]
        pieces += [(f"({family})", FAMILY)] if family else []
        for index, (piece, colour) in enumerate(pieces):
            draw.text((PAD, y + size // 2 - line + index * line), piece, fill=colour, font=font)
        for column, tile in enumerate(tiles):
            canvas.paste(tile, (LABEL_WIDTH + column * (size + PAD), y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _tile(path: Path | None, size: int, missing_text: str) -> Image.Image:
    """A square thumbnail of `path`, or a grey tile saying why there is no image."""
    if path is not None and Path(path).is_file():
        try:
            return ImageOps.fit(load_rgb(Path(path)), (size, size), Image.Resampling.BICUBIC)
        except UserError:
            missing_text = "unreadable"
    tile = Image.new("RGB", (size, size), PLACEHOLDER)
    draw = ImageDraw.Draw(tile)
    font = grid_font()
    width = draw.textlength(missing_text, font=font)
    draw.text(((size - width) / 2, size / 2 - 6), missing_text, fill=TEXT, font=font)
    return tile


def _generated_tile(path: Path | None, root: Path, size: int, missing_text: str) -> Image.Image:
    """The tile of a generated image; only a file that resolves inside `root` is opened."""
    if path is None:
        return _tile(None, size, missing_text)
    resolved = inside(path, root)
    return _tile(resolved, size, missing_text if resolved is not None else OUTSIDE)


def _image_path(images: pd.DataFrame, run_id: str | None, prompt_index: int, sample: int) -> Path | None:
    found = images[(images["run_id"] == run_id) & (images["prompt_index"].astype(str) == str(prompt_index))
                   & (images["sample_index"].astype(str) == str(sample))]
    if found.empty:
        return None
    return Path(found["cell_dir"].iloc[0]) / found["path"].iloc[0]


def _prompt_text(images: pd.DataFrame, prompt_index: int) -> str:
    found = images[images["prompt_index"].astype(str) == str(prompt_index)]
    return f"{prompt_index}: {found['clip_text'].iloc[0]}" if not found.empty else f"prompt {prompt_index}"


def _cell_state(view: SectionView, run_id: str | None, subject: str) -> str:
    cells = view.cells(run_id)
    state = cells.loc[cells["subject"] == subject, "state"]
    return "no image" if state.empty or state.iloc[0] == "done" else str(state.iloc[0])


def _subject_kind(view: SectionView, subject: str) -> str:
    live = view.protocol.cells.loc[view.protocol.cells["subject"] == subject, "live"].dropna()
    return "unknown kind" if live.empty else ("live" if bool(live.iloc[0]) else "object")


def grid_font(size: int = 12) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` (Pillow >= 10.1 with FreeType), else its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0 takes no size: fall back to the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return lines + ([current] if current else [])


def _line_height(font: ImageFont.ImageFont) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom - top) + 4
