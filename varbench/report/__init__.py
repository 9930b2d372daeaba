"""Report rendering: statistics tables, plots, sample grids and a self-contained HTML page.

`render_report(results, out, spec)` is the entry point of `varbench report`. The
rendering modules (pandas, matplotlib, PIL) load only when it is called, so importing
this package costs nothing at CLI start-up.
"""
from __future__ import annotations

from pathlib import Path


def render_report(results: Path, out: Path | None = None, spec: Path | str | None = None) -> Path:
    """Render the report of a results root; returns the path of `<out>/index.html`.

    `spec`: a YAML path or a spec name under the checkout's `report/` (default "paper");
    `out`: the output folder (default: the checkout's `report/out`).
    """
    from varbench.report.render import render_report as render

    return render(results, out, spec)
