"""Plots of a `SectionView` (matplotlib, PNG and PDF).

- sweep: metric vs the ablation parameter (scale weight, distillation λ) with CI bands.
- cost: quality (DINO, CLIP-T) vs cost (seconds per image, fit time), log x: the
  Pareto view, one marker per method family (Method.family); the non-dominated points
  are joined and the point labels are placed so that none overlaps another.
- spread: per-subject values per arm (box plot with the subjects as points).
- loss: fit loss curves, mean over subjects, per arm: one row of panels per method
  family, each with that family's loss terms, so every method's curves are drawn.

Figures are built as `matplotlib.figure.Figure` objects rendered by the Agg canvas:
no pyplot, so no global backend is touched and nothing needs a display. Every figure
that includes a random-init run says so in its title, so the warning travels with the
PNG. Builders return None (with a reason) when a unit has nothing to draw.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from varbench.report.families import MARKER_NAMES, families_in_order, family_styles
from varbench.report.labels import add_point_label, separate_labels
from varbench.report.results import RANDOM_INIT_NOTE
from varbench.report.section import METRIC_LABELS, Row, SectionView

DPI = 150
LOSS_PANELS = 3  # loss terms drawn per method family (the total first)


@dataclass
class FigureFile:
    name: str  # file stem under <out>/figures/
    title: str
    caption: str
    png: bytes
    pdf: bytes
    axes_labels: list[tuple[str, str]]  # (x label, y label) of every panel, read from the figure
    figure: Figure | None = field(default=None, repr=False)  # the drawn figure, for inspection


def build_figures(view: SectionView) -> tuple[list[FigureFile], list[str]]:
    builders = {"sweep": sweep_figure, "cost": cost_figure, "spread": spread_figure, "loss": loss_figure}
    figures, notes = [], []
    for kind in view.spec.figures:
        result = builders[kind](view)
        if isinstance(result, str):
            notes.append(f"{view.title}: no {kind} plot ({result}).")
        else:
            figures.append(result)
    return figures, notes


def sweep_figure(view: SectionView) -> FigureFile | str:
    rows = [row for row in view.rows if row.run is not None and row.parameter is not None]
    if not rows:
        return "no arm has a numeric parameter: set 'parameter' in the spec"
    metrics = view.spec.metrics
    figure, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics):
        for series in dict.fromkeys(row.series for row in rows):
            points = sorted((row.parameter, view.metric(row.run_id, metric)) for row in rows if row.series == series)
            points = [(x, s) for x, s in points if s is not None]
            if not points:
                continue
            x = np.array([p[0] for p in points])
            mean, low, high = (np.array([p[1][k] for p in points], dtype=float) for k in ("mean", "ci_low", "ci_high"))
            line = ax.plot(x, mean, marker="o", label=series or None)[0]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if view.spec.parameter.log_scale:
            positive = [row.parameter for row in rows if row.parameter > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        ax.set_xlabel(view.spec.parameter.label)
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
        if any(row.series for row in rows):
            ax.legend(fontsize="small")
    caption = f"Metric vs {view.spec.parameter.label}: mean over subjects, band = {_ci_text(view)}."
    return _finish(figure, view, "sweep", f"metric vs {view.spec.parameter.label}", caption)


def cost_figure(view: SectionView) -> FigureFile | str:
    rows = [row for row in view.rows if row.run is not None]
    fit_key = "fit_seconds" if "fit_seconds" in view.spec.columns else "fit_minutes"
    costs = [("seconds_per_image", "seconds per image (log scale)"),
             (fit_key, ("fit seconds" if fit_key == "fit_seconds" else "fit minutes") + " (log scale)")]
    qualities = [m for m in ("dino", "clip_t") if any(view.metric(r.run_id, m) for r in rows)]
    if not rows or not qualities:
        return "no DINO or CLIP-T results"
    styles = family_styles([row.family for row in rows])
    figure = Figure(figsize=(9.5, 3.6 * len(qualities) + 0.4), dpi=DPI, layout="constrained")
    grid = figure.subplots(len(qualities), 2, squeeze=False)
    for row_index, metric in enumerate(qualities):
        for col_index, (cost_key, cost_label) in enumerate(costs):
            ax = grid[row_index][col_index]
            _cost_panel(ax, view, rows, metric, cost_key, styles)
            ax.set_xlabel(cost_label)
            ax.set_ylabel(METRIC_LABELS[metric])
    _family_legend(figure, styles)
    separate_labels(figure)  # last: the labels are measured where the layout put the axes
    markers = ", ".join(f"{family}: {MARKER_NAMES[marker]}" for family, (marker, _) in styles.items())
    caption = ("Quality vs cost per arm (mean over subjects, error bars = "
               f"{_ci_text(view)}); dashed: Pareto front (cheaper and better). Method families: {markers}.")
    return _finish(figure, view, "cost", "quality vs cost", caption)


def _family_legend(figure: Figure, styles: dict[str, tuple[str, str]]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=marker, color=colour, linestyle="", label=family)
               for family, (marker, colour) in styles.items()]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small",
                  title="method family", title_fontsize="small", frameon=False)


def _cost_panel(ax: Axes, view: SectionView, rows: list[Row], metric: str, cost_key: str,
                styles: dict[str, tuple[str, str]]) -> None:
    points = []
    for row in rows:
        summary, cost = view.metric(row.run_id, metric), view.cost(row.run_id, cost_key)
        if summary is None or cost is None or cost <= 0:
            continue
        marker, colour = styles[row.family]
        low, high = summary["ci_low"], summary["ci_high"]
        error = [[summary["mean"] - low], [high - summary["mean"]]] if np.isfinite(low) else None
        ax.errorbar([cost], [summary["mean"]], yerr=error, fmt=marker, capsize=3, color=colour)
        add_point_label(ax, row.label, (cost, summary["mean"]))
        points.append((cost, summary["mean"]))
    if not points:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
        return
    _log_axis(ax, [p[0] for p in points])
    front = pareto_front(points)
    ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", color="gray", linewidth=1)
    ax.grid(alpha=0.3, which="both")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and quality (higher), by cost."""
    front, best_quality = [], -np.inf
    for cost, quality in sorted(points, key=lambda p: (p[0], -p[1])):
        if quality > best_quality:
            front.append((cost, quality))
            best_quality = quality
    return front


