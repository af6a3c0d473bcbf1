"""The report as one self-contained HTML page: tables, notes, figures (inlined), failures and provenance.

Readable offline in a browser (no external asset, no script); the Markdown files stay for terminals and
pull requests. Every piece of data is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["TaskSection", "render_html"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table.cells { border-collapse: collapse; font-size: 12px; margin: .8rem 0; display: block; overflow-x: auto; }
table.cells th, table.cells td { border: 1px solid #d6d6d6; padding: 3px 7px; text-align: left; white-space: nowrap; }
table.cells th { background: #f3f4f6; position: sticky; top: 0; }
table.cells td.fails { color: #b42318; font-weight: 600; }
.note { background: #f8fafc; border-left: 3px solid #94a3b8; padding: .3rem .7rem; margin: .4rem 0; }
.pipeline { border-left-color: #d97706; background: #fffbeb; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #e5e7eb; }
figcaption { font-size: 12px; color: #555; }
ul.failures li { margin: .15rem 0; } code { font-size: 12px; }
nav a { margin-right: .8rem; }
"""


@dataclass
class TaskSection:
    task: str
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    pipeline_note: str = ""
    figures: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (cell id, status, reason)
    extra_tables: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (title, note, table)


def _table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = []
        for value in row:
            text = html.escape(str(value))
            css = ' class="fails"' if text.startswith("fails (") else ""
            cells.append(f"<td{css}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="cells"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _figure_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.stem)
    return (f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>")


def _anchor(title: str) -> str:
    """An id without spaces or markup characters (a task name stays as it is)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", title).strip("-")


def render_html(title: str, provenance: str, counts: str, sections: list[TaskSection]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(provenance)}</p>", f"<p>{html.escape(counts)}</p>",
             "<nav>" + "".join(f'<a href="#{_anchor(s.task)}">{html.escape(s.task)}</a>' for s in sections)
             + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{_anchor(s.task)}"><h2>{html.escape(s.task)}</h2>')
        if s.pipeline_note:
            parts.append(f'<p class="note pipeline">{html.escape(s.pipeline_note)}</p>')
        parts.append(_table_html(s.table))
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in s.notes]
        for title, note, table in s.extra_tables:
            parts += [f"<h3>{html.escape(title)}</h3>", f'<p class="note">{html.escape(note)}</p>', _table_html(table)]
        parts += [_figure_html(p) for p in s.figures]
        if s.failures:
            parts.append("<h3>Cells that did not produce numbers</h3><ul class=\"failures\">")
            parts += [f"<li><code>{html.escape(c)}</code>: <strong>{html.escape(st)}</strong> — {html.escape(r)}</li>"
                      for c, st, r in s.failures]
            parts.append("</ul>")
        parts.append("</section>")
    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
