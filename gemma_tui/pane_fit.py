"""How the studio's panes share the rows and columns the terminal gives it.

The side column stacks three panes whose wanted heights depend on the run (a GPU has more
readings than a CPU, an error adds a line) and on the width (the layer map wraps). Textual
lets a column of auto-height panes overflow, cutting the last pane's bottom border; here
each pane gets a height in rows that adds up to exactly what the column has. A pane that
cannot show its essential lines is hidden as a whole (the studio's ``m`` key zooms it),
never cut. Pure arithmetic: the app asks again only when a size or a wanted height changes.
"""

from __future__ import annotations

from dataclasses import dataclass

BORDER = 2  # a pane's top and bottom border rows
HISTORY_ROWS = 3  # the machine's history: its label and a sparkline at least two rows high
MAIN_PANE_MIN = 8  # the chart's and the chat's smallest legible heights
SIDE_NARROW, SIDE_MEDIUM, SIDE_WIDE = 40, 46, 64  # the side column's width per size band
MAIN_MIN_WIDTH = 40  # under this the main column would be too narrow: the side column goes


@dataclass(frozen=True)
class PaneWants:
    """A pane's heights in rows, borders included: the least that is still useful, and all
    it has to show (a shown pane gets at least the first and at most the second, unless it
    is the one the column's spare rows go to)."""

    least: int
    full: int


@dataclass(frozen=True)
class SidePlan:
    """Each side pane's height in rows; None: hidden (it cannot show its essentials)."""

    run: int | None
    layers: int | None
    layers_brief: bool  # the layer map shows its short form
    machine: int | None
    machine_history: bool  # the machine pane has room for its history chart


def plan_side_column(rows: int, run: PaneWants, layers_brief: int, layers_full: int,
                     machine_readings: int, history_rows: int = HISTORY_ROWS) -> SidePlan:
    """Share ``rows`` between Run, Layers and Machine, in that order of need.

    First each pane's essentials (the run's most telling lines, the layer map's short form,
    the machine's readings), dropping from the end what does not fit; then the run's other
    lines, the machine's history, the layer map's full details; the machine pane (else the
    last pane shown) takes the rows left, so the column is filled exactly.
    """
    if rows < run.least:
        return SidePlan(None, None, True, None, False)
    heights = {"run": run.least}
    left = rows - run.least
    for name, least in (("layers", layers_brief), ("machine", machine_readings)):
        if left >= least:
            heights[name] = least
            left -= least
        else:
            break
    grow = min(left, max(0, run.full - run.least))
    heights["run"] += grow
    left -= grow
    history = "machine" in heights and left >= history_rows
    if history:
        heights["machine"] += history_rows
        left -= history_rows
    brief = True
    if "layers" in heights and left >= layers_full - layers_brief:
        heights["layers"] = layers_full
        left -= layers_full - layers_brief
        brief = False
    last = list(heights)[-1]  # spare rows: the machine's history grows, else blank rows
    heights[last] += left
    if last == "machine" and heights["machine"] - machine_readings >= history_rows:
        history = True
    return SidePlan(heights.get("run"), heights.get("layers"), brief, heights.get("machine"), history)


def side_width(columns: int) -> int:
    """The side column's width for a terminal ``columns`` wide (0: no side column)."""
    width = SIDE_NARROW if columns < 120 else SIDE_MEDIUM if columns < 200 else SIDE_WIDE
    return width if columns - width >= MAIN_MIN_WIDTH else 0


def chat_fits(rows: int) -> bool:
    """Whether the main column has room for the chat under the chart."""
    return rows >= 2 * MAIN_PANE_MIN
