"""Where a report may read and write.

Reading: a path taken from a results CSV (the `path` column of `images.csv`) is data
anyone can edit, so it is resolved, every symlink followed, and used only when it lands
inside the results root (`inside`). A `..` path, an absolute path or a symlink leading
elsewhere is never opened.

Writing: `OutputFolder` owns the report's output folder. It records what it wrote in
`<out>/.varbench-report.json` (relative path -> sha256), and a later render removes only
files listed there that it no longer writes, and only while they are still regular files
inside `out` with the recorded content; a file the user changed since is kept, with a
warning. An existing non-empty folder without that index was not made by varbench: it is
refused unless `force` (a report written before the index existed included), and even
then nothing varbench did not write is deleted; files of the same names are replaced. A write
replaces a symlink standing at the target path (varbench.fileio renames over the path,
it never opens the link's target), and a folder inside `out` that leads outside is
refused.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path, PurePosixPath

from varbench import __version__
from varbench.errors import UserError
from varbench.fileio import write_bytes, write_json

INDEX_NAME = ".varbench-report.json"
INDEX_VERSION = 1
PAGE_NAME = "index.html"
OUTPUT_FOLDERS = {"tables": (".md", ".tex", ".csv"), "figures": (".png", ".pdf"), "grids": (".png",)}


def inside(path: Path, root: Path) -> Path | None:
    """`path` with every symlink resolved, or None when that lies outside `root`."""
    try:
        resolved = Path(path).resolve()
        base = Path(root).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop or a NUL byte: nothing safe to open
        return None
    return resolved if resolved.is_relative_to(base) else None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_index(out: Path, files: dict[str, str]) -> None:
    """Record `files` (path relative to `out` -> sha256) as what varbench wrote in `out`."""
    write_json(Path(out) / INDEX_NAME, {"version": INDEX_VERSION, "varbench": __version__, "files": files})


class OutputFolder:
    """The output folder of one render: its writes, then `finish` removes what went stale."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.previous = _claim(self.out, force)
        self.root = self.out.resolve()
        self.written: dict[str, str] = {}
        for folder in OUTPUT_FOLDERS:  # refuse before rendering, not halfway through
            self._check_folder(self.out / folder)

    def write(self, relative: str, payload: str | bytes) -> Path:
        # A path the file system could not decode (a non-UTF-8 locale) is written escaped.
        data = payload.encode("utf-8", errors="backslashreplace") if isinstance(payload, str) else payload
        path = self.out / relative
        self._check_target(path)
        write_bytes(path, data)
        self.written[relative] = digest(data)
        # The index grows with every file, so a render killed half-way leaves a folder the
        # next render recognises (and cleans), never one it must refuse.
        write_index(self.out, {**self.previous, **self.written})
        return path

    def finish(self) -> None:
        """Remove files an earlier render wrote that this one did not, then save the index."""
        for relative, recorded in sorted(self.previous.items()):
            if relative not in self.written:
                self._remove_stale(relative, recorded)
        write_index(self.out, self.written)

    def _check_folder(self, folder: Path) -> None:
        # A file name may be a symlink (the atomic rename replaces the link), but a folder
        # on the way must not lead out of `out`: the file would be written (and, as stale,
        # deleted) there.
        if inside(folder, self.root) is None:
            raise UserError("a folder inside the report output leads outside it", str(folder),
                            "Remove that symlink or pass another --out.")

    def _check_target(self, path: Path) -> None:
        self._check_folder(path.parent)
        if path.is_dir() and not path.is_symlink():
            raise UserError("a folder stands where the report writes a file", str(path),
                            "Move or remove that folder, or pass another --out.")

    def _remove_stale(self, relative: str, recorded: str) -> None:
        path = self.out / relative
        if not _report_name(relative) or path.is_symlink() or not path.is_file():
            return  # not a report file, or no longer the regular file varbench wrote: not ours
        if inside(path, self.root) is None:
            return  # reached through a folder symlink leading elsewhere
        if digest(path.read_bytes()) != recorded:
            warnings.warn(f"kept {path}: an earlier report wrote it, but it has changed since; "
                          "delete it yourself if it is no longer needed", UserWarning, stacklevel=2)
            return
        path.unlink()


def _claim(out: Path, force: bool) -> dict[str, str]:
    """What earlier renders wrote in `out`; refuses a non-empty folder varbench did not make."""
    if out.exists() and not out.is_dir():
        raise UserError("the report output is not a folder", str(out), "Pass a folder (new or empty) to --out.")
    index = out / INDEX_NAME
    if index.exists() or index.is_symlink():
        files, problem = _read_index(index)
        if files is not None:
            return files
        if not force:
            raise UserError(f"the report index of this folder is unreadable ({problem})", str(index),
                            "Pass --force to write the report anyway (nothing is deleted), or another --out.")
        return {}
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError("the output folder is not empty and no earlier 'varbench report' wrote it", str(out),
                        "Pass a new or empty folder to --out, or --force to write into it "
                        "(files varbench did not write are never deleted).")
    return {}


def _read_index(path: Path) -> tuple[dict[str, str] | None, str]:
    """The recorded files, or None and why the index cannot be trusted."""
    if path.is_symlink() or not path.is_file():
        return None, "not a regular file"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{type(err).__name__}: {err}"
    files = payload.get("files") if isinstance(payload, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None, "no 'files' mapping of path to sha256"
    return files, ""


def _report_name(relative: str) -> bool:
    """Whether `relative` is a name a render writes: index.html or <folder>/<file> of OUTPUT_FOLDERS."""
    parts = PurePosixPath(relative).parts
    if parts == (PAGE_NAME,):
        return True
    if len(parts) != 2 or parts[0] not in OUTPUT_FOLDERS:
        return False
    return PurePosixPath(parts[1]).suffix in OUTPUT_FOLDERS[parts[0]]
