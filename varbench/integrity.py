"""Sealing finished cells, and checking them before they are trusted.

When a cell is done, its `status.json` records every file the cell finished with: path
(relative to the cell folder), size and sha256. That is the cell's seal, written in the
same atomic write as the `done` state, so there is never a done cell without one.

`check_cell` compares a cell folder with its seal: sizes always (a stat per file),
hashes when asked (`--verify`), plus a parse of the records readers rely on (every
image a PNG). Each score folder (`scores/<score id>/`, one per metric mode the cell was
scored in) has a seal of its own, checked by `check_score` (every metric value a
number, a score for every image). What they find is a list of `Problem`s; a done cell
with problems is *damaged*, and nothing counts it.

Repairing quarantines the damaged files (moved to `damaged/<time>/`, never deleted: a
user may want to look at them) together with whatever was computed from them, so the
runner's usual resume logic redoes exactly that: a damaged PNG is regenerated and the
cell rescored (in every mode), damaged scores are only rescored, damaged fit records (cell.json,
losses.csv, the artifact) are refitted, a damaged timings.csv is dropped (the repair's
own timings replace it; the lost times show as missing, never as wrong), and an
unreadable status.json is replaced after the cell's records are checked and rescored.

Cells finished before seals existed are checked by their records alone.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

QUARANTINE = "damaged"
# Files in a cell folder that describe the cell's state rather than being its results.
UNSEALED = {"status.json", "owner.json", ".lock", "error.txt"}
UNSEALED_FOLDERS = {QUARANTINE, "work", "scores"}  # a score folder has a seal of its own
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How each stored image's first bytes must look, by suffix: generated images are PNGs;
# images scored by `varbench score` keep their own format (their bytes are what was scored).
SIGNATURES = {".png": (PNG_SIGNATURE,), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
              ".webp": (b"RIFF",)}
FIT_RECORDS = ("cell.json", "losses.csv", "artifact")


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the cell folder
    what: str  # "missing", "12 bytes, sealed 3,401", "value 'banana' is not a number", ...

    def line(self) -> str:
        return f"{self.path}: {self.what}"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sealed_files(cell_dir: Path) -> list[Path]:
    """The result files of a cell folder (everything but state files, scratch and quarantine)."""
    found = []
    for path in sorted(Path(cell_dir).rglob("*")):
        relative = path.relative_to(cell_dir)
        if (relative.parts[0] in UNSEALED_FOLDERS or str(relative) in UNSEALED
                or ".tmp-" in path.name or f".{QUARANTINE}-" in path.name):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def seal(cell_dir: Path, known: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every result file of the cell (hashed in a
    few threads: hashlib releases the GIL, and a cell of scored external images can hold
    thousands of files). `known`: digests the caller computed of exactly these bytes (the
    staged copies of `varbench score`), taken instead of reading the files again."""
    from concurrent.futures import ThreadPoolExecutor

    known = known or {}
    files = sealed_files(cell_dir)
    names = [str(path.relative_to(cell_dir)) for path in files]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda item: known.get(item[0]) or file_digest(item[1]), zip(names, files)))
    return {name: {"bytes": path.stat().st_size, "sha256": digest} for name, path, digest in zip(names, files, digests)}


def check_cell(cell_dir: Path, sealed: dict[str, Any] | None, hashes: bool = False) -> list[Problem]:
    """What is wrong with a done cell's generation: files against the seal (if any), then
    its records (scores are checked per score folder: `check_score`)."""
    cell_dir = Path(cell_dir)
    problems = check_seal(cell_dir, sealed, hashes) if sealed is not None else []
    damaged = {p.path for p in problems}
    return problems + [p for p in check_records(cell_dir) if p.path not in damaged]


def check_seal(cell_dir: Path, sealed: Any, hashes: bool) -> list[Problem]:
    if not isinstance(sealed, dict):
        return [Problem("status.json", "its list of files is not readable")]
    problems = []
    for name, expected in sorted(sealed.items()):
        problem = _check_file(cell_dir, name, expected, hashes)
        if problem:
            problems.append(Problem(name, problem))
    return problems


def _check_file(cell_dir: Path, name: str, expected: Any, hashes: bool) -> str | None:
    path = cell_dir / name
    if not isinstance(expected, dict) or not _inside(cell_dir, name):
        return "unreadable entry in status.json"
    if path.is_symlink():
        return "is a symbolic link"
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a regular file"
    size = path.stat().st_size
    if size != expected.get("bytes"):
        return f"{size:,} bytes, sealed {expected.get('bytes')!s}"
    if hashes and file_digest(path) != expected.get("sha256"):
        return "content changed (sha256 differs from the seal)"
    return None


