"""Finding pretrained weights: a local path, or the Hugging Face hub cache.

Every backbone names its files as a `WeightFile` (hub repo, file name, pinned revision,
expected size and sha256). `resolve_file` looks in this order:
  1. an explicit local path (a file, or a folder holding the file),
  2. the folder in the backbone's environment variable (e.g. VARBENCH_INFINITY_DIR),
  3. the huggingface_hub cache, downloading into it unless offline.
A missing file is one clear error saying where to put it or how to download it. Sizes
are checked every time; sha256 once per file (a marker under the varbench cache
remembers a verified (path, size, mtime)).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from varbench.errors import UserError


@dataclass(frozen=True)
class WeightFile:
    repo_id: str
    filename: str
    revision: str | None = None
    size: int | None = None
    sha256: str | None = None
    env_var: str | None = None  # folder override, e.g. "VARBENCH_INFINITY_DIR"

    def download_command(self) -> str:
        return download_command(self.repo_id, self.revision, [self.filename])

    def download_hint(self) -> str:
        return (
            f"Download it with '{self.download_command()}' (fills the hub cache)"
            + (f", or put it in a folder and set {self.env_var}" if self.env_var else "")
            + ", or pass its path in the config."
        )


@dataclass(frozen=True)
class Snapshot:
    """A whole hub repository folder (a diffusers pipeline, a transformers model)."""

    repo_id: str
    revision: str | None = None
    allow_patterns: tuple[str, ...] | None = None

    def download_command(self) -> str:
        return download_command(self.repo_id, self.revision, list(self.allow_patterns or []))


def download_command(repo_id: str, revision: str | None, files: list[str]) -> str:
    """The `hf` CLI line (huggingface_hub >= 0.34) that fills the hub cache with these files."""
    patterns = [f for f in files if any(c in f for c in "*?[")]
    names = [f for f in files if f not in patterns]
    return (f"hf download {repo_id}" + "".join(f" {name}" for name in names)
            + "".join(f" --include '{pattern}'" for pattern in patterns)
            + (f" --revision {revision}" if revision else ""))


def locate(need: WeightFile | Snapshot, local: str | Path | None = None) -> tuple[Path | None, str]:
    """Where `need` is on this machine without downloading or verifying anything (the
    preflight): (the path or None, where it looked)."""
    env = need.env_var if isinstance(need, WeightFile) else None
    if local is None and env and os.environ.get(env):
        local = os.environ[env]
    if local is not None:
        path = Path(local).expanduser()
        if isinstance(need, WeightFile) and path.is_dir():
            path = path / need.filename
        found = path.is_file() if isinstance(need, WeightFile) else path.is_dir()
        return (path if found else None), str(path)
    from huggingface_hub import constants

    looked = f"hub cache {constants.HF_HUB_CACHE}"
    try:
        if isinstance(need, WeightFile):
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(need.repo_id, need.filename, revision=need.revision)
            return (Path(cached) if isinstance(cached, str) else None), looked
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(need.repo_id, revision=need.revision, local_files_only=True,
                                        allow_patterns=list(need.allow_patterns or []) or None))
    except Exception:  # noqa: BLE001 - any miss in the local cache: not found here
        return None, looked
    # a snapshot left by a partial download lacks some of the named files
    named = [f for f in need.allow_patterns or () if not any(c in f for c in "*?[")]
    return (folder if all((folder / name).is_file() for name in named) else None), looked


def cache_root() -> Path:
    """varbench's own cache folder (datasets, checksum markers): $VARBENCH_CACHE."""
    return Path(os.environ.get("VARBENCH_CACHE") or Path.home() / ".cache" / "varbench")  # "" means unset


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "VARBENCH_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def resolve_file(spec: WeightFile, local: str | Path | None = None, verify: bool = True) -> Path:
    """Path of the weight file described by `spec`; see the module docstring."""
    if local is None and spec.env_var and os.environ.get(spec.env_var):
        local = os.environ[spec.env_var]
    if local is not None:
        path = Path(local).expanduser()
        if path.is_dir():
            path = path / spec.filename
        if not path.is_file():
            raise UserError(f"weights file {spec.filename} not found", str(path), spec.download_hint())
    else:
        path = _from_hub(spec)
    if verify:
        check_file(path, spec)
    return path


def _from_hub(spec: WeightFile) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss in the local cache means: try the network
        if offline():
            raise UserError(
                f"weights {spec.repo_id}/{spec.filename} are not in the hub cache and downloads are off",
                "HF_HUB_OFFLINE/VARBENCH_OFFLINE",
                spec.download_hint(),
            ) from None
    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision))
    except Exception as err:  # noqa: BLE001 - network, auth or missing-file errors all end the same way
        raise UserError(
            f"cannot download {spec.repo_id}/{spec.filename}: {type(err).__name__}",
            "Hugging Face hub",
            spec.download_hint(),
        ) from None


def check_file(path: Path, spec: WeightFile) -> None:
    """Compare size (always) and sha256 (once, then remembered) with the spec."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise UserError(
            f"weights file has {size:,} bytes, expected {spec.size:,} (incomplete download?)",
            str(path),
            "Delete it and download it again. " + spec.download_hint(),
        )
    if spec.sha256 is None:
        return
    marker = cache_root() / "verified" / f"{spec.sha256}.json"
    stamp = {"path": str(path.resolve()), "size": size, "mtime": path.stat().st_mtime}
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise UserError(
            f"weights file sha256 is {digest[:12]}..., expected {spec.sha256[:12]}...",
            str(path),
            "The file is corrupt or a different release; download it again.",
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(stamp))


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_snapshot(repo_id: str, revision: str | None, local: str | Path | None = None,
                     allow_patterns: list[str] | None = None) -> Path:
    """A whole hub repository folder (e.g. a diffusers pipeline): local folder or hub cache."""
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_dir():
            raise UserError("model folder not found", str(path), "Pass an existing folder or a hub id.")
        return path
    from huggingface_hub import snapshot_download

    hint = f"Download it with '{download_command(repo_id, revision, list(allow_patterns or []))}' or pass a local folder."
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns,
                                      local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: fall through to the network
        if offline():
            raise UserError(f"{repo_id} is not in the hub cache and downloads are off",
                            "HF_HUB_OFFLINE/VARBENCH_OFFLINE", hint) from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
    except Exception as err:  # noqa: BLE001 - network, auth or missing-repo errors all end the same way
        raise UserError(f"cannot download {repo_id}: {type(err).__name__}", "Hugging Face hub", hint) from None
