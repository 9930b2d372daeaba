"""`varbench report`: turn a results root into tables, figures, sample grids and index.html.

    <out>/index.html                 the self-contained report
    <out>/tables/<unit>-<kind>.md|.tex|.csv
    <out>/tables/<unit>-subjects.csv per-subject means and cell states
    <out>/tables/<unit>-summary.csv  macro means and CIs per run, metric and group
    <out>/figures/<unit>-<kind>.png|.pdf
    <out>/grids/<unit>-<subject>.png
    <out>/.varbench-report.json      what this render wrote (path -> sha256)

A unit is one spec section applied to one protocol in one metric mode. Protocols with
results that no section names get a default section, so nothing under the results root
is left out. Every file is written atomically. varbench deletes only what it wrote: a
file an earlier render listed in `.varbench-report.json` and this render did not
produce is removed, unless the user changed it since (then it is kept, with a warning);
anything else in `out` (a user's own figure, notes) is never touched. An existing
non-empty `out` without that index is refused unless `force`. A symlink standing at a
file's place in `out` is replaced, never written through, and a folder in `out` that
leads outside it is refused (varbench.report.paths).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from varbench import __version__
from varbench.errors import UserError
from varbench.report.figures import build_figures
from varbench.report.formats import to_csv, to_latex, to_markdown
from varbench.report.grids import build_grids
from varbench.report.html import Page, Unit, render_page
from varbench.report.paths import PAGE_NAME, OutputFolder
from varbench.report.results import ProtocolResults, load_results
from varbench.report.section import SectionView, build_views
from varbench.report.spec import PACKAGE_DIR, GridSpec, ReportSpec, SectionSpec, find_spec, load_spec
from varbench.report.speed_section import speed_unit
from varbench.report.table_model import Table
from varbench.report.tables import build_tables, subject_records


def default_output_dir() -> Path:
    """`report/out` of the checkout when there is one, else under the current folder."""
    checkout_report = PACKAGE_DIR.parent / "report"
    return checkout_report / "out" if checkout_report.is_dir() else Path("report") / "out"


def render_report(results: Path, out: Path | None = None, spec: Path | str | None = None,
                  force: bool = False, data_root: str | None = None) -> Path:
    """Render the report of results root `results` into `out`; returns the index.html path.

    `spec` is a YAML path or a spec name under `report/` (default: report/paper.yaml).
    `force`: write into an existing non-empty `out` that no earlier render made (its
    files are left in place; only ones this render writes are replaced). `data_root`: the
    dataset folder the sample grids take reference photos from (default: the cache copy;
    a report never downloads).
    """
    spec_path = find_spec(spec)
    report_spec = load_spec(spec_path)
    loaded = load_results(Path(results))
    if not loaded:
        raise UserError("no runs found under the results folder", str(results),
                        "Run 'varbench run --protocol smoke' (or another protocol) first, or pass --results.")
    add_default_sections(report_spec, loaded)
    views, skipped = build_views(report_spec, loaded)
    # claim the folder before rendering: a refused --out costs nothing and writes nothing
    folder = OutputFolder(Path(out) if out is not None else default_output_dir(), force)
    units = []
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("rendering report", total=len(views) + 1)
        for view in views:
            progress.update(task, description=f"rendering {view.stem}")
            units.append(_render_unit(view, folder, data_root))
            progress.advance(task)
        speed = speed_unit(Path(results))
        if speed is not None:
            for table in speed.tables:
                _write_table(folder, table)
            units.append(speed)
        page = Page(title=page_title(report_spec, views), meta=_meta(Path(results), spec_path), units=units,
                    skipped=skipped, problems=_problems(views), runs=_shown_runs(views),
                    random_init=any(view.random_init for view in views), description=_protocol_lines(views),
                    toyworld=any(view.toyworld for view in views))
        index = folder.write(PAGE_NAME, render_page(page))
        progress.advance(task)
    folder.finish()
    return index


def add_default_sections(spec: ReportSpec, results: dict[str, ProtocolResults]) -> None:
    """Give every protocol with results that no section names a plain comparison section,
    described by the protocol's own description, with loss curves and sample grids (a
    report of any protocol shows what its methods drew)."""
    named = {protocol for section in spec.sections for protocol in section.protocols}
    for name, protocol in results.items():
        if name not in named:
            note = "(Not named in the report spec: default tables and plots.)"
            description = f"{protocol.description} {note}".strip()
            spec.sections.append(SectionSpec(name=f"auto-{name}", protocols=[name], title=f"Protocol {name}",
                                             description=description,
                                             tables=["comparison", "split"], figures=["cost", "spread", "loss"],
                                             grids=GridSpec()))


def page_title(spec: ReportSpec, views: list[SectionView]) -> str:
    """The spec's title when its first section (the headline it was written for) has
    results; otherwise the page is named after the protocols it shows, so the report of a
    smoke run is never titled as the paper's."""
    if any(view.spec is spec.sections[0] for view in views):
        return spec.title
    protocols = list(dict.fromkeys(view.protocol.name for view in views))
    if not protocols:
        return spec.title
    return f"varbench report: protocol{'s' if len(protocols) > 1 else ''} {', '.join(protocols)}"


def _protocol_lines(views: list[SectionView]) -> list[str]:
    """One line per protocol shown: its name, version and own description."""
    lines = []
    for protocol in {view.protocol.name: view.protocol for view in views}.values():
        # (images scored with `varbench score` come from no protocol file: no version)
        versions = sorted({str(run.identity["protocol_version"]) for run in protocol.runs
                           if run.identity.get("protocol_version") is not None})
        text = f"Protocol {protocol.name}" + (f" (version {', '.join(versions)})" if versions else "")
        lines.append(f"{text}: {protocol.description}" if protocol.description else f"{text}.")
    return lines


def _render_unit(view: SectionView, folder: OutputFolder, data_root: str | None = None) -> Unit:
    tables = build_tables(view)
    for table in tables:
        _write_table(folder, table)
    folder.write(f"tables/{view.stem}-subjects.csv", _csv(subject_records(view)))
    folder.write(f"tables/{view.stem}-summary.csv", _summary_csv(view))
    figures, figure_notes = build_figures(view)
    for figure in figures:
        folder.write(f"figures/{figure.name}.png", figure.png)
        folder.write(f"figures/{figure.name}.pdf", figure.pdf)
    grids, grid_notes = build_grids(view, data_root)
    for grid in grids:
        folder.write(f"grids/{grid.name}.png", grid.png)
    notes = ([] if view.spec.tables else list(view.notes)) + figure_notes + grid_notes
    return Unit(anchor=view.stem, title=view.title, description=view.spec.description, tables=tables,
                figures=figures, grids=grids, notes=notes)


def _write_table(folder: OutputFolder, table: Table) -> None:
    folder.write(f"tables/{table.name}.md", to_markdown(table))
    folder.write(f"tables/{table.name}.tex", to_latex(table))
    folder.write(f"tables/{table.name}.csv", to_csv(table))


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
