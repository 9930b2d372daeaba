"""Build the report's tables from a `SectionView`.

- comparison: one row per arm (run): quality metrics as mean [95% CI] over subjects,
  then costs (fit time, seconds per image, trainable parameters, artifact size), best
  value per column in bold. The main comparison and every ablation use it; an
  ablation lists its arms in the spec's order with the spec's labels and, when the spec
  gives one, a parameter column (the paper's layout: one row per variant). DIV, PRES,
  the share of near-copies ("copy" rows) and artifact size are shown whenever the
  results have them, listed in the spec or not. Published results of the same dataset
  and metric mode (varbench.report.published) follow as separate italic rows; an arm
  whose DINO exceeds the dataset's real-vs-real ceiling gets a note.
- split: the same metrics for live and object subjects separately.
- paired: every row against a reference row, Wilcoxon signed-rank over shared subjects,
  with p-values only where that many subjects can reach the confidence level.
Rows that lack cells are marked (†) and their state counts are shown, never dropped.
"""
from __future__ import annotations

import math
from typing import Any

from varbench.metrics.stats import paired_test
from varbench.report.published import PublishedEntry, published_for, real_vs_real
from varbench.report.section import COUNTED_STATES, METRIC_BETTER, METRIC_LABELS, Row, SectionView
from varbench.report.table_model import (Column, Entry, Table, format_bytes, format_count, format_duration,
                                   format_seconds, mark_best, rounded)

INCOMPLETE = "†"
COUNT_COLUMNS = ("trainable_parameters", "artifact_bytes", "fit_peak_memory_bytes")  # integers in the CSV
FIT_COLUMNS = ("fit_minutes", "fit_seconds")  # one "Fit time" column: seconds under a minute, else minutes
COST_COLUMNS = {  # key -> (header, formatter)
    "fit_minutes": ("Fit time", format_seconds),
    "fit_seconds": ("Fit time", format_seconds),
    "seconds_per_image": ("s / image", format_seconds),
    "trainable_parameters": ("Trainable params", format_count),
    "artifact_bytes": ("Artifact size", format_bytes),
    "fit_peak_memory_bytes": ("Fit peak memory", format_bytes),
}
# Every column in its place; a column the data has but the spec omits is inserted here.
COLUMN_ORDER = ("dino", "clip_i", "clip_t", "dinov2_s", "dinov2_l", "clip_l_i", "clip_l_t", "div", "pres", "copy",
                "fit_minutes", "fit_seconds",
                "seconds_per_image", "trainable_parameters", "artifact_bytes", "fit_peak_memory_bytes")
SHOWN_WHEN_PRESENT = ("dinov2_s", "dinov2_l", "clip_l_i", "clip_l_t", "div", "pres", "copy", "artifact_bytes")
COPIES = "copy"


def build_tables(view: SectionView) -> list[Table]:
    builders = {"comparison": comparison_table, "split": split_table, "paired": paired_table}
    tables = [builders[kind](view) for kind in view.spec.tables]
    if view.toyworld:  # the toyworld's known answers are part of what its numbers mean
        tables.append(known_answers_table(view))
    return [table for table in tables if table is not None]


def known_answers_table(view: SectionView) -> Table | None:
    """The method-level known answers (toyworld/method_answers.py) of a toyworld section's
    arms; None when none can be measured there (an ablation has no floor or ceiling arm)."""
    from varbench.toyworld.method_answers import VERDICTS, method_answers

    run_ids = {row.arm: row.run_id for row in view.rows if row.run_id is not None}
    answers = method_answers(view.protocol.metrics, run_ids, view.mode, view.statistics)
    if all(answer.holds is None for answer in answers):
        return None
    columns = [Column("claim", "Known answer", align="left"), Column("measured", "Measured", align="left"),
               Column("verdict", "", align="left")]
    table = Table(f"{view.stem}-known-answers", f"Known answers: {view.title}",
                  view.caption("Facts any honest miniature world must reproduce; DINO as mean "
                               f"[{view.statistics.confidence:.0%} CI] over subjects."), columns)
    for answer in answers:
        table.rows.append([Entry(answer.claim), Entry(answer.measured), Entry(VERDICTS[answer.holds])])
        table.records.append({"claim": answer.claim, "measured": answer.measured, "holds": answer.holds})
    return table


