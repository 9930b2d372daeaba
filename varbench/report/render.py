"""`varbench report`: turn a results root into tables, figures, sample grids and index.html.

    <out>/index.html                 the self-contained report
    <out>/tables/<unit>-<kind>.md|.tex|.csv
    <out>/tables/<unit>-subjects.csv per-subject means and cell states
    <out>/tables/<unit>-summary.csv  macro means and CIs per run, metric and group
    <out>/figures/<unit>-<kind>.png|.pdf
    <out>/grids/<unit>-<subject>.png

A unit is one spec section applied to one protocol in one metric mode. Protocols with
results that no section names get a default section, so nothing under the results root
is left out. Every file is written atomically; files that an earlier render left in
those three folders and this render did not produce are removed, so the folder always
describes one render.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from varbench import __version__
from varbench.errors import UserError
from varbench.fileio import write_bytes, write_text
from varbench.report.figures import build_figures
from varbench.report.formats import to_csv, to_latex, to_markdown
from varbench.report.grids import build_grids
from varbench.report.html import Page, Unit, render_page
from varbench.report.results import ProtocolResults, load_results
from varbench.report.section import SectionView, build_views
from varbench.report.spec import PACKAGE_DIR, ReportSpec, SectionSpec, find_spec, load_spec
from varbench.report.speed import speed_unit
from varbench.report.table import Table
from varbench.report.tables import build_tables, subject_records

OUTPUT_FOLDERS = {"tables": (".md", ".tex", ".csv"), "figures": (".png", ".pdf"), "grids": (".png",)}


def default_output_dir() -> Path:
    """`report/out` of the checkout when there is one, else under the current folder."""
    checkout_report = PACKAGE_DIR.parent / "report"
    return checkout_report / "out" if checkout_report.is_dir() else Path("report") / "out"


def render_report(results: Path, out: Path | None = None, spec: Path | str | None = None) -> Path:
    """Render the report of results root `results` into `out`; returns the index.html path.

    `spec` is a YAML path or a spec name under `report/` (default: report/paper.yaml).
    """
    spec_path = find_spec(spec)
    report_spec = load_spec(spec_path)
    loaded = load_results(Path(results))
    if not loaded:
        raise UserError("no runs found under the results folder", str(results),
                        "Run 'varbench run --protocol smoke' (or another protocol) first, or pass --results.")
    add_default_sections(report_spec, loaded)
    views, skipped = build_views(report_spec, loaded)
    out = Path(out) if out is not None else default_output_dir()
    written: set[Path] = set()
    units = []
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("rendering report", total=len(views) + 1)
        for view in views:
            progress.update(task, description=f"rendering {view.stem}")
            units.append(_render_unit(view, out, written))
            progress.advance(task)
        speed = speed_unit(Path(results))
        if speed is not None:
            for table in speed.tables:
                _write_table(out, table, written)
            units.append(speed)
        page = Page(title=report_spec.title, meta=_meta(Path(results), spec_path), units=units, skipped=skipped,
                    problems=_problems(views), runs=_shown_runs(views),
                    random_init=any(view.random_init for view in views))
        index = out / "index.html"
        write_text(index, render_page(page))
        progress.advance(task)
    _remove_stale(out, written)
    return index


def add_default_sections(spec: ReportSpec, results: dict[str, ProtocolResults]) -> None:
    """Give every protocol with results that no section names a plain comparison section."""
    named = {protocol for section in spec.sections for protocol in section.protocols}
    for name in results:
        if name not in named:
            spec.sections.append(SectionSpec(name=f"auto-{name}", protocols=[name], title=f"Protocol {name}",
                                             description="Not named in the report spec: default tables and plots.",
                                             tables=["comparison", "split"], figures=["cost", "spread"]))


def _render_unit(view: SectionView, out: Path, written: set[Path]) -> Unit:
    tables = build_tables(view)
    for table in tables:
        _write_table(out, table, written)
    _write(out / "tables" / f"{view.stem}-subjects.csv", _csv(subject_records(view)), written)
    _write(out / "tables" / f"{view.stem}-summary.csv", _summary_csv(view), written)
    figures, figure_notes = build_figures(view)
    for figure in figures:
        _write(out / "figures" / f"{figure.name}.png", figure.png, written)
        _write(out / "figures" / f"{figure.name}.pdf", figure.pdf, written)
    grids, grid_notes = build_grids(view)
    for grid in grids:
        _write(out / "grids" / f"{grid.name}.png", grid.png, written)
    notes = ([] if view.spec.tables else list(view.notes)) + figure_notes + grid_notes
    return Unit(anchor=view.stem, title=view.title, description=view.spec.description, tables=tables,
                figures=figures, grids=grids, notes=notes)


def _write_table(out: Path, table: Table, written: set[Path]) -> None:
    folder = out / "tables"
    _write(folder / f"{table.name}.md", to_markdown(table), written)
    _write(folder / f"{table.name}.tex", to_latex(table), written)
    _write(folder / f"{table.name}.csv", to_csv(table), written)


def _write(path: Path, payload: str | bytes, written: set[Path]) -> None:
    if isinstance(payload, str):
        write_text(path, payload)
    else:
        write_bytes(path, payload)
    written.add(path)


def _csv(records: list[dict]) -> str:
    return pd.DataFrame(records).to_csv(index=False, lineterminator="\n")


def _summary_csv(view: SectionView) -> str:
    runs = {row.run_id: row for row in view.rows if row.run is not None}
    summary = view.summary.assign(label=view.summary["run_id"].map(lambda r: runs[r].label),
                                  random_init=view.summary["run_id"].map(lambda r: runs[r].run.random_init))
    return summary.to_csv(index=False, lineterminator="\n")


def _problems(views: list[SectionView]) -> pd.DataFrame:
    frames = []
    for view in views:
        for run in view.runs:
            cells = view.cells(run.run_id)
            frames.append(cells[cells["state"] != "done"].assign(protocol=view.protocol.name, arm=run.arm))
    frames = [f for f in frames if not f.empty]
    columns = ["protocol", "arm", "run_id", "subject", "state", "error"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "subject"])[columns]


def _shown_runs(views: list[SectionView]) -> list:
    unique = {}
    for view in views:
        for run in view.runs:
            unique.setdefault(run.store.dir, run)
    return list(unique.values())


def _meta(results: Path, spec_path: Path) -> dict[str, str]:
    return {"results": str(results.resolve()), "spec": str(spec_path),
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "varbench": __version__}


def _remove_stale(out: Path, written: set[Path]) -> None:
    for folder, suffixes in OUTPUT_FOLDERS.items():
        for path in (out / folder).glob("*"):
            if path.is_file() and path.suffix in suffixes and path not in written:
                path.unlink()
