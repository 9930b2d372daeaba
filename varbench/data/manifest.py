"""Checksum manifests: the exact bytes every dataset file must have.

Each dataset ships a manifest in `varbench/data/manifests/<name>.sha256`, one file per
line, paths relative to the dataset folder:

    <sha256 hex>  <size in bytes>  <path>

A few files could not be hashed when the manifest was written (their bytes were not
available); for those the line carries the file's git blob id, which the upstream
repository pins just as firmly, and "-" for the unknown size:

    gitsha1:<40 hex>  -  <path>

The git blob id is sha1(b"blob <size>\\0" + content), so it is checked from the bytes
alone. Lines starting with "#" are comments (the source and pinned revision).

Two levels of checking: `quick_check` (presence and size, a stat per file: cheap enough
for every `open_dataset`) and `verify_folder` (every byte hashed: on fetch and on
`varbench data verify`).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from varbench.errors import UserError

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
GIT_SHA1 = "gitsha1:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # posix path relative to the dataset folder, e.g. "dog2/03.jpg"
    digest: str  # sha256 hex, or "gitsha1:<hex>" (see the module docstring)
    size: int | None  # None where the manifest could not record it

    @property
    def subject(self) -> str | None:
        """The subject folder this file belongs to; None for top-level files."""
        head, sep, _ = self.path.partition("/")
        return head if sep else None


@dataclass(frozen=True)
class Manifest:
    name: str
    entries: tuple[ManifestEntry, ...]
    fingerprint: str  # sha256 of the manifest text: names this exact set of bytes

    def subject_files(self, subject: str) -> list[ManifestEntry]:
        return [entry for entry in self.entries if entry.subject == subject]

    def subjects(self) -> list[str]:
        return sorted({entry.subject for entry in self.entries if entry.subject})

    def image_paths(self, root: Path, subject: str) -> tuple[Path, ...]:
        """The subject's reference images under `root`, in natural order (2.png before 10.png).

        Taken from the manifest, not from a folder listing, so stray files in a local
        copy (thumbnails, checksum lists) never become reference images.
        """
        names = [entry.path for entry in self.subject_files(subject)
                 if entry.path.lower().endswith(IMAGE_SUFFIXES)]
        return tuple(root / name for name in sorted(names, key=_natural_key))


def _natural_key(path: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def load_manifest(name: str) -> Manifest:
    """The manifest shipped with the package for dataset `name`."""
    path = MANIFEST_DIR / f"{name}.sha256"
    if not path.is_file():
        raise UserError(f"no checksum manifest for dataset {name!r}", str(path),
                        "Reinstall varbench; the manifests ship inside the package.")
    return parse_manifest(name, path.read_text(encoding="utf-8"), str(path))


def parse_manifest(name: str, text: str, where: str) -> Manifest:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) != 3 or not _valid_digest(parts[0]) or not (parts[1].isdigit() or parts[1] == "-"):
            raise UserError(f"malformed manifest line {number}: {line!r}", where,
                            "Reinstall varbench; manifest files must not be edited by hand.")
        digest, size, path = parts
        entries.append(ManifestEntry(path=path, digest=digest, size=None if size == "-" else int(size)))
    fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Manifest(name=name, entries=tuple(entries), fingerprint=fingerprint)


def _valid_digest(digest: str) -> bool:
    hex_part, length = (digest[len(GIT_SHA1):], 40) if digest.startswith(GIT_SHA1) else (digest, 64)
    return len(hex_part) == length and all(c in "0123456789abcdef" for c in hex_part)


def bytes_digest(data: bytes, entry: ManifestEntry) -> str:
    """The digest of `data` in the form `entry` names (sha256, or git blob id)."""
    if entry.digest.startswith(GIT_SHA1):
        # git hashes a header holding the size, then the bytes
        return GIT_SHA1 + hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path, entry: ManifestEntry) -> str:
    # Dataset files are a few MB at most: reading one whole is simpler than streaming.
    return bytes_digest(path.read_bytes(), entry)


def digest_kind(entry: ManifestEntry) -> str:
    return "git blob id" if entry.digest.startswith(GIT_SHA1) else "sha256"


def manifest_line(path: Path, relative: str) -> str:
    """One sha256 manifest line for a file (maintainers use it to write manifests)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{digest}  {path.stat().st_size}  {relative}"


@dataclass(frozen=True)
class FileProblem:
    path: str  # relative to the dataset folder
    problem: str  # "missing", "has 12 bytes, expected 34", "sha256 differs"


@dataclass
class VerifyReport:
    """What checking a dataset folder against its manifest found."""

    name: str
    root: Path
    checked_files: int = 0
    checked_bytes: int = 0
    problems: list[FileProblem] = field(default_factory=list)
    absent_subjects: list[str] = field(default_factory=list)  # optional subjects with no folder

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        """A short summary for the CLI: the verdict, then one line per problem."""
        verdict = "match the manifest" if self.ok else f"checked, {len(self.problems)} missing or changed"
        lines = [f"{self.name}: {self.checked_files} files ({self.checked_bytes / 1e6:.1f} MB) {verdict} ({self.root})"]
        lines += [f"  {problem.path} {problem.problem}" for problem in self.problems]
        if self.absent_subjects:
            lines.append(f"  absent from this copy (left out): {', '.join(self.absent_subjects)}")
        return "\n".join(lines)

    def raise_for_problems(self, fix: str) -> None:
        """One UserError naming the first bad file (and how many more there are)."""
        if self.ok:
            return
        first = self.problems[0]
        what = f"dataset {self.name}: file {first.path} {first.problem}"
        if len(self.problems) > 1:
            what += f" (and {len(self.problems) - 1} more files missing or changed)"
        raise UserError(what, str(self.root / first.path), fix)


def absent_subjects(root: Path, optional_subjects: tuple[str, ...]) -> list[str]:
    """The optional subjects whose whole folder is missing from `root`."""
    return [subject for subject in optional_subjects if not (root / subject).is_dir()]


def quick_check(manifest: Manifest, root: Path, optional_subjects: tuple[str, ...] = ()) -> VerifyReport:
    """Presence and size of every file (one stat each); no hashing.

    An optional subject whose whole folder is missing is listed in `absent_subjects`
    instead of counting as a problem.
    """
    report = VerifyReport(manifest.name, root)
    report.absent_subjects = absent_subjects(root, optional_subjects)
    for entry in manifest.entries:
        if entry.subject in report.absent_subjects:
            continue
        path = root / entry.path
        if not path.is_file():
            report.problems.append(FileProblem(entry.path, "is missing"))
            continue
        size = path.stat().st_size
        if entry.size is not None and size != entry.size:
            report.problems.append(FileProblem(entry.path, f"has {size:,} bytes, expected {entry.size:,}"))
        report.checked_files += 1
        report.checked_bytes += size
    return report


def verify_folder(manifest: Manifest, root: Path, optional_subjects: tuple[str, ...] = ()) -> VerifyReport:
    """Hash every file and compare it with the manifest."""
    report = quick_check(manifest, root, optional_subjects)
    already_bad = {problem.path for problem in report.problems}  # missing, or the size differs
    for entry in manifest.entries:
        if entry.subject in report.absent_subjects or entry.path in already_bad:
            continue
        if file_digest(root / entry.path, entry) != entry.digest:
            report.problems.append(FileProblem(entry.path, f"is corrupt or changed ({digest_kind(entry)} differs)"))
    return report
