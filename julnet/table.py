"""The one plain-text table: what every command prints for people (evaluation metrics, batch pairs, sweep trials)."""

from __future__ import annotations

from collections.abc import Sequence


def aligned(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Rows of cells in columns two spaces apart, left-aligned (the columns in `right` right-aligned). A row's last
    cell is neither padded nor measured, so free text there (a reason, a run id) does not widen the columns."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    lines = []
    for row in rows:
        cells = [(cell.rjust if i in right else cell.ljust)(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, *row[-1:]]).rstrip())
    return "\n".join(lines)
