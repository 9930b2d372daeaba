"""Swaps: what a speed layer changed, and how to put it back.

Both speed layers (varbench.models.infinity.fast and baselines.fast) switch themselves on
by swapping things in place: the class of a module (same parameters, same state-dict
keys), a global function of a plain module, a backend setting. `Swaps` records each swap
as a readable line (`changes`) with the function that undoes it, so `undo()` (or leaving
a `with` block) restores exactly what was there, last swap first.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any


class Swaps:
    """The swaps of one switch-on call (`changes`, readable lines) and their undoing."""

    def __init__(self) -> None:
        self.changes: list[str] = []
        self._undo: list[Callable[[], None]] = []

    def undo(self) -> None:
        """Put back what this call changed, last change first."""
        while self._undo:
            self._undo.pop()()
        self.changes = []

    def __enter__(self) -> Swaps:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.changes})"

    def record(self, change: str, undo: Callable[[], None]) -> None:
        self.changes.append(change)
        self._undo.append(undo)

    def set_class(self, where: str, modules: Iterable[Any], cls: type) -> int:
        """Make every module an instance of `cls` (in place); returns how many changed."""
        counts: dict[str, int] = {}
        for module in modules:
            previous = type(module)
            if previous is cls:
                continue
            module.__class__ = cls
            self._undo.append(lambda module=module, previous=previous: setattr(module, "__class__", previous))
            counts[previous.__name__] = counts.get(previous.__name__, 0) + 1
        self.changes += [f"{where}: {count} {name} -> {cls.__name__}" for name, count in counts.items()]
        return sum(counts.values())

    def install(self, owner: ModuleType, name: str, function: Callable, label: str | None = None) -> None:
        """Replace the global `name` of the plain module `owner` (process-wide until undone)."""
        previous = getattr(owner, name)
        if previous is function:
            return
        setattr(owner, name, function)
        self.record(f"{owner.__name__}.{name} -> {label or f'{function.__module__}.{function.__name__}'}",
                    lambda: setattr(owner, name, previous))
