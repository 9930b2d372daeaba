"""Provenance: what code, packages and hardware produced a result (the manifest).

None of this enters the run id: two machines running the same protocol produce the
same run id, and the manifest records how each session differed.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from varbench import __version__

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "timm",
            "torchmetrics", "numpy", "pandas", "scipy", "safetensors", "huggingface_hub", "pyspng")
REPO_DIR = Path(__file__).resolve().parent.parent


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_session_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True,
                                 text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": bool(dirty) if sha else None}


def device_name(device: Any) -> str:
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()})"


def usable_cores() -> int:
    """Cores this process may run on (a Slurm job's allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def session_record(session: str, device: Any, launcher: str, **extra: Any) -> dict[str, Any]:
    return {
        "session": session,
        "started": now(),
        "finished": None,
        **git_state(),
        "varbench_version": __version__,
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "device": device_name(device),
        "device_type": str(device).split(":")[0],
        "host": socket.gethostname(),
        "cpu_cores": usable_cores(),
        "pid": os.getpid(),
        "launcher": launcher,
        **extra,
    }
