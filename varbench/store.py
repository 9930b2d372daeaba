"""The results store: plain files, atomically written, that pandas reads directly.

    <root>/
      .cache/                          shared builds (class images, teacher pools)
      <protocol>/<run_id>/             one method arm of one protocol version
        run.json                       identity: everything hashed into run_id
        manifest.json                  provenance of every session that worked on it
        cells/<subject>/
          status.json                  state: pending | running | done | failed, error
          cell.json                    facts: fit seed, trainable parameters, artifact bytes
          images.csv                   one row per generated image (IMAGE_COLUMNS)
          images/p000_s00.png          evaluation images (prompt index, sample index)
          pres/s00.png                 class-prompt images for PRES
          metrics.csv                  one row per (image, metric) (METRIC_COLUMNS)
          timings.csv                  one row per phase (TIMING_COLUMNS)
          losses.csv                   fit losses per step
          artifact/                    the trained tensors

Every file is replaced atomically (varbench.fileio), so a crash never leaves a partial
file that a reader could see; a CSV is rewritten whole when rows are added.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from varbench.errors import UserError
from varbench.fileio import read_json, write_json, write_text

IMAGE_COLUMNS = ["run_id", "subject", "kind", "prompt_index", "sample_index", "seed", "prompt",
                 "clip_text", "template", "path"]
METRIC_COLUMNS = ["run_id", "subject", "kind", "prompt_index", "sample_index", "image", "metric",
                  "mode", "value"]
TIMING_COLUMNS = ["run_id", "subject", "phase", "seconds", "items", "seconds_per_item",
                  "peak_memory_bytes", "device", "warmup", "session"]
STATES = ("pending", "running", "done", "failed")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def check_name(name: str, what: str, where: str) -> str:
    """Reject names that could escape the results root ('..', '/', absolute paths)."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise UserError(
            f"{what} name {name!r} is not allowed",
            where,
            "Use letters, digits, '_', '-', '.', '+' only (no '..', '/' or leading dot).",
        )
    return name


def write_rows(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_text(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class CellStore:
    """The folder of one cell (one arm x one subject)."""

    def __init__(self, run_dir: Path, subject: str):
        self.run_dir = Path(run_dir)
        self.subject = subject
        self.dir = self.run_dir / "cells" / subject

    # --- status -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return read_json(self.dir / "status.json", default={"state": "pending"})

    def set_status(self, state: str, **fields: Any) -> None:
        assert state in STATES, state
        write_json(self.dir / "status.json", {**fields, "state": state})

    # --- facts and rows -------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        return read_json(self.dir / "cell.json", default={})

    def update_facts(self, **fields: Any) -> None:
        write_json(self.dir / "cell.json", {**self.facts(), **fields})

    def rows(self, name: str) -> list[dict[str, str]]:
        return read_rows(self.dir / f"{name}.csv")

    def add_rows(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Append rows to `<name>.csv` (rewritten whole, atomically)."""
        if rows:
            write_rows(self.dir / f"{name}.csv", columns, [*self.rows(name), *rows])

    def replace_rows(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        write_rows(self.dir / f"{name}.csv", columns, rows)

    # --- images and artifacts ----------------------------------------------------------
    def image_path(self, kind: str, prompt_index: int, sample_index: int) -> Path:
        if kind == "pres":
            return self.dir / "pres" / f"s{sample_index:02d}.png"
        return self.dir / "images" / f"p{prompt_index:03d}_s{sample_index:02d}.png"

    @property
    def artifact_dir(self) -> Path:
        return self.dir / "artifact"

    @property
    def workdir(self) -> Path:
        return self.dir / "work"


class RunStore:
    """The folder of one run: one method arm of one protocol version."""

    def __init__(self, root: Path, protocol: str, run_id: str):
        self.root = Path(root)
        self.protocol = protocol
        self.run_id = run_id
        self.dir = self.root / protocol / run_id

    def identity(self) -> dict[str, Any]:
        return read_json(self.dir / "run.json", default={})

    def write_identity(self, identity: dict[str, Any]) -> None:
        existing = self.identity()
        if existing and existing != identity:
            raise UserError(
                "run folder holds a different run (hash collision or edited run.json)",
                str(self.dir / "run.json"),
                "Move the folder away and rerun.",
            )
        if not existing:
            write_json(self.dir / "run.json", identity)

    def sessions(self) -> list[dict[str, Any]]:
        return read_json(self.dir / "manifest.json", default={"sessions": []})["sessions"]

    def add_session(self, session: dict[str, Any]) -> None:
        """Add (or replace, by session id) one session's provenance in manifest.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / ".manifest.lock")):  # two `varbench run`s may share a run
            others = [s for s in self.sessions() if s.get("session") != session.get("session")]
            write_json(self.dir / "manifest.json", {"sessions": [*others, session]})

    def cell(self, subject: str) -> CellStore:
        return CellStore(self.dir, subject)


def find_runs(root: Path) -> list[RunStore]:
    """Every run under a results root (folders holding a run.json)."""
    runs = []
    for run_json in sorted(Path(root).glob("*/*/run.json")):
        run_dir = run_json.parent
        runs.append(RunStore(root, run_dir.parent.name, run_dir.name))
    return runs
