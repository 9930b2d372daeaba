"""The self-contained HTML report: one `index.html` that opens offline in any browser.

Styles are inline, images are base64 `data:` URIs, nothing is fetched from anywhere.
The page embeds only bytes this render produced (its figures and sample grids, passed in
memory); it never reads a file by a name taken from the results.
Sections: the random-init banner (when any shown run used random-init backbones),
contents, one block per rendered unit (tables, figures, sample grids), skipped spec
entries, cells that are not done (with their errors), and provenance from the manifests
(each session's package list collapsed in a <details>).
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from varbench.report.figures import FigureFile
from varbench.report.formats import to_html
from varbench.report.grids import GridFile
from varbench.report.results import RANDOM_INIT_NOTE, RunResults
from varbench.report.table_model import Table
from varbench.toyworld.backbones import NOTE as TOYWORLD_NOTE

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #1a1a1a; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.banner { background: #fdecea; border: 2px solid #b22222; color: #7a1010; padding: .8em 1em;
          font-weight: bold; border-radius: 4px; }
.meta { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .85em; }
th, td { padding: .25em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
thead th { border-bottom: 2px solid #333; border-top: 2px solid #333; }
td.right, th.right { text-align: right; } td.left, th.left { text-align: left; }
td.right { white-space: nowrap; }
.detail { color: #666; font-size: .85em; white-space: nowrap; }
figure { margin: 1.2em 0; } figcaption { font-size: .9em; color: #333; margin-bottom: .4em; }
figure img { max-width: 100%; border: 1px solid #eee; }
ul.notes { font-size: .85em; color: #444; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; }
details { margin: .5em 0; } code { font-size: .9em; } .wide { overflow-x: auto; }
tbody.published td { font-style: italic; color: #555; }
tbody.published tr:first-child td { border-top: 2px solid #999; }
td details { margin: 0; } td summary { cursor: pointer; color: #333; white-space: nowrap; }
"""


