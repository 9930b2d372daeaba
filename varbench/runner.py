"""The runner: plan a protocol's cells, run them through a launcher, summarise.

    varbench run --protocol smoke      ->  run_protocol(...)  ->  exit code
    0: every selected cell is done; 1: some cells failed (each recorded with its error);
    2: a user error stopped the run before any cell (one line, no traceback).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from varbench.plan import Cell, dataset_of, plan_cells
from varbench.progress import console
from varbench.protocol import Protocol, load_protocol
from varbench.store import RunStore


@dataclass
class RunOptions:
    results: Path = Path("results")
    device: str = "auto"
    methods: list[str] | None = None  # arm names or method names
    subjects: list[str] | None = None
    data_root: str | None = None
    retry_failed: bool = False
    dry_run: bool = False
    launcher: str = "inprocess"  # "inprocess" | "local" | "slurm"
    gpus: list[str] = field(default_factory=list)  # for the local launcher
    slurm: dict[str, Any] = field(default_factory=dict)  # CLI overrides of the protocol's slurm section


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare(protocol_name: str, options: RunOptions) -> tuple[Protocol, list[Cell]]:
    protocol = load_protocol(protocol_name)
    dataset = dataset_of(protocol, options.data_root)
    cells = plan_cells(protocol, dataset, options.methods, options.subjects)
    return protocol, cells


def cell_state(root: Path, cell: Cell) -> str:
    return RunStore(root, cell.protocol.name, cell.arm.run_id).cell(cell.subject.name).status()["state"]


def pending_cells(root: Path, cells: list[Cell], retry_failed: bool) -> list[Cell]:
    todo_states = {"pending", "running"} | ({"failed"} if retry_failed else set())
    return [c for c in cells if cell_state(root, c) in todo_states]


def print_plan(root: Path, cells: list[Cell]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(cells)} cells")
    for column in ("arm", "subject", "run id", "images", "state"):
        table.add_column(column)
    for cell in cells:
        table.add_row(cell.arm.name, cell.subject.name, cell.arm.run_id,
                      str(len(cell.images)), cell_state(root, cell))
    console.print(table)


def summarise(root: Path, cells: list[Cell]) -> int:
    """Print the final state counts and each distinct error once; return the exit code."""
    states = Counter(cell_state(root, c) for c in cells)
    console.print("cells: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    errors: Counter[str] = Counter()
    for cell in cells:
        status = RunStore(root, cell.protocol.name, cell.arm.run_id).cell(cell.subject.name).status()
        if status["state"] == "failed":
            errors[status.get("error") or "unknown error"] += 1
    for message, count in errors.items():
        console.print(f"[red]failed[/] ({count} cell{'s' * (count > 1)}): {escape(message)}",
                      soft_wrap=True, highlight=False)
    if errors:
        console.print("Details in cells/<subject>/error.txt; rerun with --retry-failed after fixing.")
    return 0 if states.get("done", 0) == len(cells) else 1


def run_protocol(protocol_name: str, options: RunOptions) -> int:
    protocol, cells = prepare(protocol_name, options)
    root = Path(options.results)
    if options.dry_run:
        print_plan(root, cells)
        if options.launcher == "slurm":
            from varbench.launch import describe_slurm

            describe_slurm(protocol, pending_cells(root, cells, options.retry_failed), options)
        return 0
    from varbench.launch import launch

    launch(protocol, cells, options)
    return summarise(root, cells)
