"""Per-layer attention entropy or residual RMS over the run: a heat strip, layers by evaluations.

One row per decoder layer (two per text row, as half blocks, where the pane is short), one
column per slice of the x axis the Charts screen shares (steps or tokens, its zoom and
cursor); each cell holds the latest evaluation at or before that slice, so a layer whose
attention sharpens is a row that darkens from left to right. Why not lines: eighteen
curves of close values in a 40-column chart are a tangle, and the question asked of them
("which layers sharpen, and when?") is read off a heat map at a glance.

Sliding-window rows are drawn in the sliding colour and full-attention rows in the full
colour (as in the Layers pane), each shaded from dark (smallest value shown) to bright
(largest). The log scale (``l``) shades by log10 of the value. Smoothing does not apply:
these are evaluations, a few points a run, like the validation loss.

Cost: O(columns x rows) cells of text per redraw, at the Charts screen's pace; nothing
while the screen is closed.
"""

from __future__ import annotations

import math

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from gemma_core.run.events import EvalResult
from gemma_tui.formatting import number
from gemma_tui.palette import studio_palette
from gemma_tui.widgets.metric_chart import ChartView

ENTROPY, RESIDUAL_RMS = "entropy", "residual_rms"
TITLES = {ENTROPY: "Attention entropy by layer (nats, mean over heads)",
          RESIDUAL_RMS: "Residual RMS by layer (after each block)"}
NAMES = {ENTROPY: "entropy", RESIDUAL_RMS: "residual RMS"}
LABEL_WIDTH = 6  # "12 F  " before each row
NO_PROBE = ("no evaluation has measured the layers yet: each evaluation does (e evaluates now); "
            "a run logged before this studio kept none")


def probe_matrix(evals: tuple[EvalResult, ...], quantity: str) -> tuple[list[EvalResult], np.ndarray]:
    """The evaluations that measured the layers (as many as the newest did), and their values:
    one row per evaluation, one column per layer."""
    probed = [e for e in evals if e.layers]
    if not probed:
        return [], np.empty((0, 0))
    n_layers = len(probed[-1].layers)
    probed = [e for e in probed if len(e.layers) == n_layers]
    values = np.array([[layer.entropy_mean if quantity == ENTROPY else layer.residual_rms for layer in e.layers]
                       for e in probed], dtype=float)
    return probed, values


