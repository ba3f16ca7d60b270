"""Display helpers of the result objects: short numbers for ``__str__`` and escaped HTML tables for
``_repr_html_`` (what a notebook shows)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def number(value: object, digits: int = 2) -> str:
    """``0.81`` for a float, ``1,024`` for an int, ``n/a`` for None; anything else as ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> str:
    """A small HTML table; every cell and the caption escaped, numbers shown as by :func:`number`."""
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(number(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"