def _inside(cell_dir: Path, name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def check_records(cell_dir: Path) -> list[Problem]:
    """Parse what readers rely on: every planned image is a PNG (or, for scored external
    images, the JPEG or WebP its name says). Cheap (one small CSV and each file's first bytes)."""
    images, problem = _read_csv(cell_dir / "images.csv", ("kind", "path"))
    if problem:
        return [Problem("images.csv", problem)]
    return [Problem(row["path"], what) for row in images if (what := _image_problem(cell_dir, row["path"]))]


def check_score(cell_dir: Path, score_dir: Path, sealed: Any, hashes: bool = False) -> list[Problem]:
    """A done score folder against its seal, then its metrics: every value a number and
    every evaluation image of the cell scored. Paths are relative to the cell folder."""
    prefix = score_dir.relative_to(cell_dir)
    problems = [Problem(str(prefix / p.path), p.what) for p in check_seal(score_dir, sealed, hashes)]
    if problems:
        return problems
    images, _ = _read_csv(cell_dir / "images.csv", ("kind", "path"))
    metrics, problem = _read_csv(score_dir / "metrics.csv", ("metric", "image", "value"))
    if problem:
        return [Problem(str(prefix / "metrics.csv"), problem)]
    return [Problem(str(prefix / p.path), p.what) for p in _metric_problems(images, metrics)]


def _image_problem(cell_dir: Path, name: str) -> str | None:
    if not _inside(cell_dir, name):
        return "path in images.csv leaves the cell folder"
    path = cell_dir / name
    if path.is_symlink() or not path.is_file():
        return "missing" if not path.exists() else "not a regular file"
    signatures = SIGNATURES.get(path.suffix.lower(), ())
    with open(path, "rb") as handle:
        head = handle.read(12)
    if not any(head.startswith(signature) for signature in signatures):
        return f"not a {path.suffix.lstrip('.').upper() or 'PNG'} file"
    if path.suffix.lower() == ".webp" and head[8:12] != b"WEBP":
        return "not a WEBP file"
    return None


def _metric_problems(images: list[dict[str, str]], metrics: list[dict[str, str]]) -> list[Problem]:
    for index, row in enumerate(metrics, start=2):  # line numbers as an editor shows them
        if not _is_number(row.get("value")):
            shown = str(row.get("value"))[:20]
            return [Problem("metrics.csv", f"line {index}: value {shown!r} is not a number")]
    scored = {row["image"] for row in metrics}
    unscored = [row["path"] for row in images if row["kind"] == "eval" and row["path"] not in scored]
    if unscored:
        return [Problem("metrics.csv", f"no scores for {len(unscored)} image(s), e.g. {unscored[0]}")]
    return []


def _is_number(text: Any) -> bool:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return False
    return not math.isinf(value)


def _read_csv(path: Path, columns: tuple[str, ...]) -> tuple[list[dict[str, str]], str | None]:
    if path.is_symlink() or not path.is_file():
        return [], "missing" if not path.exists() else "not a regular file"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return [], f"unreadable ({type(err).__name__})"
    if not rows:
        return [], "no rows"
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        return [], f"lacks column(s) {', '.join(missing)}"
    for line, row in enumerate(rows, start=2):  # a short or long row reads as None / a list
        if None in row or any(not isinstance(row[c], str) for c in columns):
            return [], f"line {line} is malformed"
    return rows, None


# --- repair -------------------------------------------------------------------------------
def to_redo(problems: list[Problem]) -> set[str]:
    """The files to quarantine so the runner recomputes what the damaged ones came from."""
    names = {p.path for p in problems}
    redo = set(names)
    if any(_top(n) in ("images", "pres") for n in names):
        redo.add("scores")  # every score of a regenerated image (and DIV of its prompt) changes
    redo.update(str(Path(*Path(n).parts[:2])) for n in names if _top(n) == "scores")  # the whole score folder
    if any(_top(n) in FIT_RECORDS for n in names):
        redo.update(FIT_RECORDS)  # refit: losses, facts and artifact come from one fit
    if "status.json" in names:
        redo.add("scores")  # no seal to check the images' scores against: score again
    return redo


def _top(name: str) -> str:
    return Path(name).parts[0] if Path(name).parts else name


def quarantine(cell_dir: Path, names: set[str]) -> Path | None:
    """Move the named files or folders of a cell into `damaged/<UTC time>/`; returns that
    folder (None when none of them existed)."""
    cell_dir = Path(cell_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = cell_dir / QUARANTINE / stamp
    moved = False
    for name in sorted(names):
        source = cell_dir / name
        if not _inside(cell_dir, name) or not (source.exists() or source.is_symlink()):
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)  # a link is moved as a link, never followed
        moved = True
    return target if moved else None


def move_aside(path: Path) -> Path:
    """Rename a file varbench must replace but cannot read (or a folder where a file
    belongs) to `<name>.damaged-<UTC time>` beside it, so nothing is lost."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.{QUARANTINE}-{stamp}")
    os.replace(path, aside)  # renames a folder or a link as well, never following it
    return aside