def spread_figure(view: SectionView) -> FigureFile | str:
    table = view.subject_table
    rows = [row for row in view.rows if row.run is not None]
    if table.empty or not rows:
        return "no per-subject results"
    metrics = view.spec.metrics
    figure, axes = _panels(len(metrics), width=max(3.4, 0.7 * len(rows) + 1.5))
    jitter = np.random.default_rng(0)  # fixed, so the same results give the same picture
    for ax, metric in zip(axes, metrics):
        values = [table[(table["run_id"] == row.run_id) & (table["metric"] == metric)]["value"].to_numpy(float)
                  for row in rows]
        positions = np.arange(1, len(rows) + 1)
        drawn = [(p, v) for p, v in zip(positions, values) if v.size]
        if drawn:
            ax.boxplot([v for _, v in drawn], positions=[p for p, _ in drawn], widths=0.5, showfliers=False)
            for position, subject_values in drawn:
                x = position + jitter.uniform(-0.12, 0.12, size=subject_values.size)
                ax.scatter(x, subject_values, s=10, alpha=0.7, color="C0", zorder=3)
        ax.set_xticks(positions)
        ax.set_xticklabels([row.label for row in rows], rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(view.spec.row_header)
        ax.set_ylabel(f"{METRIC_LABELS[metric]} per subject")
        ax.grid(alpha=0.3, axis="y")
    caption = "Per-subject means (points) and their spread (box: quartiles, whiskers: 1.5 IQR) per arm."
    return _finish(figure, view, "spread", "per-subject spread", caption)


def loss_figure(view: SectionView) -> FigureFile | str:
    rows = [row for row in view.rows if row.run is not None]
    curves = {row.run_id: _loss_curves(view.protocol.losses, row.run_id) for row in rows}
    drawn = [row for row in rows if curves[row.run_id]]
    if not drawn:
        return "no fit losses recorded"
    families = families_in_order([row.family for row in drawn])
    names = {family: _loss_names([curves[r.run_id] for r in drawn if r.family == family]) for family in families}
    columns = max(len(n) for n in names.values())
    figure = Figure(figsize=(max(3.6 * columns, 6.4), 3.0 * len(families) + 0.4), dpi=DPI, layout="constrained")
    grid = figure.subplots(len(families), columns, squeeze=False)
    for family, panels in zip(families, grid):
        for index, ax in enumerate(panels):
            if index >= len(names[family]):
                ax.remove()
                continue
            name = names[family][index]
            for row in (r for r in drawn if r.family == family and name in curves[r.run_id]):
                curve = curves[row.run_id][name]
                ax.plot(curve.index, curve.to_numpy(), label=row.label, linewidth=1)
            ax.set_title(f"{family}: {name}", fontsize=9)
            ax.set_xlabel("fit step")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    caption = (f"Fit losses, mean over subjects per step: one row of panels per method family "
               f"({', '.join(families)}), each with up to {LOSS_PANELS} of its loss terms.")
    missing = [row.label for row in rows if not curves[row.run_id]]
    if missing:
        caption += f" No fit losses recorded for {', '.join(missing)}."
    return _finish(figure, view, "loss", "fit losses", caption)


def _loss_curves(losses: pd.DataFrame, run_id: str | None) -> dict[str, pd.Series]:
    """Loss name -> mean over subjects per fit step, for the loss terms this run recorded."""
    part = losses[losses["run_id"] == run_id]
    step = pd.to_numeric(part["step"], errors="coerce")
    curves = {}
    for name in (c for c in part.columns if c not in ("run_id", "subject", "step")):
        values = pd.DataFrame({"step": step, "value": pd.to_numeric(part[name], errors="coerce")}).dropna()
        if not values.empty:
            curves[name] = values.groupby("step")["value"].mean()
    return curves


def _loss_names(curves: list[dict[str, pd.Series]]) -> list[str]:
    """A family's loss terms, the total "loss" first, then in order of first appearance."""
    names = list(dict.fromkeys(name for found in curves for name in found))
    names.sort(key=lambda name: name != "loss")  # stable: the rest keep their order
    return names[:LOSS_PANELS]


# --- shared ------------------------------------------------------------------------------------
def _log_axis(ax: Axes, values: list[float]) -> None:
    """Log x with plain numbers (matplotlib's 10^k labels are hard to read on short ranges)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.set_xscale("log")
    ax.margins(x=0.2)  # room for the point labels
    span = max(values) / min(values)
    if span < 10:  # under a decade: tick the data values themselves, unless labels would collide
        ticks: list[float] = []
        for value in sorted({float(f"{v:.3g}") for v in values}):
            if not ticks or value / ticks[-1] >= 1.25:
                ticks.append(value)
        ax.set_xticks(ticks)
    else:  # 1-2-5 steps over up to two decades, powers of ten beyond
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if span <= 100 else (1.0,)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _panels(count: int, width: float = 3.6) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(max(width * count, 6.4), 3.4), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    return figure, list(axes)


def _ci_text(view: SectionView) -> str:
    return f"{view.statistics.confidence:.0%} bootstrap CI over subjects"


def _finish(figure: Figure, view: SectionView, kind: str, what: str, caption: str) -> FigureFile:
    """Title, caption and both file formats; the PNG's own title names the protocol."""
    title = f"{view.title}: {what}"
    heading = f"{view.protocol.name} ({view.mode}): {what}" + (f"\n{RANDOM_INIT_NOTE}" if view.random_init else "")
    figure.suptitle(heading, fontsize=10, color="firebrick" if view.random_init else "black")
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for ax in figure.axes]
    caption = " ".join(p for p in (caption, f"Metric mode: {view.mode}.",
                                   view.random_init_text() if view.random_init else "") if p)
    png, pdf = io.BytesIO(), io.BytesIO()
    figure.savefig(png, format="png")
    figure.savefig(pdf, format="pdf")
    return FigureFile(f"{view.stem}-{kind}", title, caption, png.getvalue(), pdf.getvalue(), labels, figure)
