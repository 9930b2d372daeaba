"""Render a `Table` as Markdown, LaTeX (booktabs), CSV or an HTML fragment.

Best values are bold in every format; the secondary text of an entry (the confidence
interval) follows the main text, smaller where the format allows. Published rows (quoted
from papers) come last, italic and after a rule where the format has one; the CSV holds
measured rows only. LaTeX escapes every special character of user-provided text (arm
names such as `custom_diffusion`).
"""
from __future__ import annotations

import csv
import html
import io
import math

from varbench.report.table_model import Column, Entry, Table

ARROWS = {"higher": "↑", "lower": "↓", "": ""}

# --- Markdown ---------------------------------------------------------------------------


def to_markdown(table: Table) -> str:
    headers = [_markdown_header(c) for c in table.columns]
    aligns = [":---" if c.align == "left" else "---:" for c in table.columns]
    lines = [f"### {table.title}", "", _markdown_row(headers), _markdown_row(aligns)]
    lines += [_markdown_row([_markdown_entry(e) for e in row]) for row in table.rows]
    lines += [_markdown_row([_markdown_published(e) for e in row]) for row in table.published]
    lines += ["", table.caption]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def header_text(column: Column) -> str:
    """The one-line header (group name first, arrow for the better direction)."""
    text = f"{column.group} {column.header}" if column.group else column.header
    arrow = ARROWS[column.better]
    return f"{text} {arrow}" if arrow else text


def _markdown_header(column: Column) -> str:
    return _markdown_escape(header_text(column))


def _markdown_entry(entry: Entry) -> str:
    text = _markdown_escape(entry.text + entry.mark)
    if entry.best:
        text = f"**{text}**"
    if entry.detail:
        text += " " + _markdown_escape(entry.detail)
    return text


def _markdown_published(entry: Entry) -> str:
    text = _markdown_escape(entry.text)
    return f"*{text}*" if text.strip() not in ("", "—") else text


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


# --- LaTeX ------------------------------------------------------------------------------

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
# Characters our own captions and labels use that plain LaTeX (without extra packages) lacks.
LATEX_SYMBOLS = {"†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "λ": r"$\lambda$",
                 "Δ": r"$\Delta$", "±": r"$\pm$", "·": r"$\cdot$", "—": "---", "–": "--", "↑": r"$\uparrow$",
                 "↓": r"$\downarrow$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, LATEX_SYMBOLS.get(char, char)) for char in str(text))


def to_latex(table: Table) -> str:
    keep = [i for i, c in enumerate(table.columns) if c.in_latex]
    columns = [table.columns[i] for i in keep]
    spec = "".join("l" if c.align == "left" else "r" for c in columns)
    lines = [r"\begin{table}[t]", r"  \centering", f"  \\caption{{{latex_escape(table.caption)}}}",
             f"  \\label{{tab:{latex_escape(table.name)}}}", f"  \\begin{{tabular}}{{{spec}}}", r"    \toprule"]
    lines += _latex_group_header(columns)
    lines.append("    " + " & ".join(_latex_header(c) for c in columns) + r" \\")
    lines.append(r"    \midrule")
    for row in table.rows:
        lines.append("    " + " & ".join(_latex_entry(row[i]) for i in keep) + r" \\")
    if table.published:
        lines.append(r"    \midrule")
    for row in table.published:
        lines.append("    " + " & ".join(_latex_published(row[i]) for i in keep) + r" \\")
    lines += [r"    \bottomrule", r"  \end{tabular}"]
    if table.notes:
        notes = r" \\ ".join(latex_escape(note) for note in table.notes)
        lines.append(f"  \\par\\smallskip{{\\footnotesize {notes}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _latex_group_header(columns: list[Column]) -> list[str]:
    """A first header row with \\multicolumn spans and \\cmidrule(lr) under each group."""
    if not any(c.group for c in columns):
        return []
    cells, rules, index = [], [], 0
    while index < len(columns):
        group = columns[index].group
        span = 1
        while index + span < len(columns) and group and columns[index + span].group == group:
            span += 1
        if group:
            cells.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(group)}}}")
            rules.append(f"\\cmidrule(lr){{{index + 1}-{index + span}}}")
        else:
            cells.append("")
        index += span
    return ["    " + " & ".join(cells) + r" \\ " + " ".join(rules)]


def _latex_header(column: Column) -> str:
    arrow = ARROWS[column.better]
    return latex_escape(f"{column.header} {arrow}" if arrow else column.header)


def _latex_published(entry: Entry) -> str:
    text = latex_escape(entry.text)
    return f"\\textit{{{text}}}" if entry.text.strip() not in ("", "—") else text


def _latex_entry(entry: Entry) -> str:
    text = latex_escape(entry.text + entry.mark)
    if entry.best:
        text = f"\\textbf{{{text}}}"
    if entry.detail:
        text += f" {{\\scriptsize {latex_escape(entry.detail)}}}"
    return text


# --- CSV ----------------------------------------------------------------------------------


def to_csv(table: Table) -> str:
    """The raw numbers (full precision, CI bounds in their own columns), one row per table row."""
    fields = list(dict.fromkeys(key for record in table.records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in table.records:
        writer.writerow({k: _csv_value(v) for k, v in record.items()})
    return buffer.getvalue()


def _csv_value(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return "" if value is None else value


# --- HTML ---------------------------------------------------------------------------------


def to_html(table: Table) -> str:
    """A <table> with its caption and notes (styles come from the page)."""
    escape = html.escape
    head = "".join(f'<th class="{c.align}">{escape(header_text(c))}</th>'
                   for c in table.columns)
    body = "".join("<tr>" + "".join(_html_entry(e, c) for e, c in zip(row, table.columns)) + "</tr>"
                   for row in table.rows)
    if table.published:  # its own <tbody>: the page draws a rule above it and sets it in italics
        body += '</tbody><tbody class="published">' + "".join(
            "<tr>" + "".join(_html_entry(e, c) for e, c in zip(row, table.columns)) + "</tr>"
            for row in table.published)
    notes = "".join(f"<li>{escape(n)}</li>" for n in table.notes)
    return (f'<figure class="table" id="{escape(table.name)}"><figcaption><strong>{escape(table.title)}</strong>. '
            f'{escape(table.caption)}</figcaption><div class="wide"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>" + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</figure>")


def _html_entry(entry: Entry, column: Column) -> str:
    text = html.escape(entry.text + entry.mark)
    if entry.best:
        text = f"<strong>{text}</strong>"
    if entry.detail:
        text += f' <span class="detail">{html.escape(entry.detail)}</span>'
    return f'<td class="{column.align}">{text}</td>'
