"""The results store: plain files, atomically written, that pandas reads directly.

    <root>/
      .cache/                          shared builds (class images, teacher pools)
      <protocol>/<run_id>/             one method arm of one protocol version
        run.json                       identity: everything hashed into run_id
        manifest.json                  provenance of every session that worked on it
        cells/<subject>/
          status.json                  state: pending | running | done | failed, error; when
                                       done, the seal: every file below with bytes and sha256
          cell.json                    facts: fit seed, trainable parameters, artifact bytes
          images.csv                   one row per generated image (IMAGE_COLUMNS)
          images/p000_s00.png          evaluation images (prompt index, sample index)
          pres/s00.png                 class-prompt images for PRES
          metrics.csv                  one row per (image, metric) (METRIC_COLUMNS)
          timings.csv                  one row per phase (TIMING_COLUMNS)
          losses.csv                   fit losses per step
          artifact/                    the trained tensors
          damaged/<UTC time>/          files found damaged, kept aside when the cell was repaired

Every file is replaced atomically (varbench.fileio), so a crash never leaves a partial
file that a reader could see; a CSV is rewritten whole when rows are added. Nothing on
disk is trusted unchecked: `CellStore.state` is the one answer to a cell's state, and a
done cell whose files do not match its seal (varbench.integrity) is "damaged". Readers
tolerate garbage (an unreadable JSON file reads as missing, and is moved aside, never
overwritten, when varbench must write it again).
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from varbench.errors import UserError
from varbench.hashing import canonical_json
from varbench.fileio import TMP_MARK, read_json_or_none, write_json, write_text
from varbench.integrity import Problem, check_cell, check_records, check_score, move_aside, seal
from varbench.locks import is_locked

IMAGE_COLUMNS = ["run_id", "subject", "kind", "prompt_index", "sample_index", "seed", "prompt",
                 "clip_text", "template", "path"]
METRIC_COLUMNS = ["run_id", "subject", "kind", "prompt_index", "sample_index", "image", "metric",
                  "mode", "value"]
TIMING_COLUMNS = ["run_id", "subject", "phase", "seconds", "items", "seconds_per_item",
                  "peak_memory_bytes", "device", "warmup", "session"]
# Version of the results layout, part of every run identity: 2 = run ids without metrics or
# execution options, scores in cells/<subject>/scores/<score id>/ ('varbench migrate'
# converts layout 1, where metrics.csv sat in the cell folder and metrics were hashed).
STORE_LAYOUT = 2
STATES = ("pending", "running", "done", "failed")  # what status.json may hold
# What a cell is found in: STATES, plus "interrupted" (running, but no live process holds
# its lock) and "damaged" (done, but its files do not match their seal; or an unreadable
# status.json).
FOUND_STATES = (*STATES, "interrupted", "damaged")


@dataclass(frozen=True)
class CellState:
    state: str  # one of FOUND_STATES
    error: str = ""  # a failed cell's error, a damaged cell's first problem
    problems: tuple[Problem, ...] = ()

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")  # used with fullmatch: "$" would allow a final "\n"


def check_name(name: str, what: str, where: str) -> str:
    """Reject names that could escape the results root ('..', '/', absolute paths)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        shown = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."  # repr escapes control characters
        raise UserError(
            f"{what} name {shown} is not allowed",
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


def add_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Append rows to a CSV file (rewritten whole, atomically)."""
    if rows:
        write_rows(path, columns, [*read_rows(path), *rows])


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
        """The cell's status.json; a missing one is pending, an unreadable one (not JSON,
        not a mapping, an unknown state, a folder) reads as {"state": "unreadable"}."""
        path = self.dir / "status.json"
        if not path.exists() and not path.is_symlink():
            return {"state": "pending"}
        status = read_json_or_none(path)
        if not isinstance(status, dict) or status.get("state") not in STATES:
            return {"state": "unreadable"}
        return status

    def state(self, score_id: str | None = None, hashes: bool = False) -> CellState:
        """The one answer to "what state is this cell in" (runner, status, report): its
        generation (fit and images), and with `score_id` its scores in that metric mode
        (a cell done generating but not yet scored in that mode is pending)."""
        found = self._generation_state(hashes)
        if found.state != "done" or score_id is None:
            return found
        return self._score_state(score_id, hashes)

    def _generation_state(self, hashes: bool) -> CellState:
        if self.dir.is_symlink():  # never read (or count) results from outside the root
            return CellState("damaged", "the cell folder is a symbolic link", (Problem(".", "symbolic link"),))
        status = self.status()
        state, error = status["state"], str(status.get("error") or "")
        if state == "unreadable":
            problems = (Problem("status.json", "unreadable"), *check_records(self.dir))
            return CellState("damaged", "status.json: unreadable", problems)
        if state == "running" and not is_locked(self.dir):
            return CellState("interrupted", error)
        if state == "done":
            return _damaged_or(check_cell(self.dir, status.get("files"), hashes), CellState("done"))
        return CellState(state, error)

    def _score_state(self, score_id: str, hashes: bool) -> CellState:
        folder = self.score_dir(score_id)
        status = read_json_or_none(folder / "status.json")
        if not (folder / "status.json").exists() and not (folder / "status.json").is_symlink():
            return CellState("pending", f"not scored yet ({score_id})")
        if isinstance(status, dict) and status.get("state") == "failed":
            return CellState("failed", str(status.get("error") or ""))
        if isinstance(status, dict) and status.get("state") == "running":
            return CellState("running" if is_locked(self.dir) else "interrupted")
        if not isinstance(status, dict) or status.get("state") != "done":
            return CellState("damaged", f"scores/{score_id}/status.json: unreadable",
                             (Problem(f"scores/{score_id}/status.json", "unreadable"),))
        return _damaged_or(check_score(self.dir, folder, status.get("files"), hashes), CellState("done"))

    def score_dir(self, score_id: str) -> Path:
        return self.dir / "scores" / score_id

    def set_step(self, score_id: str | None, state: str, **fields: Any) -> None:
        """The state of the generation (score_id None: the cell's status.json) or of the
        scoring in one metric mode (`scores/<score id>/status.json`, sealed on its own)."""
        if score_id is None:
            self.set_status(state, **fields)
            return
        assert state in STATES, state
        folder = self.score_dir(score_id)
        sealed = {"files": seal(folder)} if state == "done" else {}
        write_json(folder / "status.json", {**fields, **sealed, "state": state, "score_id": score_id})

    def set_status(self, state: str, known: dict[str, str] | None = None, **fields: Any) -> None:
        """Write status.json atomically; `done` seals the cell's files in the same write
        (`known`: digests already computed of some of them, see `integrity.seal`)."""
        assert state in STATES, state
        path = self.dir / "status.json"
        if path.is_symlink() or (path.exists() and not path.is_file()):
            move_aside(path)  # a folder or link where status.json belongs would break the write
        if state == "done":
            fields["files"] = seal(self.dir, known)
        write_json(path, {**fields, "state": state})

    # --- facts and rows -------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        facts = read_json_or_none(self.dir / "cell.json")
        return facts if isinstance(facts, dict) else {}

    def update_facts(self, **fields: Any) -> None:
        write_json(self.dir / "cell.json", {**self.facts(), **fields})

    def rows(self, name: str) -> list[dict[str, str]]:
        return read_rows(self.dir / f"{name}.csv")

    def add_rows(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Append rows to `<name>.csv` (rewritten whole, atomically)."""
        add_rows(self.dir / f"{name}.csv", columns, rows)

    def replace_rows(self, name: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        write_rows(self.dir / f"{name}.csv", columns, rows)

    # --- images and artifacts ----------------------------------------------------------
    def image_path(self, kind: str, prompt_index: int, sample_index: int) -> Path:
        if kind == "pres":
            return self.dir / "pres" / f"s{sample_index:02d}.png"
        return self.dir / "images" / f"p{prompt_index:03d}_s{sample_index:02d}.png"

    def refuse_links(self, root: Path) -> None:
        """Refuse a cell folder reached through a symbolic link, or holding one where
        varbench writes: a write there could land outside the results root."""
        folders, current = [], Path(root)
        for part in self.dir.relative_to(root).parts:
            current = current / part
            folders.append(current)
        folders += [self.dir / name for name in ("images", "pres", "artifact", "work", "damaged")]
        for folder in folders:
            if folder.is_symlink():
                raise UserError(f"{folder.name} is a symbolic link (to {os.readlink(folder)})", str(folder),
                                "varbench writes only inside its results root: replace the link with a folder.")
            if folder.exists() and not folder.is_dir():
                raise UserError("a file stands where varbench needs a folder", str(folder),
                                "Move the file away and rerun.")

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
        identity = read_json_or_none(self.dir / "run.json")
        return identity if isinstance(identity, dict) else {}

    def write_identity(self, identity: dict[str, Any]) -> None:
        existing = self.identity()
        # compared as canonical JSON, as written: a NaN never equals itself as a float,
        # and a tuple comes back from run.json as a list
        if existing and canonical_json(existing) != canonical_json(identity):
            raise UserError(
                "run folder holds a different run (hash collision or edited run.json)",
                str(self.dir / "run.json"),
                "Move the folder away and rerun.",
            )
        if not existing:
            write_json(self.dir / "run.json", identity)

    def sessions(self) -> list[dict[str, Any]]:
        """Provenance of every session; an unreadable manifest.json reads as none."""
        manifest = read_json_or_none(self.dir / "manifest.json")
        sessions = manifest.get("sessions") if isinstance(manifest, dict) else None
        return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []

    def write_score_identity(self, score_id: str, identity: dict[str, Any]) -> None:
        """`scores/<score id>.json`: what the run's scores in that metric mode are."""
        path = self.dir / "scores" / f"{score_id}.json"
        if read_json_or_none(path) != identity:
            if path.exists() or path.is_symlink():
                move_aside(path)
            write_json(path, identity)

    def scores(self) -> dict[str, dict[str, Any]]:
        """{score id: score identity} of every metric mode this run has been scored in."""
        found = {}
        for path in sorted((self.dir / "scores").glob("*.json")):
            identity = read_json_or_none(path)
            if isinstance(identity, dict):
                found[path.stem] = identity
        return found

    def manifest_readable(self) -> bool:
        return isinstance(read_json_or_none(self.dir / "manifest.json"), dict)

    def add_session(self, session: dict[str, Any]) -> None:
        """Add (or replace, by session id) one session's provenance in manifest.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "manifest.json"
        with FileLock(str(self.dir / ".manifest.lock")):  # two `varbench run`s may share a run
            for leftover in self.dir.glob(f"manifest.json{TMP_MARK}*"):  # a killed writer's
                leftover.unlink()
            if (path.exists() or path.is_symlink()) and not self.manifest_readable():
                move_aside(path)  # keep what we cannot read; start a new manifest
            others = [s for s in self.sessions() if s.get("session") != session.get("session")]
            write_json(path, {"sessions": [*others, session]})

    def cell(self, subject: str) -> CellStore:
        return CellStore(self.dir, subject)


def _damaged_or(problems: list[Problem], otherwise: CellState) -> CellState:
    if not problems:
        return otherwise
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return CellState("damaged", problems[0].line() + more, tuple(problems))


def find_runs(root: Path) -> list[RunStore]:
    """Every run under a results root (folders holding a run.json)."""
    runs = []
    for run_json in sorted(Path(root).glob("*/*/run.json")):
        run_dir = run_json.parent
        runs.append(RunStore(root, run_dir.parent.name, run_dir.name))
    return runs