def comparison_table(view: SectionView) -> Table:
    spec = view.spec
    keys = shown_columns(view)
    with_parameter = any(row.parameter is not None for row in view.rows)
    columns = _label_columns(view) + ([Column("parameter", spec.parameter.label)] if with_parameter else [])
    columns += [_comparison_column(key) for key in keys]
    decimals = {key: _decimals(view, key) for key in keys if key in METRIC_LABELS}
    table = Table(f"{view.stem}-comparison", view.title, view.caption("Per-arm comparison."), columns)
    for row in view.rows:
        entries, record = _label_entries(view, row)
        if with_parameter:
            entries.append(Entry(_format_parameter(row.parameter)))
            record["parameter"] = row.parameter
        for key in keys:
            if key in METRIC_LABELS:
                entry, values = _metric_entry(view.metric(row.run_id, key), decimals[key])
                record.update({f"{key}_{name}": value for name, value in values.items()})
            elif key == COPIES:
                entry, values = _copies_entry(view.copies(row.run_id) if row.run else None)
                record.update(values)
            else:
                value = view.cost(row.run_id, key) if row.run else None
                entry = _cost_entry(key, value, view.cost(row.run_id, "fit_seconds") if row.run else None)
                record[key] = int(value) if key in COUNT_COLUMNS and value is not None and value.is_integer() else value
            entries.append(entry)
        table.rows.append(entries)
        table.records.append(record)
    mark_best(table)
    published = published_for(view.dataset, view.mode) if spec.published and view.dataset else []
    table.published = [_published_entries(entry, keys, decimals, with_parameter) for entry in published]
    table.notes = _row_notes(view) + _ceiling_notes(view) + _published_notes(published)
    return table


def shown_columns(view: SectionView) -> list[str]:
    """The spec's columns, plus DIV, PRES, copies and artifact size wherever the results
    have them (each inserted after the spec's columns that come before it)."""
    keys = list(view.spec.columns)
    rank = {key: index for index, key in enumerate(COLUMN_ORDER)}
    for key in SHOWN_WHEN_PRESENT:
        if key in keys or not _present(view, key):
            continue
        before = [index for index, shown in enumerate(keys) if rank.get(shown, 0) < rank[key]]
        keys.insert(before[-1] + 1 if before else 0, key)
    return keys


def _present(view: SectionView, key: str) -> bool:
    runs = [row.run_id for row in view.rows if row.run is not None]
    if key == COPIES:
        return any(view.copies(run_id) for run_id in runs)
    if key in METRIC_LABELS:
        return any(view.metric(run_id, key) for run_id in runs)
    return any(view.cost(run_id, key) is not None for run_id in runs)


def _comparison_column(key: str) -> Column:
    if key == COPIES:  # a guard, not a score: never bolded
        return Column(key, "Copies")
    return Column(key, METRIC_LABELS.get(key) or COST_COLUMNS[key][0], METRIC_BETTER.get(key, "lower"))


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
    confidence = view.statistics.confidence
    needed = min_paired_subjects(confidence)
    too_few: dict[int, list[str]] = {}
    for row in with_results:
        if row is reference:
            continue
        entries = [Entry(row.label), Entry(row.run_id or "")]
        record: dict[str, Any] = {"label": row.label, "run_id": row.run_id, "reference_run_id": reference.run_id}
        for key in view.spec.metrics:
            test = paired_test(view.subject_table, row.run_id, reference.run_id, key, view.mode)
            testable = test.n_subjects >= needed
            if 0 < test.n_subjects < needed and row.label not in too_few.setdefault(test.n_subjects, []):
                too_few[test.n_subjects].append(row.label)
            entries.append(_paired_entry(test.mean_difference, test.p_value if testable else None, test.n_subjects,
                                         _decimals(view, key)))
            record.update({f"{key}_mean_difference": test.mean_difference,
                           f"{key}_statistic": test.statistic if testable else None,
                           f"{key}_p_value": test.p_value if testable else None, f"{key}_n_subjects": test.n_subjects})
        table.rows.append(entries)
        table.records.append(record)
    table.notes = [f"Too few subjects (n={n}) for a paired test at {confidence:.0%}: {', '.join(labels)} "
                   f"shown as Δ without a p-value (a two-sided Wilcoxon signed-rank test needs at least {needed} "
                   f"subjects to reach p < {1 - confidence:.2g})." for n, labels in sorted(too_few.items())]
    return table


