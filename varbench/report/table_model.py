"""A table as data: columns, rows of entries, caption and notes, independent of format.

Builders (varbench.report.tables) fill a `Table`; renderers (varbench.report.formats)
turn it into Markdown, LaTeX, CSV or HTML. Keeping one model means the best-value
highlight, the marks and the captions are decided once and agree across formats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Entry:
    """One table cell."""

    text: str = ""  # main text: "0.668", "1.61 B", "arbooth"
    detail: str = ""  # secondary text shown smaller: "[0.641, 0.695]"
    value: float | None = None  # the number the best-value rule compares (rounded as shown)
    best: bool = False
    mark: str = ""  # footnote mark appended to the text, e.g. "†"


@dataclass
class Column:
    key: str
    header: str
    better: Literal["higher", "lower", ""] = ""  # which way is best; "" = not highlighted
    group: str = ""  # spanning header over adjacent columns of the same group
    align: Literal["left", "right"] = "right"
    in_latex: bool = True  # the run id column is dropped from the paper-ready LaTeX


@dataclass
class Table:
    name: str  # file stem under <out>/tables/
    title: str
    caption: str
    columns: list[Column]
    rows: list[list[Entry]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # raw numbers for the CSV
    # rows quoted from papers, shown apart under `rows` (italic, after a rule); never
    # compared, bolded or written to the CSV, which holds measured numbers only
    published: list[list[Entry]] = field(default_factory=list)


def mark_best(table: Table) -> None:
    """Flag the best entry of every column that has a direction (ties all flagged)."""
    for index, column in enumerate(table.columns):
        if not column.better:
            continue
        values = [row[index].value for row in table.rows if _is_number(row[index].value)]
        if len(values) < 2:
            continue  # a single row has nothing to beat
        best = max(values) if column.better == "higher" else min(values)
        for row in table.rows:
            row[index].best = _is_number(row[index].value) and row[index].value == best


def _is_number(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


# --- number formatting shared by all builders -------------------------------------------
def format_seconds(seconds: float | None) -> str:
    if not _is_number(seconds):
        return "—"
    if seconds >= 100:
        return f"{seconds:.0f}"
    if seconds >= 10:
        return f"{seconds:.1f}"
    return f"{seconds:.2f}" if seconds >= 0.1 else f"{seconds:.2g}"  # 0.042, 0.00042: never "0.000"


def format_duration(seconds: float | None) -> tuple[str, float | None]:
    """A duration as people read it, and the seconds it shows (best values compare those):
    under a minute in seconds ("0.41 s", "42 s"), longer in minutes ("6.0 min", "14 min")."""
    if not _is_number(seconds):
        return "—", None
    if seconds < 9.95:
        text = f"{seconds:.2g}"
        return f"{text} s", float(text)
    if round(seconds) < 60:
        return f"{seconds:.0f} s", float(round(seconds))
    minutes = seconds / 60
    text = f"{minutes:.1f}" if minutes < 9.95 else f"{minutes:.0f}"
    return f"{text} min", float(text) * 60


def format_count(count: float | None) -> str:
    """Parameter counts: 1.61 B, 860.0 M, 4.1 k, 768."""
    if not _is_number(count):
        return "—"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= size:
            return f"{count / size:.{2 if unit == 'B' else 1}f} {unit}"
    return f"{count:.0f}"


def format_bytes(size: float | None) -> str:
    """Decimal units, as disks and the hub count: 3.22 GB, 12.4 MB, 512 kB, 312 B."""
    if not _is_number(size):
        return "—"
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(size) >= scale:
            return f"{size / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{size:.0f} B"


def rounded(value: float | None, decimals: int) -> float | None:
    return round(value, decimals) if _is_number(value) else None
