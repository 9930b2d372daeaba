"""One rendered unit of a report: a spec section applied to one protocol in one metric mode.

A `SectionView` decides the rows (which runs, in which order, under which labels, with
which sweep parameter) and computes the statistics every table and figure of the unit
shares, so the main table, the live/object split, the plots and the paired tests all
describe the same runs and the same subjects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from varbench.metrics.stats import subject_means, summarize
from varbench.report.families import OTHER
from varbench.report.results import RANDOM_INIT_NOTE, ProtocolResults, RunResults
from varbench.report.spec import ReportSpec, SectionSpec, StatisticsSpec
from varbench.toyworld.backbones import NOTE as TOYWORLD_NOTE

METRIC_LABELS = {"dino": "DINO", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "div": "DIV", "pres": "PRES",
                 # extras (metrics.extra): shown whenever a protocol computed them
                 "dinov2_s": "DINOv2-S", "dinov2_l": "DINOv2-L", "clip_l_i": "CLIP-L-I", "clip_l_t": "CLIP-L-T"}
METRIC_BETTER = {"dino": "higher", "clip_i": "higher", "clip_t": "higher", "div": "higher", "pres": "lower",
                 "dinov2_s": "higher", "dinov2_l": "higher", "clip_l_i": "higher", "clip_l_t": "higher"}


# Cell states counted in tables; "damaged" cells (files that no longer match their seal)
# are counted apart and never averaged.
COUNTED_STATES = ("done", "failed", "damaged", "running", "interrupted", "pending")


@dataclass
class Row:
    label: str
    arm: str
    run: RunResults | None  # None: the spec lists this arm but the results have no run of it
    parameter: float | None = None
    series: str = ""  # sweep plots draw one line per series

    @property
    def run_id(self) -> str | None:
        return self.run.run_id if self.run else None

    @property
    def family(self) -> str:
        return self.run.family if self.run else OTHER


@dataclass
class SectionView:
    spec: SectionSpec
    statistics: StatisticsSpec
    protocol: ProtocolResults
    mode: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        """File name prefix of this unit's tables and figures."""
        stem = f"{self.spec.name}-{self.protocol.name}"
        return f"{stem}-{self.mode}" if len(self.protocol.modes) > 1 else stem

    @property
    def title(self) -> str:
        title = self.spec.title or self.spec.name
        suffix = f" (mode {self.mode})" if len(self.protocol.modes) > 1 else ""
        return f"{title}: protocol {self.protocol.name}{suffix}"

    @property
    def runs(self) -> list[RunResults]:
        return [row.run for row in self.rows if row.run is not None]

    @property
    def random_init(self) -> bool:
        return any(run.random_init for run in self.runs)

    @property
    def toyworld(self) -> bool:
        return any(run.toyworld for run in self.runs)

    @property
    def dataset(self) -> str | None:
        """The dataset every run of this unit used (run.json "dataset"); None if they differ."""
        datasets = {run.dataset for run in self.runs}
        return datasets.pop() if len(datasets) == 1 else None

    @cached_property
    def subject_table(self) -> pd.DataFrame:
        """Per-subject means of this unit's runs in this mode (done cells only)."""
        metrics = self.protocol.metrics
        chosen = metrics[metrics["run_id"].isin([r.run_id for r in self.runs]) & (metrics["mode"] == self.mode)]
        return subject_means(chosen)

    @cached_property
    def summary(self) -> pd.DataFrame:
        stats = self.statistics
        return summarize(self.subject_table, stats.confidence, stats.n_resamples, stats.seed)

    def metric(self, run_id: str | None, metric: str, group: str = "all") -> dict[str, Any] | None:
        """mean, ci_low, ci_high, n_subjects of one run, or None when it has no such rows."""
        table = self.summary
        found = table[(table["run_id"] == run_id) & (table["metric"] == metric) & (table["group"] == group)]
        if found.empty or found["n_subjects"].iloc[0] == 0:
            return None
        return found.iloc[0].to_dict()

    def copies(self, run_id: str | None) -> tuple[int, int] | None:
        """(near-copies, images) over the run's generated images in this mode, from the
        per-image "copy" rows (0/1); None when the run has no such rows."""
        metrics = self.protocol.metrics
        rows = metrics[(metrics["run_id"] == run_id) & (metrics["mode"] == self.mode) & (metrics["metric"] == "copy")
                       & (metrics["kind"] == "eval")]
        values = pd.to_numeric(rows["value"], errors="coerce").dropna()
        if values.empty:
            return None
        return int((values > 0.5).sum()), int(values.size)

    def cells(self, run_id: str | None) -> pd.DataFrame:
        """The run's cells as scored in this unit's metric mode."""
        cells = self.protocol.cells
        return cells[(cells["run_id"] == run_id) & (cells["mode"] == self.mode)]

    def cell_counts(self, run_id: str | None) -> dict[str, int]:
        states = self.cells(run_id)["state"].value_counts()
        counts = {state: int(states.get(state, 0)) for state in COUNTED_STATES}
        counts["expected"] = len(self.protocol.subjects)
        counts["other"] = int(states.sum()) - sum(counts[s] for s in COUNTED_STATES)
        return counts

    def cost(self, run_id: str | None, key: str) -> float | None:
        """Mean over the done cells of one cost column (fit_minutes derives from fit_seconds)."""
        cells = self.cells(run_id)
        cells = cells[cells["state"] == "done"]
        column = "fit_seconds" if key == "fit_minutes" else key
        values = pd.to_numeric(cells[column], errors="coerce").dropna()
        if values.empty:
            return None
        mean = float(values.mean())
        return mean / 60 if key == "fit_minutes" else mean

    def caption(self, what: str) -> str:
        """The shared caption: what the numbers are, metric mode, device, CI, random-init."""
        stats = self.statistics
        parts = [what, f"Metric mode: {self.mode}.", self.device_text(),
                 f"Mean over subjects with {stats.confidence:.0%} percentile-bootstrap CI over subjects "
                 f"({stats.n_resamples:,} resamples, seed {stats.seed})."]
        if self.random_init:
            parts.append(self.random_init_text())
        if self.toyworld:
            parts.append(f"{TOYWORLD_NOTE[0].upper()}{TOYWORLD_NOTE[1:]}.")
        parts.append(self.arithmetic_text())
        return " ".join(p for p in parts if p)

    def arithmetic_text(self) -> str:
        """Which rows were scored with reduced precision (bf16 autocast or TF32, execution
        options): their values can differ from fp32 in the third decimal."""
        cells = self.protocol.cells
        mine = cells[(cells["mode"] == self.mode) & (cells["score_arithmetic"].fillna("") != "")]
        labels = [row.label for row in self.rows if row.run_id in set(mine["run_id"])]
        if not labels:
            return ""
        kinds = ", ".join(sorted(set(mine["score_arithmetic"])))
        return (f"Scored with reduced precision ({kinds}) for {', '.join(labels)}: values can differ from "
                "fp32 scores in the third decimal.")

    def device_text(self) -> str:
        by_device: dict[str, list[str]] = {}
        for row in self.rows:
            for device in row.run.devices if row.run else []:
                by_device.setdefault(device, []).append(row.label)
        if not by_device:
            return "Device: not recorded."
        if len(by_device) == 1:
            return f"Device: {next(iter(by_device))}."
        listed = "; ".join(f"{device} ({', '.join(labels)})" for device, labels in sorted(by_device.items()))
        return f"Devices differ, so timings are not comparable: {listed}."

    def random_init_text(self) -> str:
        flagged = [row.label for row in self.rows if row.run and row.run.random_init]
        if len(flagged) == len(self.runs):
            return f"Warning, {RANDOM_INIT_NOTE}."
        return f"Rows {', '.join(flagged)}: {RANDOM_INIT_NOTE}."


