"""Small HTML pieces the study headlines share.

A headline number is written with `num`: the page shows it rounded, and keeps the exact value and
a stable key in data attributes, so a test can read every headline number back from the rendered
page and compare it with the marts.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence


class Html(str):
    """Markup that `table` puts in a cell as it is (anything else is escaped)."""


def num(key: str, value: float | int | None, fmt: str = ".2f") -> Html:
    """`value` formatted for reading, with its key and exact value for machines. A missing value
    (None, NaN: a test that could not be computed) reads "n/a" and carries "nan"."""
    if value is None or value != value:
        return Html(f'<span class=num data-key="{html.escape(key)}" data-value="nan">n/a</span>')
    return Html(
        f'<span class=num data-key="{html.escape(key)}" data-value="{value!r}">'
        f"{html.escape(format(value, fmt))}</span>"
    )


def verdict(holds: bool | None) -> str:
    if holds is None:
        return "<b>not measurable here</b>"
    return "<b>holds</b>" if holds else "<b>does not reproduce at this scale</b>"


def table(columns: list[str], rows: list, flagged: Callable[[Sequence], bool] | None = None) -> str:
    """An HTML table; rows for which `flagged(row)` holds are marked (class=flag)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        ("<tr class=flag>" if flagged is not None and flagged(r) else "<tr>")
        + "".join(f"<td>{_cell(v)}</td>" for v in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    if isinstance(v, Html):
        return v
    return html.escape(f"{v:.4g}" if isinstance(v, float) else str(v))
