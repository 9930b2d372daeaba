"""Read a results root (varbench.store layout) into tables the report works from.

Everything is read, nothing is dropped: a cell folder that does not exist yet, or whose
status is pending, running, failed or damaged (its files no longer match their seal:
varbench.integrity), appears in `ProtocolResults.cells` with its state.
Only `done` cells contribute metric rows, so a half-scored or damaged cell never biases a mean;
tables mark the rows whose arm is missing cells.

The expected subjects of a protocol are not stored, so they are taken as every subject
that has a cell folder in any run of that protocol; a run without that folder counts the
cell as pending.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from varbench.errors import UserError
from varbench.report.families import method_family
from varbench.metrics.settings import random_init_backbones
from varbench.store import IMAGE_COLUMNS, METRIC_COLUMNS, STORE_LAYOUT, CellStore, RunStore, find_runs

RANDOM_INIT_NOTE = "random-init backbones: checks the pipeline, not the methods"
TIMING_KEYS = ["phase", "seconds", "items", "session"]
CELL_COLUMNS = ["run_id", "subject", "state", "error", "live", "class_noun", "trainable_parameters",
                "artifact_bytes", "load_seconds", "fit_seconds", "seconds_per_image", "generate_items",
                "score_seconds", "fit_peak_memory_bytes", "device", "score_arithmetic"]


@dataclass
class RunResults:
    """One run: one method arm of one protocol version."""

    store: RunStore
    identity: dict[str, Any]
    sessions: list[dict[str, Any]]
    provenance_lost: bool = False  # manifest.json unreadable: what ran is unknown
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # score id -> score identity

    @property
    def protocol(self) -> str:
        return self.store.protocol

    @property
    def run_id(self) -> str:
        return self.store.run_id

    @property
    def arm(self) -> str:
        return str(self.identity.get("arm") or self.run_id)

    @property
    def method(self) -> str:
        return str(self.identity.get("method", "unknown"))

    @property
    def family(self) -> str:
        """The method family (Method.family), by which grids and plots group runs."""
        return method_family(self.method)

    @property
    def modes(self) -> list[str]:
        """Every metric mode this run has been scored (or is being scored) in."""
        return sorted({str(identity.get("mode", "canonical")) for identity in self.scores.values()})

    def score_id(self, mode: str) -> str | None:
        return next((sid for sid, identity in self.scores.items() if identity.get("mode") == mode), None)

    def backbones(self) -> list[str]:
        return sorted({str(identity.get("backbones", "?")) for identity in self.scores.values()})

    @property
    def dataset(self) -> str:
        return str(self.identity.get("dataset", ""))

    @property
    def random_init(self) -> bool:
        """True when any session ran a random-init model or metric encoder, or when the
        provenance is unreadable (numbers are never presented as more than they may be)."""
        random_metrics = any(random_init_backbones(backbones) for backbones in self.backbones())
        flagged = any(s.get("random_init_method") or s.get("random_init_metrics") for s in self.sessions)
        return bool(random_metrics or flagged or self.provenance_lost)

    @property
    def toyworld(self) -> bool:
        """True when the run was scored with the toyworld's encoders (its numbers mean
        something inside the miniature world only)."""
        return "toyworld" in self.backbones()

    @property
    def devices(self) -> list[str]:
        return sorted({str(s["device"]) for s in self.sessions if s.get("device")})

    def value_at(self, key_path: str) -> Any:
        """A value of run.json by dotted path ("config.distill_weight"), None if absent."""
        value: Any = self.identity
        head, _, rest = key_path.partition(".")
        if head == "metrics" and rest and len(self.scores) == 1:  # metrics live in the score identity
            value, key_path = next(iter(self.scores.values())), rest
        for key in key_path.split("."):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value


@dataclass
class ProtocolResults:
    name: str
    runs: list[RunResults]
    cells: pd.DataFrame  # CELL_COLUMNS: one row per (run, expected subject)
    metrics: pd.DataFrame  # METRIC_COLUMNS + live: rows of done cells only
    images: pd.DataFrame  # IMAGE_COLUMNS + cell_dir: every planned image of every cell
    losses: pd.DataFrame  # run_id, subject, step, one column per loss name

    @cached_property
    def subjects(self) -> list[str]:
        return sorted(self.cells["subject"].unique())

    def run(self, run_id: str) -> RunResults:
        return next(run for run in self.runs if run.run_id == run_id)

    @property
    def modes(self) -> list[str]:
        return sorted({mode for run in self.runs for mode in run.modes})

    @cached_property
    def description(self) -> str:
        """The protocol's own description (its YAML among the known protocols), "" if unknown."""
        return protocol_description(self.name)