def build_views(spec: ReportSpec, results: dict[str, ProtocolResults]) -> tuple[list[SectionView], list[str]]:
    """Every (section, protocol with results, mode) unit, plus notes on what was skipped."""
    views, skipped = [], []
    for section in spec.sections:
        missing = [name for name in section.protocols if name not in results]
        if missing:
            skipped.append(f"Section '{section.name}': no results for protocol(s) {', '.join(missing)}; skipped.")
        for name in section.protocols:
            if name in results:
                for mode in results[name].modes:
                    views.append(_view(section, spec.statistics, results[name], mode))
    return views, skipped


def _view(section: SectionSpec, statistics: StatisticsSpec, protocol: ProtocolResults, mode: str) -> SectionView:
    runs = [run for run in protocol.runs if mode in run.modes]
    rows, notes = [], []
    listed = {row.arm for row in section.arms}
    for arm_row in section.arms:
        matching = [run for run in runs if run.arm == arm_row.arm]
        label = arm_row.label or arm_row.arm
        series = arm_row.series or ""
        rows += [Row(label, arm_row.arm, run, _parameter(section, arm_row.parameter, run), series)
                 for run in matching]
        if not matching:
            rows.append(Row(label, arm_row.arm, None, arm_row.parameter, series))
    others = sorted((run for run in runs if run.arm not in listed), key=lambda r: (r.arm, r.run_id))
    if section.other_arms == "append":
        rows += [Row(run.arm, run.arm, run, _parameter(section, None, run)) for run in others]
    elif others:
        notes.append("Not shown (not listed in the spec): " + ", ".join(f"{r.arm} ({r.run_id})" for r in others) + ".")
    _distinguish_repeated_labels(rows, notes)
    return SectionView(section, statistics, protocol, mode, rows, notes)


def _parameter(section: SectionSpec, explicit: float | None, run: RunResults | None) -> float | None:
    if explicit is not None:
        return explicit
    if run is None or not section.parameter.key:
        return None
    value = run.value_at(section.parameter.key)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _distinguish_repeated_labels(rows: list[Row], notes: list[str]) -> None:
    """Two runs of one arm (other version or config) keep both rows, told apart by run id."""
    labels = [row.label for row in rows]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    for row in rows:
        if row.label in repeated and row.run is not None:
            row.label = f"{row.label} [{row.run.run_id.rsplit('-', 1)[-1][:6]}]"
    if repeated:
        notes.append(f"Several runs of {', '.join(repeated)} (different versions or configs): "
                     "each is its own row, labelled with the start of its run id.")
