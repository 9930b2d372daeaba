"""Fetching, locating and verifying the downloadable datasets (DreamBench, ViCo).

Where a dataset is read from, first match wins:
  1. a local folder passed in (the protocol's `data.root`, the CLI's `--data-root`),
  2. the folder in the dataset's environment variable (VARBENCH_DREAMBENCH_DIR, ...),
  3. the cache copy `<varbench cache>/data/<name>`, fetched on first use.
A local folder may also be a checkout of the upstream repository (its `dataset/` or
`inputs/` subfolder is used).

`fetch_dataset` copies every file named in the shipped manifest from an upstream (the
Hugging Face hub or GitHub at a pinned commit) or from a local folder into the
destination: each file is checked against the manifest in memory and only then written
(atomically), so a destination never holds a file with wrong bytes. Files already
there with the right bytes are kept, so an interrupted fetch resumes. When all files
are in, a marker records which manifest they were checked against: opening the cache
copy then only checks presence and sizes. `verify_dataset` hashes every file again.
"""
from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

from varbench.data.manifest import (
    FileProblem,
    Manifest,
    ManifestEntry,
    VerifyReport,
    absent_subjects,
    bytes_digest,
    digest_kind,
    file_digest,
    load_manifest,
    quick_check,
    verify_folder,
)
from varbench.data.sources import DatasetSource, Upstream, dataset_source
from varbench.errors import UserError
from varbench.fileio import read_json, write_bytes, write_json
from varbench.weights import cache_root, offline

MARKER = ".varbench-verified.json"
DOWNLOAD_TIMEOUT_S = 60
DOWNLOAD_BLOCK = 1 << 16


class DatasetWarning(UserWarning):
    """Something about a dataset copy the user should see, that does not stop a run."""


def cache_folder(name: str) -> Path:
    return cache_root() / "data" / name


def fetch_hint(name: str, folder: Path) -> str:
    """How to repair a copy with missing or changed files."""
    if folder == cache_folder(name):
        return f"Run 'varbench data fetch {name}' to fetch those files again."
    return (f"Repair it with 'varbench data fetch {name} --dest {folder}', "
            "or drop the local folder to use the cache copy.")


# --------------------------------------------------------------------------- fetch

def fetch_dataset(name: str, dest: str | Path | None = None, source: str | Path | None = None) -> Path:
    """Copy dataset `name` into `dest` (default: the cache folder), checking every file.

    `source` is an upstream name ("hf", "github"; default: the dataset's first) or a
    local folder holding the dataset. Returns the destination folder.
    """
    spec = dataset_source(name)
    manifest = load_manifest(name)
    dest = Path(dest).expanduser() if dest is not None else cache_folder(name)
    origin = _resolve_origin(spec, source)
    dest.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(dest / ".varbench-fetch.lock")):  # two workers never fetch one copy twice
        # Only a local folder may lack whole subjects; an upstream must have every file.
        absent = absent_subjects(origin, spec.optional_subjects) if isinstance(origin, Path) else []
        for subject in absent:
            _warn_absent(name, subject, origin)
        todo = [entry for entry in manifest.entries
                if entry.subject not in absent and not _already_there(dest / entry.path, entry)]
        if todo:
            (dest / MARKER).unlink(missing_ok=True)  # not "checked" again until every file is
            _copy_all(todo, _reader(origin, name), dest, name)
        write_json(dest / MARKER, {"dataset": name, "manifest": manifest.fingerprint,
                                   "source": _describe(origin), "absent_subjects": absent})
    return dest


def _resolve_origin(spec: DatasetSource, source: str | Path | None) -> Upstream | Path:
    """An upstream by name, or a local folder."""
    if source is None:
        return spec.upstreams[spec.default_source]
    if isinstance(source, str) and source in spec.upstreams:
        return spec.upstreams[source]
    path = Path(source).expanduser()
    if path.is_dir():
        return _dataset_subfolder(spec, path)
    raise UserError(f"unknown source {str(source)!r} for dataset {spec.name}", None,
                    f"Use one of: {', '.join(spec.upstreams)}, or an existing local folder.")


def _describe(origin: Upstream | Path) -> str:
    return origin.describe() if isinstance(origin, Upstream) else str(origin)