def protocol_description(name: str) -> str:
    """`description:` of the protocol file of that name, "" when there is none or it is unreadable
    (results copied from elsewhere, a protocol run from a path)."""
    from varbench.protocol import available_protocols, read_yaml

    path = available_protocols().get(name)
    if path is None:
        return ""
    try:
        data = read_yaml(path)
    except UserError:
        return ""
    text = data.get("description") if isinstance(data, dict) and data.get("name") == name else None
    return " ".join(text.split()) if isinstance(text, str) else ""


def load_results(root: Path) -> dict[str, ProtocolResults]:
    """Every protocol under `root`, by name."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("results folder not found", str(root), "Pass the folder 'varbench run' wrote to (--results).")
    by_protocol: dict[str, list[RunStore]] = {}
    for store in find_runs(root):
        by_protocol.setdefault(store.protocol, []).append(store)
    return {name: _load_protocol(name, stores) for name, stores in sorted(by_protocol.items())}


def _load_protocol(name: str, stores: list[RunStore]) -> ProtocolResults:
    runs = [_run_results(store) for store in stores]
    subjects = sorted({path.name for store in stores for path in (store.dir / "cells").glob("*")
                       if path.is_dir()})
    facts = {run.run_id: {s: run.store.cell(s).facts() for s in subjects} for run in runs}
    live = {s: next((f[s]["live"] for f in facts.values() if "live" in f[s]), None) for s in subjects}
    cell_rows, metric_parts, image_parts, loss_parts = [], [], [], []
    for run in runs:
        for subject in subjects:
            cell = run.store.cell(subject)
            generation = cell.state()
            if generation.state != "damaged":  # nothing is read from a damaged (or linked-out) cell
                image_parts.append(_read_csv(cell.dir / "images.csv", IMAGE_COLUMNS).assign(cell_dir=str(cell.dir)))
                loss_parts.append(_read_csv(cell.dir / "losses.csv", ["step"]).assign(run_id=run.run_id,
                                                                                      subject=subject))
            for score_id, score in run.scores.items():  # one row per metric mode of the run
                row = _cell_row(run, cell, score_id, facts[run.run_id][subject], live[subject])
                cell_rows.append({**row, "mode": score.get("mode")})
                if row["state"] == "done":
                    metrics = _read_csv(cell.score_dir(score_id) / "metrics.csv", METRIC_COLUMNS)
                    metric_parts.append(metrics.assign(live=live[subject]))
    return ProtocolResults(
        name=name, runs=runs,
        cells=pd.DataFrame(cell_rows, columns=[*CELL_COLUMNS, "mode"]),
        metrics=_concat(metric_parts, METRIC_COLUMNS + ["live"]),
        images=_concat(image_parts, IMAGE_COLUMNS + ["cell_dir"]),
        losses=_concat(loss_parts, ["run_id", "subject", "step"]),
    )


def _run_results(store: RunStore) -> RunResults:
    """A run as stored; unreadable run.json / manifest.json are named in a warning and the
    run is still shown (its identity unknown, its numbers labelled random-init)."""
    for name, readable in (("run.json", bool(store.identity())), ("manifest.json", store.manifest_readable())):
        if not readable:
            warnings.warn(f"unreadable {name}, shown with what is known: {store.dir / name}", stacklevel=2)
    if store.identity() and store.identity().get("layout") != STORE_LAYOUT:
        warnings.warn(f"results in an older layout, not shown: {store.dir}. Run 'varbench migrate --results "
                      f"{store.root}' once to convert them (nothing is recomputed).", stacklevel=2)
    return RunResults(store, store.identity(), store.sessions(), provenance_lost=not store.manifest_readable(),
                      scores=store.scores())


def _cell_row(run: RunResults, cell: CellStore, score_id: str, facts: dict[str, Any],
              live: bool | None) -> dict[str, Any]:
    found = cell.state(score_id)  # a damaged cell is shown as such and never counted
    status = cell.status()
    timings = pd.concat([_read_csv(cell.dir / "timings.csv", TIMING_KEYS),
                         _read_csv(cell.score_dir(score_id) / "timings.csv", TIMING_KEYS)], ignore_index=True)
    phases = latest_phases(timings, run.sessions)
    generate = phases.get("generate") or phases.get("generate_warmup") or {}
    items = generate.get("items", 0)
    return {
        "run_id": run.run_id, "subject": cell.subject,
        "state": found.state, "error": found.error or None,
        "live": facts.get("live", live), "class_noun": facts.get("class_noun"),
        "trainable_parameters": facts.get("trainable_parameters"),
        "artifact_bytes": facts.get("artifact_bytes"),
        "load_seconds": phases.get("load", {}).get("seconds"),
        "fit_seconds": phases.get("fit", {}).get("seconds"),
        "seconds_per_image": generate["seconds"] / items if items else None,
        "generate_items": items or None,
        "score_seconds": phases.get("score", {}).get("seconds"),
        "fit_peak_memory_bytes": phases.get("fit", {}).get("peak_memory_bytes"),
        "device": facts.get("device") or status.get("device"),
        "score_arithmetic": score_arithmetic(cell.score_dir(score_id)),
    }


def score_arithmetic(score_dir: Path) -> str:
    """"bf16", "tf32", "bf16+tf32" when a GPU scored the cell with reduced precision (an
    execution option, recorded in its status.json), else "" (fp32, the default)."""
    from varbench.fileio import read_json_or_none

    status = read_json_or_none(score_dir / "status.json")
    if not isinstance(status, dict) or not str(status.get("device", "")).startswith("cuda"):
        return ""
    options = status.get("execution") if isinstance(status.get("execution"), dict) else {}
    parts = (["bf16"] if options.get("metric_precision") == "bf16" else []) + (
        ["tf32"] if options.get("metric_tf32") else [])
    return "+".join(parts)


def latest_phases(timings: pd.DataFrame, sessions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase, the totals of the latest session that ran it.

    A resumed cell has rows from several sessions; only the latest session's rows of a
    phase count (they describe the work that produced what is on disk). A phase timed
    per batch ("generate") has several rows in one session: seconds and items are summed.
    Sessions are ordered by their manifest start time; rows of a session missing from
    the manifest rank before known ones, in file order.
    """
    if timings.empty:
        return {}
    by_start = sorted(sessions, key=lambda s: str(s.get("started") or ""))
    order = {s.get("session"): index for index, s in enumerate(by_start)}
    table = pd.DataFrame({
        "phase": timings["phase"],
        "session": timings["session"],
        "seconds": pd.to_numeric(timings["seconds"], errors="coerce"),
        "items": pd.to_numeric(timings["items"], errors="coerce").fillna(0),
        "peak_memory_bytes": pd.to_numeric(timings.get("peak_memory_bytes", pd.Series(dtype=str)),
                                           errors="coerce"),
        "row": range(len(timings)),
    })
    phases = {}
    for phase, rows in table.groupby("phase", sort=False):
        first_row = rows.groupby("session", sort=False)["row"].min()
        latest = max(first_row.index, key=lambda s: (order.get(s, -1), first_row[s]))
        chosen = rows[rows["session"] == latest]
        phases[str(phase)] = {"seconds": float(chosen["seconds"].sum()), "items": int(chosen["items"].sum()),
                              "peak_memory_bytes": float(chosen["peak_memory_bytes"].max())}
    return phases


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=required)
    # A damaged file must not stop the whole report: its cell shows as damaged (the seal
    # catches it) and the file is read as empty, with a warning naming it.
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=required)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        warnings.warn(f"malformed CSV read as empty ({type(err).__name__}): {path}", stacklevel=2)
        return pd.DataFrame(columns=required)
    missing = [c for c in required if c not in table.columns]
    if missing:
        warnings.warn(f"CSV lacks column(s) {', '.join(missing)}, read as empty: {path}", stacklevel=2)
        return pd.DataFrame(columns=required)
    return table


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True, sort=False)
