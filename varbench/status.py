"""`varbench status`: the state of every cell, per protocol, method arm and subject.

A cell whose status file says "running" but whose lock no live process holds was
interrupted (crash, kill, preemption): it shows as "interrupted" and resumes on the
next `varbench run`. A done cell whose files no longer match their seal (sizes; hashes
with `--verify`) shows as "damaged" with what is wrong, and is repaired by `varbench run`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from varbench.errors import UserError
from varbench.progress import console
from varbench.store import CellStore, RunStore, find_runs


def cell_state(cell: CellStore, score_id: str | None, verify: bool = False) -> tuple[str, str]:
    """(state, error) of a cell in one metric mode: live or interrupted, done or damaged
    (see CellStore.state)."""
    found = cell.state(score_id, hashes=verify)
    return found.state, found.error


def collect(results: Path, protocol: str | None, verify: bool = False) -> list[tuple[str, str, str, str, str]]:
    """Rows (protocol, arm, subject, state, error); with a protocol name, planned cells too."""
    rows = []
    if protocol:
        from varbench.plan import dataset_of, plan_cells
        from varbench.protocol import load_protocol

        loaded = load_protocol(protocol)
        for cell in plan_cells(loaded, dataset_of(loaded, fetch_missing=False)):
            store = RunStore(results, loaded.name, cell.arm.run_id).cell(cell.subject.name)
            rows.append((loaded.name, f"{cell.arm.name} ({cell.arm.run_id}, {cell.arm.score_id})",
                         cell.subject.name, *cell_state(store, cell.arm.score_id, verify)))
        return rows
    for run in find_runs(results):
        arm = run.identity().get("arm", "?")
        for score_id in run.scores() or [None]:
            for cell_dir in sorted((run.dir / "cells").glob("*")):
                if cell_dir.is_dir():
                    rows.append((run.protocol, f"{arm} ({run.run_id}, {score_id or 'not scored'})", cell_dir.name,
                                 *cell_state(run.cell(cell_dir.name), score_id, verify)))
    return rows


def print_status(results: Path, protocol: str | None = None, verify: bool = False) -> int:
    """Print the table; exit code 0 when every listed cell is done, else 1."""
    if Path(results).exists() and not Path(results).is_dir():
        raise UserError("the results root is not a folder", str(Path(results).resolve()),
                        "Pass the folder 'varbench run' wrote to with --results.")
    rows = collect(Path(results), protocol, verify)
    colours = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow", "pending": "white",
               "damaged": "magenta"}
    table = Table(title=f"cells under {results}")
    for column in ("protocol", "arm (run id, score id)", "subject", "state", "error"):
        table.add_column(column, overflow="fold")
    for proto, arm, subject, state, error in rows:
        table.add_row(escape(proto), escape(arm), escape(subject), f"[{colours[state]}]{state}[/]", escape(error[:120]))
    console.print(table)
    counts = Counter(row[3] for row in rows)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no cells yet")
    return 0 if rows and counts.get("done", 0) == len(rows) else 1
