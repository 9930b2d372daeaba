"""User-facing errors.

Every mistake a user can make (a bad protocol, an unknown method, a missing file or
weights, a corrupt image) is raised as a `UserError`. The CLI prints it as one line,
"what (where). fix", and exits non-zero without a traceback. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable


class UserError(Exception):
    """An error the user can fix: says what went wrong, where, and how to fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def __reduce__(self):
        # keep the three parts when the error crosses a process boundary (decoding workers)
        return (type(self), (self.what, self.where, self.fix))

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f". {self.fix}"
        return " ".join(text.split())  # always one line, whatever the parts contained


class CellError(Exception):
    """A failure inside one cell (exception, out of memory, NaN loss).

    Recorded in the cell's status with its message; the run goes on with other cells.
    """


class NonFiniteLoss(CellError):
    """Training produced a NaN or infinite loss."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix for typos, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def warn_fallback(what: str, err: Exception, instead: str) -> None:
    """One warning line when a speed option (a compiler, a CUDA graph) fails and the run
    goes on without it: "<what> failed (<error>: <its first line>); <instead>"."""
    first_line = (str(err).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"{what} failed ({type(err).__name__}: {first_line}); {instead}", RuntimeWarning, stacklevel=3)
