"""One small chart of the Charts screen: a metric's series, the shared cursor and x range.

Drawn the way the loss chart draws (see ``loss_chart.py``): every series cut down to
about two points per plot column, log scale as log10 values on a linear axis, and the
plot rebuilt only when the data, the size, the theme or the view changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual_plotext import PlotextPlot

from gemma_tui.metric_history import Metric, Series
from gemma_tui.palette import studio_palette
from gemma_tui.series import downsample, ema, log10
from gemma_tui.widgets.loss_chart import log_ticks, nice_ticks, tick_labels


@dataclass(frozen=True)
class ChartView:
    """What every chart of the screen shares: the axis, scale, smoothing, range and cursor.

    ``x_range`` and ``cursor`` are in the x axis's units (steps, or tokens divided by
    ``token_scale``)."""

    x_axis: str = "step"  # or "tokens"
    log_scale: bool = False
    smoothing: float = 0.0
    token_scale: float = 1.0
    token_unit: str = ""
    x_range: tuple[float, float] | None = None
    cursor: float | None = None

    def x_of(self, series: Series) -> np.ndarray:
        return series.tokens / self.token_scale if self.x_axis == "tokens" else series.steps


class MetricChart(PlotextPlot):
    """A metric's curves, or one line saying why it has none (never an empty frame)."""

    class Clicked(Message):
        """The chart was clicked ``fraction`` of the way across its plot area."""

        def __init__(self, fraction: float) -> None:
            super().__init__()
            self.fraction = fraction

    def __init__(self, key: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.key = key
        self.metric: Metric | None = None
        self.view = ChartView()
        self._version = -1
        self._drawn_key: tuple | None = None
        self._drawn: list[Strip] = []
        self._x_limits: tuple[float, float] | None = None  # the x axis's ends, as last drawn
        self._frame = (0, 0)  # the plot frame's left and right columns, as last drawn
        self._plot_rows = (0, -1)  # the first and last rows inside the frame

    def show(self, metric: Metric, view: ChartView, version: int) -> None:
        """Draw ``metric`` (the ``version`` of the run's metrics it comes from) under ``view``."""
        if version == self._version and view == self.view:
            return
        self.metric, self.view, self._version = metric, view, version
        self.border_title = metric.title
        self.border_subtitle = self.cursor_reading()
        self.refresh()

    def cursor_reading(self) -> str:
        """The value at the cursor, as the chart's subtitle ("2.4133 @ 320")."""
        metric, view = self.metric, self.view
        if metric is None or view.cursor is None or not metric.series:
            return ""
        readings = []
        for series in metric.series:
            point = point_at(series, view)
            if point is not None:
                readings.append(metric.format(point[1]))
        return " · ".join(readings)

    # ----------------------------------------------------------------- drawing
    def render_line(self, y: int) -> Strip:
        """The Line API: lines are drawn once per plot build; the cursor is laid over them,
        so moving it costs a few cells a line, never a rebuild or a re-render of the plot."""
        strips = self._strips()
        strip = strips[y] if y < len(strips) else Strip.blank(self.size.width)
        column = self._cursor_column()
        if column is None or not self._plot_rows[0] <= y <= self._plot_rows[1]:
            return strip
        palette = studio_palette(self.app)
        shade = Style(bgcolor=palette.surface.blend(palette.full, 0.5).rich_color)
        before, cell, after = strip.divide([column, column + 1, strip.cell_length])
        return Strip.join([before, Strip(Segment.apply_style(cell, post_style=shade), 1), after])

    def _strips(self) -> list[Strip]:
        width, height = self.size
        key = (self._version, replace(self.view, cursor=None), self.size, self.app.theme)
        if key == self._drawn_key:
            return self._drawn
        self._x_limits = None
        if self.metric is None or not self.metric.has_points:  # a sentence, not an empty frame
            why = self.metric.absent if self.metric is not None and self.metric.absent else "waiting for data"
            text = Text("\n" * max(0, height // 2 - 1) + why, justify="center")
        else:
            self._plot_metric()
            text = PlotextPlot.render(self)
        console = self.app.console
        lines = console.render_lines(text, console.options.update_dimensions(width, height), pad=True)
        self._drawn = [Strip(line, width).simplify() for line in lines]  # a segment a colour run, not a cell
        self._frame, self._plot_rows = frame_geometry(text.plain)
        self._drawn_key = key
        return self._drawn

    def _cursor_column(self) -> int | None:
        """The column the cursor is drawn in, or None where it is off the plot."""
        cursor, limits = self.view.cursor, self._x_limits
        left, right = self._frame
        if cursor is None or limits is None or right - left < 3 or not limits[0] <= cursor <= limits[1]:
            return None
        low, high = limits
        return left + 1 + round((cursor - low) / (high - low) * (right - left - 2))

    def _plot_metric(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("")
        plt.ylabel("")
        metric, view = self.metric, self.view
        palette = studio_palette(self.app)
        colours = (palette.lr, palette.smooth, palette.val, palette.train)
        columns = max(10, self.size.width - 10)
        every_x, every_y = [], []
        for number, series in enumerate(metric.series):
            x, y = self._visible(series)
            if not x.size:
                continue
            if not series.per_step:
                colour = palette.val if metric.key in ("val_loss", "perplexity", "bits_per_byte") \
                    else colours[number % len(colours)]
                xs, ys = downsample(x, y, columns)
                plt.plot(xs.tolist(), ys.tolist(), color=colour.rgb, marker="braille")
                if x.size <= columns // 2:  # few points (evaluations): each one marked
                    plt.scatter(xs.tolist(), ys.tolist(), color=colour.rgb, marker="•")
            else:
                xs, ys = downsample(x, y, columns)
                plt.plot(xs.tolist(), ys.tolist(), color=palette.train.rgb, marker="braille")
                if view.smoothing > 0:
                    sx, sy = downsample(x, ema(y, view.smoothing), columns)
                    plt.plot(sx.tolist(), sy.tolist(), color=palette.smooth.rgb, marker="hd")
            every_x += [float(x[0]), float(x[-1])]
            every_y += [float(y.min()), float(y.max())]
        if not every_x:
            plt.title("nothing logged in this range (0 resets the zoom)")
            return
        low, high = view.x_range if view.x_range else (min(every_x), max(every_x))
        if high > low:
            plt.xlim(low, high)
            self._x_limits = (low, high)
        ticks = nice_ticks(low, high, max(5, self.size.width // 7))
        plt.xticks(ticks, tick_labels(ticks, view.token_unit if view.x_axis == "tokens" else ""))
        self._y_ticks(min(every_y), max(every_y))

    def _visible(self, series: Series) -> tuple[np.ndarray, np.ndarray]:
        """The series' points inside the view's x range, log10'd on a log scale."""
        x, y = self.view.x_of(series), series.values
        if self.view.x_range is not None:
            low, high = self.view.x_range
            keep = (x >= low) & (x <= high)
            x, y = x[keep], y[keep]
        return log10(x, y) if self.view.log_scale else (x, y)

    def _y_ticks(self, low: float, high: float) -> None:
        """Short tick labels (the chart is small): values, not log10 values, on a log scale."""
        if self.view.log_scale:
            values = log_ticks(low, high)
            positions = [math.log10(v) for v in values]
        else:  # about one tick every three rows of the plot
            positions = values = nice_ticks(low, high, max(4, min(8, self.size.height // 3)))
        self.plt.yticks(positions, [short_number(v) for v in values])

    # ------------------------------------------------------------------- mouse
    def on_click(self, event: events.Click) -> None:
        """Where the click falls across the plot's frame, for the screen to move the cursor to."""
        left, right = self._frame
        if right - left >= 3:  # the same columns the cursor is drawn in
            fraction = (event.x - left - 1) / (right - left - 2)
            self.post_message(self.Clicked(min(1.0, max(0.0, fraction))))


def frame_geometry(plain: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The columns of a plot frame's left and right edges and the rows inside it ((0, 0), (0, -1):
    no frame)."""
    columns, rows, top = (0, 0), (0, -1), None
    for row, line in enumerate(plain.splitlines()):
        if top is None and "┌" in line and "┐" in line:
            columns, top = (line.index("┌"), line.rindex("┐")), row
        elif top is not None and "└" in line:
            return columns, (top + 1, row - 1)
    return columns, rows


def point_at(series: Series, view: ChartView) -> tuple[int, float] | None:
    """The series' logged point nearest the view's cursor (on the tokens axis, by tokens)."""
    if view.cursor is None or not series.steps.size:
        return None
    x = view.x_of(series)
    after = int(np.searchsorted(x, view.cursor))
    index = min((i for i in (after - 1, after) if 0 <= i < x.size), key=lambda i: abs(x[i] - view.cursor))
    return int(series.steps[index]), float(series.values[index])


def short_number(value: float) -> str:
    """A tick label that fits a small chart's margin: "3.05k", "1.2M", "0.002"."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"
