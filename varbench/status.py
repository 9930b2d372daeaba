"""`varbench status`: the state of every cell, per protocol, method arm and subject.

A cell whose status file says "running" but whose lock no live process holds was
interrupted (crash, kill, preemption): it shows as "interrupted" and resumes on the
next `varbench run`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.table import Table

from varbench.locks import is_locked
from varbench.progress import console
from varbench.store import RunStore, find_runs


def cell_state(cell_dir: Path) -> tuple[str, str]:
    """(state, error) of a cell folder, telling live runs from interrupted ones."""
    from varbench.fileio import read_json

    status = read_json(cell_dir / "status.json", default={"state": "pending"})
    state = status["state"]
    if state == "running" and not is_locked(cell_dir):
        state = "interrupted"
    return state, status.get("error") or ""


def collect(results: Path, protocol: str | None) -> list[tuple[str, str, str, str, str]]:
    """Rows (protocol, arm, subject, state, error); with a protocol name, planned cells too."""
    rows = []
    if protocol:
        from varbench.plan import dataset_of, plan_cells
        from varbench.protocol import load_protocol

        loaded = load_protocol(protocol)
        for cell in plan_cells(loaded, dataset_of(loaded)):
            cell_dir = RunStore(results, loaded.name, cell.arm.run_id).cell(cell.subject.name).dir
            rows.append((loaded.name, f"{cell.arm.name} ({cell.arm.run_id})", cell.subject.name, *cell_state(cell_dir)))
        return rows
    for run in find_runs(results):
        arm = run.identity().get("arm", "?")
        for cell_dir in sorted((run.dir / "cells").glob("*")):
            if cell_dir.is_dir():
                rows.append((run.protocol, f"{arm} ({run.run_id})", cell_dir.name, *cell_state(cell_dir)))
    return rows


def print_status(results: Path, protocol: str | None = None) -> int:
    """Print the table; exit code 0 when every listed cell is done, else 1."""
    rows = collect(Path(results), protocol)
    colours = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow", "pending": "white"}
    table = Table(title=f"cells under {results}")
    for column in ("protocol", "arm (run id)", "subject", "state", "error"):
        table.add_column(column, overflow="fold")
    for proto, arm, subject, state, error in rows:
        table.add_row(proto, arm, subject, f"[{colours[state]}]{state}[/]", error[:120])
    console.print(table)
    counts = Counter(row[3] for row in rows)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no cells yet")
    return 0 if rows and counts.get("done", 0) == len(rows) else 1
