"""Progress display: rich bars with ETA over cells, fit steps and generated images.

The runner talks to a `Reporter`; the in-process launcher uses `RichReporter`, worker
processes of the multi-GPU and Slurm launchers use `QuietReporter` (their parent shows
progress over cells instead).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True)


class Reporter(AbstractContextManager):
    """Receives progress events; the default does nothing."""

    def __exit__(self, *exc: Any) -> None:
        return None

    def start_cells(self, total: int) -> None: ...
    def cell_done(self, label: str, state: str) -> None: ...
    def start_phase(self, label: str, total: int) -> None: ...
    def advance_phase(self, done: int, total: int) -> None: ...
    def end_phase(self) -> None: ...
    def note(self, text: str) -> None: ...


class QuietReporter(Reporter):
    """For worker processes: one line per finished cell."""

    def cell_done(self, label: str, state: str) -> None:
        print(f"[{state}] {label}", flush=True)


class RichReporter(Reporter):
    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.cells: TaskID | None = None
        self.phase: TaskID | None = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def start_cells(self, total: int) -> None:
        self.cells = self.progress.add_task("cells", total=total)

    def cell_done(self, label: str, state: str) -> None:
        colour = {"done": "green", "failed": "red"}.get(state, "yellow")
        self.progress.console.print(f"[{colour}]{state:>7}[/] {label}")
        if self.cells is not None:
            self.progress.advance(self.cells)

    def start_phase(self, label: str, total: int) -> None:
        self.end_phase()
        self.phase = self.progress.add_task(f"  {label}", total=total)

    def advance_phase(self, done: int, total: int) -> None:
        if self.phase is not None:
            self.progress.update(self.phase, completed=done, total=total)

    def end_phase(self) -> None:
        if self.phase is not None:
            self.progress.remove_task(self.phase)
            self.phase = None

    def note(self, text: str) -> None:
        self.progress.console.print(text)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int, str], None]]:
    """A rich bar with ETA over a loop of `total` steps (training, drawing); yields
    `advance(steps, note)`, the note shown beside the bar (e.g. the current loss)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=total, note="")
        yield lambda steps, note="": progress.update(task, advance=steps, note=note)