def _already_there(path: Path, entry: ManifestEntry) -> bool:
    if not path.is_file() or (entry.size is not None and path.stat().st_size != entry.size):
        return False
    return file_digest(path, entry) == entry.digest


Reader = Callable[[ManifestEntry, Callable[[int], None]], tuple[bytes, str]]


def _reader(origin: Upstream | Path, name: str) -> Reader:
    """A function giving one file's bytes (and where they came from) from `origin`."""
    if isinstance(origin, Path):
        return lambda entry, advance: (_read_local(origin, entry, advance), str(origin / entry.path))
    if origin.kind == "hf":  # the hub cache may already hold it, even offline
        folder = _hf_snapshot_folder(origin)
        return lambda entry, advance: (_read_local(folder, entry, advance), str(folder / entry.path))
    if offline():
        raise UserError(f"dataset {name} is not fetched and downloads are off", "HF_HUB_OFFLINE/VARBENCH_OFFLINE",
                        f"Allow downloads, or copy a local folder: 'varbench data fetch {name} --source DIR'.")
    return lambda entry, advance: (_download(origin.url(entry.path), entry, advance), origin.url(entry.path))


def _copy_all(todo: list[ManifestEntry], read: Reader, dest: Path, name: str) -> None:
    """Read, check and write each file, with a progress bar over the known bytes."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    total = sum(entry.size or 0 for entry in todo) or None
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"{name}: {len(todo)} files", total=total)
        for entry in todo:
            data, where = read(entry, lambda count: progress.update(task, advance=count))
            _check_bytes(data, entry, where, name)
            write_bytes(dest / entry.path, data)  # temp file + rename: never half a file


def _read_local(folder: Path, entry: ManifestEntry, advance: Callable[[int], None]) -> bytes:
    path = folder / entry.path
    if not path.is_file():
        raise UserError(f"the source lacks dataset file {entry.path}", str(path),
                        "Complete that folder, or fetch from another source (--source hf, github or DIR).")
    data = path.read_bytes()
    advance(len(data))
    return data


def _download(url: str, entry: ManifestEntry, advance: Callable[[int], None]) -> bytes:
    blocks = []
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while block := response.read(DOWNLOAD_BLOCK):
                blocks.append(block)
                advance(len(block))
    except urllib.error.HTTPError as err:
        raise UserError(f"cannot download dataset file {entry.path}: HTTP {err.code}", url,
                        "The pinned upstream may have moved; try another --source or a local folder.") from None
    except (OSError, http.client.HTTPException) as err:  # no network, timeout, connection cut mid-file
        raise UserError(f"cannot download dataset file {entry.path}: {err}", url,
                        "Check the network (or proxy settings) and run the fetch again; "
                        "finished files are kept.") from None
    return b"".join(blocks)


def _check_bytes(data: bytes, entry: ManifestEntry, where: str, name: str) -> None:
    """Compare fetched bytes with the manifest before they are written anywhere."""
    if entry.size is not None and len(data) != entry.size:
        problem = f"has {len(data):,} bytes, expected {entry.size:,}"
    elif bytes_digest(data, entry) != entry.digest:
        problem = f"does not match the manifest ({digest_kind(entry)} differs)"
    else:
        return
    raise UserError(f"dataset {name}: source file {entry.path} {problem}", where,
                    "The source copy is corrupt or a different release; fetch from another source "
                    f"('varbench data fetch {name} --source ...') or replace that file.")


def _hf_snapshot_folder(upstream: Upstream) -> Path:
    """The pinned hub snapshot (cached by huggingface_hub), as a local folder."""
    from huggingface_hub import snapshot_download

    kwargs = dict(repo_type="dataset", revision=upstream.revision, allow_patterns=[f"{upstream.folder}/*"])
    hint = (f"Run 'hf download {upstream.repo} --repo-type dataset --include '{upstream.folder}/*' "
            f"--revision {upstream.revision}', "
            "or fetch with '--source github', or pass a local copy with '--source DIR'.")
    try:
        return Path(snapshot_download(upstream.repo, local_files_only=True, **kwargs)) / upstream.folder
    except Exception:  # noqa: BLE001 - not in the hub cache yet: go to the network below
        if offline():
            raise UserError(f"{upstream.repo} is not in the hub cache and downloads are off",
                            "HF_HUB_OFFLINE/VARBENCH_OFFLINE", hint) from None
    try:
        return Path(snapshot_download(upstream.repo, **kwargs)) / upstream.folder
    except Exception as err:  # noqa: BLE001 - network, auth and missing-revision errors end alike
        raise UserError(f"cannot download {upstream.describe()}: {type(err).__name__}: {err}",
                        "Hugging Face hub", hint) from None


# --------------------------------------------------------------------------- locate

def dataset_folder(name: str, root: str | Path | None = None, fetch_missing: bool = True) -> Path:
    """The folder dataset `name` is read from (see the module docstring for the order)."""
    spec = dataset_source(name)
    if root is not None:
        return _local_root(spec, root, "")
    if os.environ.get(spec.env_var):
        return _local_root(spec, os.environ[spec.env_var], f" (from ${spec.env_var})")
    folder = cache_folder(name)
    marker = read_json(folder / MARKER, default={})
    if marker.get("manifest") == load_manifest(name).fingerprint:
        return folder
    if not fetch_missing:
        raise UserError(f"dataset {name} is not fetched yet", str(folder),
                        f"Run 'varbench data fetch {name}', or pass a local copy (--data-root or ${spec.env_var}).")
    return fetch_dataset(name)


def _local_root(spec: DatasetSource, root: str | Path, origin_note: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"{spec.name} folder not found", f"{path}{origin_note}",
                        f"Pass an existing folder, or unset it and run 'varbench data fetch {spec.name}'.")
    return _dataset_subfolder(spec, path)


def _dataset_subfolder(spec: DatasetSource, path: Path) -> Path:
    """`path`, or its `dataset/`-style subfolder when `path` is a repository checkout."""
    probe = load_manifest(spec.name).entries[0].path  # any file of the dataset tells
    inner = path / spec.checkout_folder
    if not (path / probe).is_file() and (inner / probe).is_file():
        return inner
    return path


def open_checked(name: str, root: str | Path | None = None,
                 fetch_missing: bool = True) -> tuple[Path, Manifest, list[str]]:
    """Locate dataset `name` and check presence and sizes of its files (no hashing).

    Returns the folder, the manifest and the subjects absent from this copy (each
    announced with a `DatasetWarning`). Without `fetch_missing` (dry runs, status) a
    cache copy that is not there yet is an error instead of a download.
    """
    spec = dataset_source(name)
    folder = dataset_folder(name, root, fetch_missing)
    manifest = load_manifest(name)
    report = quick_check(manifest, folder, spec.optional_subjects)
    report.raise_for_problems(fetch_hint(name, folder))
    for subject in report.absent_subjects:
        _warn_absent(name, subject, folder)
    return folder, manifest, report.absent_subjects


def _warn_absent(name: str, subject: str, folder: Path) -> None:
    warnings.warn(f"dataset {name}: subject {subject} is absent from {folder}; it is left out. "
                  f"'varbench data fetch {name}' downloads the complete set.", DatasetWarning, stacklevel=3)


# --------------------------------------------------------------------------- verify

def verify_dataset(name: str, root: str | Path | None = None, raise_on_problems: bool = True) -> VerifyReport:
    """Hash every file of dataset `name` (local root, env folder or cache copy).

    A missing, resized or changed file is one `UserError` naming it (or, with
    `raise_on_problems=False`, a report listing all of them). A cache copy that fails
    loses its marker, so the next use fetches the bad files again.
    """
    spec = dataset_source(name)
    folder = dataset_folder(name, root, fetch_missing=False)
    report = verify_folder(load_manifest(name), folder, spec.optional_subjects)
    # The marker is varbench's own file ('data fetch' wrote it, into the cache or --dest):
    # withdrawing it is the one write verify makes, and no user file is ever touched.
    if report.problems and (folder / MARKER).is_file() and not (folder / MARKER).is_symlink():
        (folder / MARKER).unlink()
    if raise_on_problems:
        report.raise_for_problems(fetch_hint(name, folder))
    return report


__all__ = ["DatasetWarning", "FileProblem", "VerifyReport", "cache_folder", "dataset_folder",
           "fetch_dataset", "open_checked", "verify_dataset"]