def min_paired_subjects(confidence: float) -> int:
    """Fewest subjects with which a two-sided Wilcoxon signed-rank test can reach
    p < 1 - confidence: its smallest p-value over n subjects is 2 / 2**n (all one sign),
    so at 95% it takes 6 (2 / 64 = 0.031; with 5, 2 / 32 = 0.0625 never passes)."""
    alpha = 1 - confidence
    subjects = 1
    while 2.0 ** (1 - subjects) >= alpha:
        subjects += 1
    return subjects


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
            for metric in (*METRIC_LABELS, COPIES):  # copy: the subject's share of near-copies
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


def _cost_entry(key: str, value: float | None, fit_seconds: float | None = None) -> Entry:
    """Costs compare as shown (3 significant digits), so equal-looking entries tie for best."""
    if key in FIT_COLUMNS:
        text, shown = format_duration(fit_seconds)
        return Entry(text, value=shown)
    text = COST_COLUMNS[key][1](value)
    if value is None:
        return Entry(text)
    shown = float(text) if COST_COLUMNS[key][1] is format_seconds else float(f"{value:.3g}")
    return Entry(text, value=shown)


def _copies_entry(found: tuple[int, int] | None) -> tuple[Entry, dict[str, Any]]:
    """The share of generated images that are near-copies of a reference, in %."""
    if found is None:
        return Entry("—"), {"copies": None, "copy_images": None, "copy_share": None}
    copies, images = found
    share = copies / images
    return (Entry(f"{100 * share:.1f}%", f"({copies} of {images})"),
            {"copies": copies, "copy_images": images, "copy_share": share})


def _published_entries(entry: PublishedEntry, keys: list[str], decimals: dict[str, int],
                       with_parameter: bool) -> list[Entry]:
    """A published row in the comparison table's columns: its values where the paper gives them."""
    cells = [Entry(entry.label), Entry(f"arXiv {entry.source.arxiv}" if entry.source.arxiv else ""),
             Entry("published")]
    cells += [Entry("—")] if with_parameter else []
    for key in keys:
        value = entry.metrics.get(key)
        cells.append(Entry("—") if value is None else Entry(f"{value:.{decimals.get(key, 3)}f}"))
    return cells


def _published_notes(published: list[PublishedEntry]) -> list[str]:
    if not published:
        return []
    sources = sorted({f"{e.source.cite}" + (f", {e.source.title}" if e.source.title else "")
                      + (f", arXiv {e.source.arxiv}" if e.source.arxiv else "") for e in published})
    return [f"Published rows (italic, last) are quoted, not measured here, and take part in no "
            f"statistic or highlight: {'; '.join(sources)}. Sources and notes: varbench/report/published.yaml."]


def _ceiling_notes(view: SectionView) -> list[str]:
    """An arm more similar to the references than they are to each other may copy them."""
    ceiling = real_vs_real(view.dataset, view.mode) if view.dataset else None
    if ceiling is None:
        return []
    notes = []
    for row in view.rows:
        dino = view.metric(row.run_id, "dino") if row.run else None
        if dino is not None and dino["mean"] > ceiling:
            notes.append(f"{row.label}'s DINO ({dino['mean']:.3f}) exceeds the real-vs-real ceiling {ceiling:.3f} "
                         "of this dataset: it may copy the references.")
    return notes


def _paired_entry(difference: float, p_value: float | None, n_subjects: int, decimals: int) -> Entry:
    """Δ with its p-value; None: too few subjects for the test, Δ and n only."""
    if n_subjects == 0:
        return Entry("—", "(no shared subjects)")
    if p_value is None:
        return Entry(f"{difference:+.{decimals}f}", f"(n = {n_subjects})")
    p_text = "n/a" if math.isnan(p_value) else f"{p_value:.3g}"
    return Entry(f"{difference:+.{decimals}f}", f"(p = {p_text}, n = {n_subjects})")


def _decimals(view: SectionView, metric: str) -> int:
    """3 decimals on the 0-1 scale (DESIGN.md section 4); 2 for the x100 modes."""
    values = view.subject_table.loc[view.subject_table["metric"] == metric, "value"]
    return 2 if len(values) and values.abs().max() > 1.5 else 3


def _format_parameter(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"