@dataclass
class Unit:
    """What one section view contributed to the page."""

    anchor: str
    title: str
    description: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)
    grids: list[GridFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Page:
    title: str
    meta: dict[str, str]  # shown under the title: results root, spec, generated at
    units: list[Unit]
    skipped: list[str]
    problems: pd.DataFrame  # cells not done: protocol, run_id, arm, subject, state, error
    runs: list[RunResults]
    random_init: bool
    description: list[str] = field(default_factory=list)  # paragraphs under the title (the protocols shown)
    toyworld: bool = False  # any shown run scored with the toyworld's encoders


def render_page(page: Page) -> str:
    escape = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(page.title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{escape(page.title)}</h1>"]
    meta = "<br>".join(f"{escape(key)}: <code>{escape(value)}</code>" for key, value in page.meta.items())
    parts += [f"<p>{escape(paragraph)}</p>" for paragraph in page.description]
    parts.append(f'<p class="meta">{meta}</p>')
    if page.random_init:
        parts.append(f'<p class="banner" id="random-init">Warning, {escape(RANDOM_INIT_NOTE)}. Runs marked '
                     "random-init below used randomly initialised models or metric encoders: their numbers "
                     "show that the pipeline works, not how good the methods are.</p>")
    if page.toyworld:
        parts.append(f'<p class="banner" id="toyworld">Note, {escape(TOYWORLD_NOTE)} (varbench\'s procedural '
                     "world, with backbones varbench pretrained on it).</p>")
    parts.append(_contents(page))
    parts += [_unit(unit) for unit in page.units]
    if page.skipped:
        parts.append('<h2 id="skipped">Not in these results</h2><ul>'
                     + "".join(f"<li>{escape(n)}</li>" for n in page.skipped) + "</ul>")
    parts.append(_problems(page.problems))
    parts.append(_provenance(page.runs))
    parts.append("</body></html>")
    return "\n".join(parts)


def _contents(page: Page) -> str:
    items = [f'<li><a href="#{html.escape(u.anchor)}">{html.escape(u.title)}</a></li>' for u in page.units]
    items += ['<li><a href="#cells">Cells not done</a></li>', '<li><a href="#provenance">Provenance</a></li>']
    return "<h2>Contents</h2><ul>" + "".join(items) + "</ul>"


def _unit(unit: Unit) -> str:
    escape = html.escape
    parts = [f'<h2 id="{escape(unit.anchor)}">{escape(unit.title)}</h2>']
    if unit.description:
        parts.append(f"<p>{escape(unit.description)}</p>")
    parts += [f'<p class="note">{escape(note)}</p>' for note in unit.notes]
    parts += [to_html(table) for table in unit.tables]
    for figure in unit.figures:
        parts.append(f'<figure id="{escape(figure.name)}"><figcaption><strong>{escape(figure.title)}</strong>. '
                     f"{escape(figure.caption)} Files: <code>figures/{escape(figure.name)}.png</code>, "
                     f"<code>.pdf</code>.</figcaption>{_image(figure.png, figure.title)}</figure>")
    for grid in unit.grids:
        parts.append(f'<figure id="{escape(grid.name)}"><figcaption><strong>{escape(grid.title)}</strong>. '
                     f"{escape(grid.caption)}</figcaption>{_image(grid.png, grid.title)}</figure>")
    return "\n".join(parts)


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _problems(problems: pd.DataFrame) -> str:
    head = '<h2 id="cells">Cells not done</h2>'
    if problems.empty:
        return head + "<p>Every cell of every shown run is done.</p>"
    columns = ["protocol", "arm", "run_id", "subject", "state", "error"]
    return head + f"<p>{len(problems)} cell(s) are failed, running or pending; their subjects are left out " \
                  "of the means of their row (marked † in the tables).</p>" + _plain_table(problems, columns)


def _provenance(runs: list[RunResults]) -> str:
    rows = []
    for run in runs:
        identity = run.identity
        base = {"protocol": run.protocol, "run_id": run.run_id, "arm": run.arm,
                "method": f"{run.method} {identity.get('method_version', '')}".strip(),
                "metrics": f"{', '.join(run.modes)}, {', '.join(run.backbones())} backbones",
                "random-init": "yes" if run.random_init else "no"}
        for session in run.sessions or [{}]:
            rows.append({**base, **_session_fields(session)})
    columns = ["protocol", "run_id", "arm", "method", "metrics", "random-init", "session", "started", "finished",
               "git", "varbench", "python", "device", "dtype", "host", "launcher", "packages"]
    return ('<h2 id="provenance">Provenance</h2><p>One row per session that worked on a run (from each '
            "run's <code>manifest.json</code>); the run id hashes everything that determines its results "
            "(<code>run.json</code>).</p>"
            + _plain_table(pd.DataFrame(rows, columns=columns), columns, markup={"packages": _packages}))


def _packages(packages: Any) -> str:
    """A session's package versions, collapsed: dozens of lines would bury the table."""
    if not isinstance(packages, dict) or not packages:
        return ""
    listed = "<br>".join(f"{html.escape(str(name))} {html.escape(str(version))}"
                         for name, version in sorted(packages.items(), key=lambda item: str(item[0])))
    count = f"{len(packages)} package" + ("s" if len(packages) > 1 else "")
    return f"<details><summary>{count}</summary>{listed}</details>"


def _session_fields(session: dict[str, Any]) -> dict[str, str]:
    sha = str(session.get("git_sha") or "unknown")[:12]
    packages = session.get("packages") or {}
    return {"session": session.get("session", "none recorded"), "started": session.get("started"),
            "finished": session.get("finished"),
            "git": sha + (" (dirty)" if session.get("git_dirty") else ""),
            "varbench": session.get("varbench_version"), "python": session.get("python"),
            "device": session.get("device"), "dtype": session.get("dtype"), "host": session.get("host"),
            "launcher": session.get("launcher"), "packages": packages}


def _plain_table(frame: pd.DataFrame, columns: list[str], markup: dict[str, Any] | None = None) -> str:
    """A plain HTML table; `markup` maps a column to a function that renders its cells
    (escaping what it shows itself), every other cell is escaped text."""
    escape = html.escape
    markup = markup or {}

    def cell(row: dict[str, Any], column: str) -> str:
        return markup[column](row.get(column)) if column in markup else escape(_text(row.get(column)))

    head = "".join(f'<th class="left">{escape(c)}</th>' for c in columns)
    body = "".join("<tr>" + "".join(f'<td class="left">{cell(row, c)}</td>' for c in columns) + "</tr>"
                   for row in frame.to_dict("records"))
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)
