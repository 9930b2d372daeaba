"""Helpers for the runner tests: run a protocol, read a results root back."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import TESTS_DIR

TOY = TESTS_DIR / "protocols" / "toy.yaml"


def write_protocol(tmp_path: Path, extra: str = "", arm_config: str = "{steps: 6}", name: str = "toy.yaml") -> Path:
    text = TOY.read_text().replace("config: {steps: 6}", f"config: {arm_config}") + extra
    path = tmp_path / name
    path.write_text(text)
    return path


def run_api(protocol: Path, results: Path, **options) -> int:
    from varbench.runner import RunOptions, run_protocol

    return run_protocol(str(protocol), RunOptions(results=results, device="cpu", **options))


def run_cli(*args: str, env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "varbench", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def image_hashes(results: Path) -> dict[str, str]:
    """Relative path -> sha256 of every PNG under a results root."""
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.rglob("*.png")) if not quarantined(p)}


def quarantined(path: Path) -> bool:
    """Whether `path` lies in a cell's `damaged/` folder (kept aside, not a result)."""
    return "damaged" in path.parts


def metrics_table(results: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(results.rglob("metrics.csv")) if not quarantined(p)]
    table = pd.concat(frames).sort_values(["run_id", "subject", "metric", "kind", "prompt_index", "sample_index"])
    return table.reset_index(drop=True)


def phases(results: Path, subject: str) -> list[str]:
    """Timed phases of a subject's cell: generation (the cell's timings.csv), then scoring
    (each score folder's)."""
    (path,) = results.rglob(f"cells/{subject}/timings.csv")
    scored = sorted(path.parent.glob("scores/*/timings.csv"))
    return [phase for file in (path, *scored) for phase in pd.read_csv(file)["phase"].tolist()]


def states(results: Path) -> dict[str, str]:
    import json

    return {p.parent.name: json.loads(p.read_text())["state"] for p in sorted(results.rglob("cells/*/status.json"))}
