"""HTML building blocks of the self-contained report: escaping, tables, inline PNG figures, warning
boxes, sections and the page shell with its inline stylesheet and its one inline script (sortable
and filterable tables); nothing external (no fonts, scripts, styles or links to fetch).

Every piece of text from the run is escaped with :func:`html.escape`; only fragments built here are
wrapped in :class:`Raw` and inserted as they are.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mecharule.report.tables import fmt, numeric_columns

FILTER_ROWS = 15  # tables with more rows get a filter box


class Raw(str):
    """An HTML fragment built by this module: inserted without escaping."""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def cell(value: Any) -> str:
    return value if isinstance(value, Raw) else esc(fmt(value))


def _column_classes(frame: pd.DataFrame) -> list[str]:
    """ "num" for numeric columns (right-aligned), "text" for long prose (given a minimum width)."""
    classes = []
    for column, numeric in zip(frame.columns, numeric_columns(frame), strict=True):
        longest = max((len(str(v)) for v in frame[column].tolist()), default=0)
        classes.append("num" if numeric else "text" if longest > 60 else "")
    return classes


def table(frame: pd.DataFrame, *, max_rows: int | None = None, more_note: str = "", css: str = "") -> Raw:
    """An HTML table of a DataFrame (numbers right-aligned); at most ``max_rows`` rows, then a note.

    Marked ``data-sortable`` (the page's script sorts it by a click on a header) and, above
    ``FILTER_ROWS`` rows, ``data-filterable`` (the script puts a filter box above it)."""
    classes = _column_classes(frame)
    attrs = [f' class="{k}"' if k else "" for k in classes]
    head = "".join(f"<th{a}>{esc(c)}</th>" for c, a in zip(frame.columns, attrs, strict=True))
    shown = frame if max_rows is None else frame.head(max_rows)
    body = []
    for row in shown.itertuples(index=False):
        cells = "".join(f"<td{a}>{cell(v)}</td>" for v, a in zip(row, attrs, strict=True))
        body.append(f"<tr>{cells}</tr>")
    klass = f' class="{esc(css)}"' if css else ""
    marks = " data-sortable" + (" data-filterable" if len(shown) > FILTER_ROWS else "")
    out = f'<div class="table-wrap"><table{klass}{marks}><thead><tr>{head}</tr></thead>'
    out += f"<tbody>{''.join(body)}</tbody></table></div>"
    if max_rows is not None and len(frame) > max_rows:
        out += f'<p class="note">{len(frame) - max_rows} more rows not shown. {esc(more_note)}</p>'
    return Raw(out)


def key_values(pairs: Iterable[tuple[str, Any]]) -> Raw:
    """A two-column table of labelled values."""
    rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{cell(v)}</td></tr>' for k, v in pairs)
    return Raw(f'<div class="table-wrap"><table class="kv"><tbody>{rows}</tbody></table></div>')


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a Figure to PNG bytes with the Agg canvas (no pyplot, no metadata)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def image(png: bytes | Figure, caption: str, *, wide: bool = False) -> Raw:
    """An inline ``data:image/png;base64`` figure with an escaped caption."""
    data = figure_png(png) if isinstance(png, Figure) else png
    encoded = base64.b64encode(data).decode("ascii")
    klass = "fig wide" if wide else "fig"
    return Raw(
        f'<figure class="{klass}"><img src="data:image/png;base64,{encoded}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def figures(items: Sequence[str]) -> Raw:
    """Figures laid out side by side in a responsive grid (nothing when there are none)."""
    return Raw(f'<div class="figs">{"".join(items)}</div>' if items else "")


def paragraph(text: str, css: str = "") -> Raw:
    return Raw(f'<p class="{esc(css)}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>")


def heading(text: str, level: int = 3, anchor: str = "") -> Raw:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return Raw(f"<h{level}{ident}>{esc(text)}</h{level}>")


def code(text: str) -> Raw:
    return Raw(f"<code>{esc(text)}</code>")


def details(summary: str, body: Sequence[str]) -> Raw:
    return Raw(f"<details><summary>{esc(summary)}</summary>{''.join(body)}</details>")


def not_run(stage: str, command: str) -> Raw:
    """The placeholder of a section whose stage has not produced its files."""
    return Raw(
        f'<p class="not-run"><strong>Not run yet:</strong> the {esc(stage)} stage has not written its '
        f"output in this run directory. Run <code>{esc(command)}</code>, then render the report again.</p>"
    )


def warning_box(title: str, meaning: str, action: str, where: str = "", anchor: str = "") -> Raw:
    """A visible warning for a reader: what was seen (``title``, optionally where, linked to
    ``anchor``), what it means and what to try."""
    place = ""
    if where:
        target = f'<a href="#{esc(anchor)}">{esc(where)}</a>' if anchor else esc(where)
        place = f' <span class="where">({target})</span>'
    return Raw(
        f'<div class="warning" role="note"><p class="warning-title"><strong>{esc(title)}</strong>{place}</p>'
        f"<p><b>What it means:</b> {esc(meaning)}</p><p><b>What to try:</b> {esc(action)}</p></div>"
    )


def section(ident: str, title: str, parts: Sequence[str]) -> Raw:
    return Raw(f'<section id="{esc(ident)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>')


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d0d7de; --bg-alt:#f6f8fa; --accent:#0b5cad; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff; line-height:1.45; font-size:15px;
  font-family: -apple-system, "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
header.top { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
header.top h1 { margin: 0 0 4px; font-size: 26px; }
header.top p { margin: 0; color: var(--muted); }
nav.toc { background: var(--bg-alt); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 18px; margin: 12px 0 24px; display: inline-block; }
nav.toc h2 { font-size: 14px; margin: 0 0 4px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); border: 0; padding: 0; }
nav.toc ol { margin: 0; padding-left: 20px; }
nav.toc li { margin: 2px 0; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
section { margin: 0 0 36px; }
h2 { font-size: 21px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin: 28px 0 12px; }
h3 { font-size: 17px; margin: 22px 0 8px; }
h4 { font-size: 15px; margin: 16px 0 6px; color: var(--muted); }
.table-wrap { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 7px; vertical-align: top; text-align: left; }
thead th { background: #eaeef2; font-weight: 600; }
tbody tr:nth-child(even) td { background: var(--bg-alt); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.num { text-align: right; }
td { white-space: nowrap; }
td.text { min-width: 24em; white-space: normal; }
thead th { vertical-align: bottom; }
table.kv th { background: var(--bg-alt); font-weight: 600; white-space: nowrap; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 14px 20px;
  align-items: start; margin: 10px 0 16px; }
figure.fig { display: block; margin: 6px 0 14px; max-width: 100%; }
.figs figure.fig { margin: 0; }
.figs figure.wide { grid-column: 1 / -1; }
figure.fig img { display: block; max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
.figs figure.fig img { width: 100%; height: auto; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; }
.note { color: var(--muted); font-size: 13px; }
.not-run { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; }
.skipped { color: #9a6700; }
code { background: var(--bg-alt); border: 1px solid var(--line); border-radius: 4px; padding: 0 4px;
  font-size: 12.5px; }
details { margin: 6px 0 12px; }
summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #8c959f; font-weight: 400; }
th.sortable[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--accent); }
th.sortable[aria-sort="descending"]::after { content: " \\25BC"; color: var(--accent); }
input.table-filter { display: block; margin: 10px 0 0; padding: 4px 8px; width: 22em; max-width: 100%;
  font-size: 13px; border: 1px solid var(--line); border-radius: 4px; }
.warning { background: #fff4e5; border: 1px solid #d4a72c; border-left: 5px solid #bc4c00;
  border-radius: 6px; padding: 8px 14px; margin: 10px 0; }
.warning p { margin: 4px 0; }
.warning-title strong { color: #953800; }
.warning .where { color: var(--muted); font-size: 13px; }
.warn-count { font-weight: 600; color: #953800; }
"""

# Sort every table[data-sortable] by a click (or Enter) on a header: numbers numerically, text
# naturally, "—" (missing) last; put a filter box above every table[data-filterable]. Inline, so the
# page stays one file that opens offline.
SCRIPT = """
(function () {
  "use strict";
  function num(text) {
    var t = text.replace(/%$/, "");
    return /^[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?$/i.test(t) ? parseFloat(t) : NaN;
  }
  function missing(text) { return text === "" || text === "\u2014"; }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var vals = rows.map(function (r) { return r.cells[col] ? r.cells[col].textContent.trim() : ""; });
    var numeric = vals.every(function (v) { return missing(v) || !isNaN(num(v)); });
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (a, b) {
      var x = vals[a], y = vals[b];
      if (missing(x) || missing(y)) return (missing(x) - missing(y)) || a - b;
      var d = numeric ? num(x) - num(y) : x.localeCompare(y, undefined, {numeric: true});
      return (asc ? d : -d) || a - b;
    });
    order.forEach(function (i) { body.appendChild(rows[i]); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  function addFilter(table) {
    var box = document.createElement("input");
    box.type = "search";
    box.className = "table-filter";
    box.placeholder = "Filter rows (text in any cell)";
    box.setAttribute("aria-label", "Filter the rows of the table below");
    var wrap = table.parentNode;
    wrap.parentNode.insertBefore(box, wrap);
    box.addEventListener("input", function () {
      var q = box.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.style.display = r.textContent.toLowerCase().indexOf(q) < 0 ? "none" : "";
      });
    });
  }
  document.querySelectorAll("table[data-sortable]").forEach(function (table) {
    if (!table.tHead || !table.tHead.rows.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.classList.add("sortable");
      th.title = "Click to sort (again to reverse)";
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); }
      });
    });
    if (table.hasAttribute("data-filterable")) addFilter(table);
  });
})();
"""


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """The whole document: header, table of contents, sections (id, title, html), footer."""
    toc = "".join(f'<li><a href="#{esc(ident)}">{esc(name)}</a></li>' for ident, name, _ in sections)
    body = "".join(part for _, _, part in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="top"><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
        f'<nav class="toc" id="contents"><h2>Contents</h2><ol>{toc}</ol></nav>'
        f"{body}<footer>{esc(footer)}</footer></main><script>{SCRIPT}</script></body></html>\n"
    )
