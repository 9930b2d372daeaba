"""Build the report's tables from a `SectionView`.

- comparison: one row per arm (run): quality metrics as mean [95% CI] over subjects,
  then costs (fit time, seconds per image, trainable parameters, artifact size), best
  value per column in bold. The main comparison and every ablation use it; an
  ablation lists its arms in the spec's order with the spec's labels and, when the spec
  gives one, a parameter column (the paper's layout: one row per variant).
- split: the same metrics for live and object subjects separately.
- paired: every row against a reference row, Wilcoxon signed-rank over shared subjects.
Rows that lack cells are marked (†) and their state counts are shown, never dropped.
"""
from __future__ import annotations

import math
from typing import Any

from varbench.metrics.stats import paired_test
from varbench.report.section import COUNTED_STATES, METRIC_BETTER, METRIC_LABELS, Row, SectionView
from varbench.report.table_model import (Column, Entry, Table, format_bytes, format_count, format_seconds,
                                   mark_best, rounded)

INCOMPLETE = "†"
COUNT_COLUMNS = ("trainable_parameters", "artifact_bytes", "fit_peak_memory_bytes")  # integers in the CSV
COST_COLUMNS = {  # key -> (header, formatter)
    "fit_minutes": ("Fit (min)", format_seconds),
    "fit_seconds": ("Fit (s)", format_seconds),
    "seconds_per_image": ("s / image", format_seconds),
    "trainable_parameters": ("Trainable params", format_count),
    "artifact_bytes": ("Artifact size", format_bytes),
    "fit_peak_memory_bytes": ("Fit peak memory", format_bytes),
}


def build_tables(view: SectionView) -> list[Table]:
    builders = {"comparison": comparison_table, "split": split_table, "paired": paired_table}
    tables = [builders[kind](view) for kind in view.spec.tables]
    return [table for table in tables if table is not None]


def comparison_table(view: SectionView) -> Table:
    spec = view.spec
    with_parameter = any(row.parameter is not None for row in view.rows)
    columns = _label_columns(view) + ([Column("parameter", spec.parameter.label)] if with_parameter else [])
    columns += [Column(key, METRIC_LABELS.get(key) or COST_COLUMNS[key][0], METRIC_BETTER.get(key, "lower"))
                for key in spec.columns]
    decimals = {key: _decimals(view, key) for key in spec.columns if key in METRIC_LABELS}
    table = Table(f"{view.stem}-comparison", view.title, view.caption("Per-arm comparison."), columns)
    for row in view.rows:
        entries, record = _label_entries(view, row)
        if with_parameter:
            entries.append(Entry(_format_parameter(row.parameter)))
            record["parameter"] = row.parameter
        for key in spec.columns:
            if key in METRIC_LABELS:
                entry, values = _metric_entry(view.metric(row.run_id, key), decimals[key])
                record.update({f"{key}_{name}": value for name, value in values.items()})
            else:
                value = view.cost(row.run_id, key) if row.run else None
                entry = _cost_entry(key, value)
                record[key] = int(value) if key in COUNT_COLUMNS and value is not None and value.is_integer() else value
            entries.append(entry)
        table.rows.append(entries)
        table.records.append(record)
    mark_best(table)
    table.notes = _row_notes(view)
    return table


def split_table(view: SectionView) -> Table:
    columns = _label_columns(view) + [Column("subjects", "Subjects (live / object)")]
    for key in view.spec.metrics:
        columns += [Column(f"{key}_{group}", group, METRIC_BETTER[key], group=METRIC_LABELS[key])
                    for group in ("live", "object")]
    table = Table(f"{view.stem}-split", f"{view.title}: live vs object subjects",
                  view.caption("Live subjects (cats and dogs) and objects separately."), columns)
    for row in view.rows:
        entries, record = _label_entries(view, row)
        counts = [view.metric(row.run_id, view.spec.metrics[0], g) if view.spec.metrics else None
                  for g in ("live", "object")]
        entries.append(Entry(" / ".join(str(c["n_subjects"]) if c else "0" for c in counts)))
        for key in view.spec.metrics:
            for group in ("live", "object"):
                entry, values = _metric_entry(view.metric(row.run_id, key, group), _decimals(view, key))
                entries.append(entry)
                record.update({f"{key}_{group}_{name}": value for name, value in values.items()})
        table.rows.append(entries)
        table.records.append(record)
    mark_best(table)
    table.notes = _row_notes(view)
    return table


def paired_table(view: SectionView) -> Table | None:
    """Each row against the reference row; None when fewer than two rows have results."""
    with_results = [row for row in view.rows if row.run is not None]
    if len(with_results) < 2:
        return None
    wanted = view.spec.reference_arm
    reference = next((row for row in with_results if row.arm == wanted), with_results[0])
    columns = [Column("label", view.spec.row_header, align="left"),
               Column("run_id", "Run", align="left", in_latex=False)]
    columns += [Column(key, METRIC_LABELS[key], group="Δ vs reference") for key in view.spec.metrics]
    what = (f"Paired Wilcoxon signed-rank tests (two-sided) of each row against {reference.label} over the "
            f"subjects both have; Δ = mean over those subjects of (row − {reference.label}); p = p-value, "
            "n = subjects.")
    table = Table(f"{view.stem}-paired", f"{view.title}: paired tests against {reference.label}",
                  " ".join(p for p in (what, f"Metric mode: {view.mode}.",
                                       view.random_init_text() if view.random_init else "") if p), columns)
    for row in with_results:
        if row is reference:
            continue
        entries = [Entry(row.label), Entry(row.run_id or "")]
        record: dict[str, Any] = {"label": row.label, "run_id": row.run_id, "reference_run_id": reference.run_id}
        for key in view.spec.metrics:
            test = paired_test(view.subject_table, row.run_id, reference.run_id, key, view.mode)
            entries.append(_paired_entry(test.mean_difference, test.p_value, test.n_subjects, _decimals(view, key)))
            record.update({f"{key}_mean_difference": test.mean_difference, f"{key}_statistic": test.statistic,
                           f"{key}_p_value": test.p_value, f"{key}_n_subjects": test.n_subjects})
        table.rows.append(entries)
        table.records.append(record)
    return table