class LayerHeatChart(Widget):
    """The heat strip of one per-layer quantity, drawn under a ``ChartView``."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.quantity = ENTROPY
        self.evals: tuple[EvalResult, ...] = ()
        self.view = ChartView()

    def show(self, evals: tuple[EvalResult, ...], view: ChartView, quantity: str) -> None:
        if (evals, view, quantity) == (self.evals, self.view, self.quantity):
            return
        self.evals, self.view, self.quantity = evals, view, quantity
        self.border_title = TITLES[quantity]
        self.border_subtitle = self.cursor_reading()
        self.refresh()

    # ------------------------------------------------------------------ reading
    def _x(self, probed: list[EvalResult]) -> np.ndarray:
        if self.view.x_axis == "tokens":
            return np.array([e.tokens_seen for e in probed], dtype=float) / self.view.token_scale
        return np.array([e.step for e in probed], dtype=float)

    def evaluation_at(self, x: float) -> int | None:
        """The index of the latest probed evaluation at or before ``x`` (in the view's units)."""
        probed, _ = probe_matrix(self.evals, self.quantity)
        if not probed:
            return None
        index = int(np.searchsorted(self._x(probed), x, side="right")) - 1
        return index if index >= 0 else None

    def cursor_reading(self) -> str:
        """At the cursor: the lowest and highest layer, and the sliding and full layers' means."""
        probed, values = probe_matrix(self.evals, self.quantity)
        if not probed:
            return ""
        cursor = self.view.cursor if self.view.cursor is not None else math.inf
        index = self.evaluation_at(cursor)
        if index is None:
            return "before the first evaluation"
        row, result = values[index], probed[index]
        low, high = int(np.nanargmin(row)), int(np.nanargmax(row))
        kinds = [layer.type for layer in result.layers]
        means = [f"{kind} mean {number(float(np.nanmean(row[[k == kind for k in kinds]])), 3)}"
                 for kind in ("sliding", "full") if kind in kinds]
        return (f"step {result.step:,}: lowest layer {low} {number(row[low], 3)} · highest layer {high} "
                f"{number(row[high], 3)} · " + " · ".join(means))

    # ------------------------------------------------------------------- render
    def render(self) -> Text:
        probed, values = probe_matrix(self.evals, self.quantity)
        if not probed:
            return Text(NO_PROBE, style="italic")
        palette = studio_palette(self.app)
        if self.view.log_scale:
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(values > 0, np.log10(values), np.nan)
        xs = self._x(probed)
        low, high = self.view.x_range or (float(xs[0]), float(xs[-1]))
        width = max(1, self.size.width - LABEL_WIDTH)
        centres = low + (np.arange(width) + 0.5) / width * (high - low) if high > low else np.full(width, high)
        at = np.searchsorted(xs, centres, side="right") - 1  # each column's evaluation, -1: none yet
        shown = values[np.unique(at[at >= 0])] if (at >= 0).any() else values[-1:]
        finite = shown[np.isfinite(shown)]
        v_low, v_high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        kinds = [layer.type for layer in probed[-1].layers]
        colours = [palette.full if kind == "full" else palette.sliding for kind in kinds]

        def colour(column: int, layer: int):
            if layer >= len(kinds) or at[column] < 0 or not math.isfinite(values[at[column], layer]):
                return palette.surface
            share = 0.5 if v_high == v_low else (values[at[column], layer] - v_low) / (v_high - v_low)
            return palette.surface.blend(colours[layer], 0.12 + 0.88 * share)

        n_layers = len(kinds)
        rows_free = max(1, self.size.height - 2)  # the x axis and the legend below
        halves = rows_free < n_layers
        repeat = 1 if halves else rows_free // n_layers  # a tall pane gives each layer more rows
        text = Text()
        for row in range(min(rows_free, math.ceil(n_layers / 2)) if halves else n_layers):
            layers = (2 * row, 2 * row + 1) if halves else (row,)
            for again in range(repeat):
                text.append_text(self._label(layers, kinds, palette) if not again else Text(" " * LABEL_WIDTH))
                for column in range(width):
                    top = colour(column, layers[0])
                    if halves:
                        bottom = colour(column, layers[1])
                        text.append("▀", Style(color=top.hex, bgcolor=bottom.hex))
                    else:
                        text.append(" ", Style(bgcolor=top.hex))
                text.append("\n")
        text.append_text(self._axis(low, high, width))
        unit = " nats" if self.quantity == ENTROPY and not self.view.log_scale else ""
        scale = "log10 " if self.view.log_scale else ""
        text.append("\n")
        text.append(f"darker: lower · {scale}{number(v_low, 3)}–{number(v_high, 3)}{unit} · ", Style(dim=True))
        text.append("■", Style(color=palette.sliding.hex))
        text.append(" S sliding ", Style(dim=True))
        text.append("■", Style(color=palette.full.hex))
        text.append(" F full" + (" · 2 layers a row" if halves else ""), Style(dim=True))
        return text

    @staticmethod
    def _label(layers: tuple[int, ...], kinds: list[str], palette) -> Text:
        """The row's layer number(s) and type letter(s), in their type's colour."""
        label = Text()
        names = [(i, "F" if kinds[i] == "full" else "S") for i in layers if i < len(kinds)]
        if len(names) == 1:
            i, letter = names[0]
            label.append(f"{i:>2} {letter}".ljust(LABEL_WIDTH),
                         Style(color=(palette.full if letter == "F" else palette.sliding).hex))
            return label
        first, second = names
        label.append(f"{first[0]:>2}", Style(dim=True))
        for i, letter in names:
            label.append(letter, Style(color=(palette.full if letter == "F" else palette.sliding).hex))
        label.append(" " * (LABEL_WIDTH - 4))
        return label

    def _axis(self, low: float, high: float, width: int) -> Text:
        """Where the strip starts, ends and the cursor stands, in the x axis's units."""
        unit = self.view.token_unit if self.view.x_axis == "tokens" else ""
        line = [" "] * width
        left, right = f"{low:,.4g}{unit}", f"{high:,.4g}{unit}"
        cursor, at = self.view.cursor, None
        if cursor is not None and high > low and low <= cursor <= high:
            at = min(width - 1, int((cursor - low) / (high - low) * width))
        # An end's number the cursor would land on is left out rather than overprinted ("1,40▲"):
        # the readout names the cursor's step.
        if at is None or at >= len(left) + 1:
            line[:len(left)] = left
        if len(right) < width - len(left) and (at is None or at < width - len(right) - 1):
            line[width - len(right):] = right
        if at is not None:
            line[at] = "▲"
        name = "tokens" if self.view.x_axis == "tokens" else "step"
        return Text(name.ljust(LABEL_WIDTH)[:LABEL_WIDTH] + "".join(line)[:width], Style(dim=True))
