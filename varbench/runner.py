"""The runner: plan a protocol's cells, run them through a launcher, summarise.

One way down: cli -> runner -> launch -> worker -> (cell, store, metrics); planning
(varbench.plan) is shared by the runner and the launchers and imports neither.

    varbench run --protocol smoke      ->  run_protocol(...)  ->  exit code
    0: every selected cell is done; 1: some cells failed (each recorded with its error);
    2: a user error stopped the run before any cell (one line, no traceback).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from rich.markup import escape

from varbench.cell import Cell
from varbench.devices import resolve_device
from varbench.errors import UserError
from varbench.launch import describe_slurm, device_list, launch
from varbench.plan import RunOptions, cell_state, cell_store, pending_cells, prepare
from varbench.progress import console
from varbench.store import STORE_LAYOUT, find_runs


def check_results_root(root: Path, cells: list[Cell]) -> None:
    """Before any work: the results root is a folder (or can be one), and no cell folder
    is reached through a symbolic link (writes must stay inside the root)."""
    if root.exists() and not root.is_dir():
        raise UserError("the results root is not a folder", str(root.resolve()), "Pass a folder with --results.")
    check_can_write(root, "results root", "--results")
    for cell in cells:
        cell_store(root, cell).refuse_links(root)


def warn_old_layout(root: Path, protocol: str) -> None:
    """Results of an older layout are not found by today's run ids: say how to convert them."""
    old = [run for run in find_runs(root) if run.protocol == protocol and run.identity()
           and run.identity().get("layout") != STORE_LAYOUT]
    if old:
        console.print(f"[yellow]warning:[/] {len(old)} run(s) of {escape(protocol)} are in an older results layout "
                      f"and will not be reused; convert them first with 'varbench migrate --results "
                      f"{escape(str(root))}'.", soft_wrap=True, highlight=False)


def check_can_write(folder: Path, what: str, fix_with: str) -> None:
    """Fail before any work (and without writing) when `folder` cannot be made or written:
    its nearest existing ancestor must be a writable folder."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"the {what} lies under a file, not a folder", str(existing),
                        f"Choose another place ({fix_with}).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"the {what} is not writable", str(existing), f"Fix its permissions or use {fix_with}.")


def print_plan(root: Path, cells: list[Cell]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(cells)} cells")
    for column in ("arm", "subject", "run id", "images", "state"):
        table.add_column(column)
    for cell in cells:
        table.add_row(cell.arm.name, cell.subject.name, cell.arm.run_id,
                      str(len(cell.images)), cell_state(root, cell))
    console.print(table)


def print_projection(root: Path, cells: list[Cell], retry_failed: bool) -> None:
    """Projected GPU-hours of the work left, per arm, when a bench.json is available
    (varbench.bench.cost: measured per-step and per-image costs; model loading excluded)."""
    from varbench.bench.cost import load_bench, planned_hours

    bench = load_bench()
    todo = pending_cells(root, cells, retry_failed)
    if bench is None or not todo:
        return
    hours = planned_hours(todo, bench["rows"])
    if not any(hours.values()):
        return
    parts = [f"{arm} {sum(h.values()):.2f}" if h else f"{arm} not measured" for arm, h in hours.items()]
    total = sum(sum(h.values()) for h in hours.values() if h)
    console.print(f"projected GPU-hours of the pending cells on {bench.get('device', '?')} (varbench bench): "
                  + ", ".join(parts) + f"; total {total:.2f}", soft_wrap=True, highlight=False)


def print_plan_json(root: Path, cells: list[Cell]) -> None:
    """One JSON object per cell and line (for scripts): what it is, where, and its state."""
    for cell in cells:
        print(json.dumps({"protocol": cell.protocol.name, "arm": cell.arm.name, "method": cell.arm.method_name,
                          "subject": cell.subject.name, "run_id": cell.arm.run_id, "score_id": cell.arm.score_id,
                          "state": cell_state(root, cell), "images": len(cell.images),
                          "execution": cell.arm.execution}, sort_keys=True), flush=True)


def summarise(root: Path, cells: list[Cell]) -> int:
    """Print the final state counts and each distinct error once; return the exit code."""
    found = [cell_store(root, c).state(c.arm.score_id) for c in cells]
    states = Counter(f.state for f in found)
    console.print("cells: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    errors: Counter[tuple[str, str]] = Counter((f.state, f.error or "unknown error") for f in found
                                               if f.state in ("failed", "damaged"))
    for (state, message), count in errors.items():
        console.print(f"[red]{state}[/] ({count} cell{'s' * (count > 1)}): {escape(message)}",
                      soft_wrap=True, highlight=False)
    if any(state == "failed" for state, _ in errors):
        example = next(cell_store(root, c).dir / "error.txt" for c, f in zip(cells, found) if f.state == "failed")
        console.print(f"Details in each cell's error.txt (e.g. {escape(str(example.resolve()))}); "
                      "rerun with --retry-failed after fixing.", soft_wrap=True, highlight=False)
    return 0 if states.get("done", 0) == len(cells) else 1


def check_requirements(protocol_name: str, protocol: Any, cells: list[Cell], options: RunOptions) -> None:
    """The preflight before any work: a missing requirement stops the run before its first cell."""
    from varbench.preflight import missing, preflight, print_requirements

    arms = list({cell.arm.name: cell.arm for cell in cells}.values())
    rows = preflight(protocol, arms, cells, Path(options.results), options.data_root)
    lacking = missing(rows)
    if lacking:
        print_requirements(rows)
        raise UserError(f"{len(lacking)} requirement(s) missing: {', '.join(r.item for r in lacking)}",
                        "preflight", f"See the table above ('varbench check --protocol {protocol_name}' "
                        "prints it again), or skip the check with --no-check.")


def run_protocol(protocol_name: str, options: RunOptions) -> int:
    root = Path(options.results)
    check_results_root(root, [])  # before the dataset is opened (which may download it)
    protocol, cells = prepare(protocol_name, options)
    check_results_root(root, cells)
    warn_old_layout(root, protocol.name)
    if options.dry_run:
        if options.json:
            print_plan_json(root, cells)
        else:
            print_plan(root, cells)
            print_projection(root, cells, options.retry_failed)
        if options.launcher == "slurm":
            describe_slurm(protocol, pending_cells(root, cells, options.retry_failed), options)
        return 0
    if not pending_cells(root, cells, options.retry_failed, options.verify):
        return summarise(root, cells)  # nothing to do: no device, no model, no torch import
    from varbench.weights import cache_root

    check_can_write(cache_root(), "varbench cache", "VARBENCH_CACHE")
    if options.preflight:
        check_requirements(protocol_name, protocol, pending_cells(root, cells, options.retry_failed, options.verify),
                           options)
    if options.launcher == "local":
        for name in device_list(options.gpus or ["0"]):  # a bad --gpus value: one line before any work
            resolve_device(name, "--gpus")
    elif options.launcher == "inprocess":
        resolve_device(options.device)  # a bad --device: one line before any work
    launch(protocol, cells, options)
    return summarise(root, cells)