def subject_records(view: SectionView) -> list[dict[str, Any]]:
    """Per-subject means and cell states of every row (pending and failed cells included)."""
    values = view.subject_table.pivot_table(index=["run_id", "subject"], columns="metric", values="value")
    records = []
    for row in view.rows:
        if row.run is None:
            continue
        for cell in view.cells(row.run_id).itertuples():
            record = {"label": row.label, "run_id": row.run_id, "random_init": row.run.random_init,
                      "subject": cell.subject, "live": cell.live, "state": cell.state, "error": cell.error}
            for metric in METRIC_LABELS:
                key = (row.run_id, cell.subject)
                has = metric in values.columns and key in values.index
                record[metric] = float(values.loc[key, metric]) if has else None
            records.append(record)
    return records


# --- shared pieces ---------------------------------------------------------------------------
def _label_columns(view: SectionView) -> list[Column]:
    return [Column("label", view.spec.row_header, align="left"),
            Column("run_id", "Run", align="left", in_latex=False),
            Column("cells", "Cells", align="left", in_latex=False)]


def _label_entries(view: SectionView, row: Row) -> tuple[list[Entry], dict[str, Any]]:
    counts = view.cell_counts(row.run_id)
    incomplete = row.run is not None and counts["done"] < counts["expected"]
    label = Entry(row.label, mark=INCOMPLETE if incomplete or row.run is None else "")
    record = {"label": row.label, "arm": row.arm, "run_id": row.run_id,
              "method": row.run.method if row.run else None, "protocol": view.protocol.name, "mode": view.mode,
              "random_init": row.run.random_init if row.run else None,
              **{f"cells_{state}": counts[state] for state in ("expected", *COUNTED_STATES)}}
    return [label, Entry(row.run_id or "—"), Entry(_cells_text(counts) if row.run else "no results")], record


def _cells_text(counts: dict[str, int]) -> str:
    text = f"{counts['done']}/{counts['expected']}"
    missing = [f"{counts[state]} {state}" for state in (*COUNTED_STATES[1:], "other") if counts[state]]
    return f"{text} ({', '.join(missing)})" if missing else text


def _row_notes(view: SectionView) -> list[str]:
    notes = list(view.notes)
    incomplete = [row.label for row in view.rows
                  if row.run is not None and view.cell_counts(row.run_id)["done"] < len(view.protocol.subjects)]
    if incomplete:
        notes.insert(0, f"{INCOMPLETE} Not every subject is done for {', '.join(incomplete)}: their means cover "
                        "only the done subjects (failed, damaged and pending cells are listed in the report).")
    absent = [row.label for row in view.rows if row.run is None]
    if absent:
        notes.insert(0, f"{INCOMPLETE} No results yet for {', '.join(absent)}.")
    return notes


def _metric_entry(summary: dict[str, Any] | None, decimals: int) -> tuple[Entry, dict[str, Any]]:
    if summary is None:
        return Entry("—"), {"mean": None, "ci_low": None, "ci_high": None, "n_subjects": 0}
    mean, low, high = summary["mean"], summary["ci_low"], summary["ci_high"]
    detail = f"[{low:.{decimals}f}, {high:.{decimals}f}]" if not math.isnan(low) else f"(n = {summary['n_subjects']})"
    entry = Entry(f"{mean:.{decimals}f}", detail, value=rounded(mean, decimals))
    return entry, {"mean": mean, "ci_low": low, "ci_high": high, "n_subjects": int(summary["n_subjects"])}


def _cost_entry(key: str, value: float | None) -> Entry:
    """Costs compare as shown (3 significant digits), so equal-looking entries tie for best."""
    text = COST_COLUMNS[key][1](value)
    if value is None:
        return Entry(text)
    shown = float(text) if COST_COLUMNS[key][1] is format_seconds else float(f"{value:.3g}")
    return Entry(text, value=shown)


def _paired_entry(difference: float, p_value: float, n_subjects: int, decimals: int) -> Entry:
    if n_subjects == 0:
        return Entry("—", "(no shared subjects)")
    p_text = "n/a" if math.isnan(p_value) else f"{p_value:.3g}"
    return Entry(f"{difference:+.{decimals}f}", f"(p = {p_text}, n = {n_subjects})")


def _decimals(view: SectionView, metric: str) -> int:
    """3 decimals on the 0-1 scale (DESIGN.md section 4); 2 for the x100 modes."""
    values = view.subject_table.loc[view.subject_table["metric"] == metric, "value"]
    return 2 if len(values) and values.abs().max() > 1.5 else 3


def _format_parameter(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"
