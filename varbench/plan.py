"""Planning: which cells a protocol has (varbench.cell), and which of them have work left.

    prepare(protocol, options) -> (protocol, cells)      the run's cells, arms x subjects
    pending_cells(root, cells, ...)                      those not done (or damaged)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from varbench.cell import Cell
from varbench.data import Dataset, open_dataset
from varbench.data.subject import Subject
from varbench.errors import UserError, did_you_mean
from varbench.protocol import Arm, Protocol, load_protocol
from varbench.store import CellStore, RunStore, check_name

def dataset_of(protocol: Protocol, root: str | None = None, fetch_missing: bool = True) -> Dataset:
    return open_dataset(protocol.spec.data.dataset, root or protocol.spec.data.root, fetch_missing)


def templates_for(protocol: Protocol, dataset: Dataset, subject: Subject) -> tuple[str, ...]:
    prompts = protocol.spec.prompts
    if prompts.source == "custom":
        templates = tuple(prompts.live if subject.live else prompts.object)
        if not templates:
            kind = "live" if subject.live else "object"
            raise UserError(f"protocol has no custom {kind} prompts but subject {subject.name} is {kind}",
                            str(protocol.path), f"Add a 'prompts.{kind}:' list.")
    else:
        templates = dataset.prompts_for(subject)
    return templates[: prompts.limit] if prompts.limit else templates


def plan_cells(protocol: Protocol, dataset: Dataset, arms: list[str] | None = None,
               subjects: list[str] | None = None) -> list[Cell]:
    """The protocol's cells, optionally narrowed to some arms (or methods) and subjects."""
    chosen_arms = select_arms(protocol, arms)
    names = protocol.spec.data.subjects
    chosen = [s.name for s in dataset.subjects] if names == "all" else list(names)
    if subjects:
        for name in subjects:
            if name not in chosen:
                raise UserError(f"subject {name!r} is not in protocol {protocol.name}", str(protocol.path),
                                "Pick from: " + ", ".join(chosen) + "." + did_you_mean(name, chosen))
        chosen = [n for n in chosen if n in subjects]
    cells = []
    for arm in chosen_arms:
        for name in chosen:
            subject = dataset.subject(check_name(name, "subject", str(protocol.path)))
            cells.append(Cell(protocol, arm, subject, templates_for(protocol, dataset, subject)))
    return cells


def select_arms(protocol: Protocol, wanted: list[str] | None) -> list[Arm]:
    if not wanted:
        return list(protocol.arms)
    chosen = []
    for name in wanted:
        matches = [a for a in protocol.arms if name in (a.name, a.method_name)]
        if not matches:
            protocol.arm(name)  # raises the "no arm named ..." error with suggestions
        chosen += [a for a in matches if a not in chosen]
    return chosen


@dataclass
class RunOptions:
    results: Path = Path("results")
    device: str = "auto"
    methods: list[str] | None = None  # arm names or method names
    subjects: list[str] | None = None
    data_root: str | None = None
    retry_failed: bool = False
    verify: bool = False  # compare done cells' files with their sealed hashes, not only sizes
    dry_run: bool = False
    json: bool = False  # --dry-run: one JSON object per cell instead of the table
    overrides: list[str] = field(default_factory=list)  # --set execution.KEY=VALUE (varbench.execution)
    random_weights: bool = False  # --backbones random: the protocol's full-size rehearsal
    preflight: bool = True  # check weights, data, disk and memory before the first cell (varbench.preflight)
    launcher: str = "inprocess"  # "inprocess" | "local" | "slurm"
    gpus: list[str] = field(default_factory=list)  # for the local launcher
    slurm: dict[str, Any] = field(default_factory=dict)  # CLI overrides of the protocol's slurm section


def prepare(protocol_name: str, options: RunOptions) -> tuple[Protocol, list[Cell]]:
    protocol = load_protocol(protocol_name, options.overrides, options.random_weights)
    if options.data_root and protocol.spec.data.dataset == "folder":
        protocol.spec.data.root = options.data_root  # the run id hashes the folder actually used
    dataset = dataset_of(protocol, options.data_root, fetch_missing=not options.dry_run)  # a dry run downloads nothing
    cells = plan_cells(protocol, dataset, options.methods, options.subjects)
    return protocol, cells


def cell_store(root: Path, cell: Cell) -> CellStore:
    return RunStore(root, cell.protocol.name, cell.arm.run_id).cell(cell.subject.name)


def cell_state(root: Path, cell: Cell, verify: bool = False) -> str:
    """The cell's state in the protocol's metric mode (see CellStore.state)."""
    return cell_store(root, cell).state(cell.arm.score_id, hashes=verify).state


def pending_cells(root: Path, cells: list[Cell], retry_failed: bool, verify: bool = False) -> list[Cell]:
    """Cells with work left: never run, interrupted, damaged (and failed, to retry)."""
    todo_states = {"pending", "running", "interrupted", "damaged"} | ({"failed"} if retry_failed else set())
    return [c for c in cells if cell_state(root, c, verify) in todo_states]
