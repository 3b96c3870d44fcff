"""Charts (``g``): every number the run logs, one small chart each, on one x axis.

Training and validation loss, perplexity, bits per byte, grad norm, tokens/s, each
optimiser's learning rate and MFU, as a grid of small multiples (TensorBoard's
scalars page), or one chart at a time with tabs where the terminal is small. The
charts share the studio's x axis (``t``), smoothing (``[`` ``]``) and log scale
(``l``): the loss chart holds them, so both views always agree. A cursor (arrows, or
a click) reads every series at one step; ``i`` / ``o`` zoom around it, ``0`` shows
every step again. ``a`` turns to each layer's attention entropy, then residual RMS, on
the probe prompt at each evaluation (``LayerHeatChart``), on the same axis and cursor,
and back to the metrics.

Cost: the screen exists only while shown (closing it removes it), and redraws for
new data at the loss chart's pace (``RedrawPacer``, the rate ``GemmaStudio`` sets
for where the run trains).
"""

from __future__ import annotations

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, Tab, Tabs

from gemma_tui.metric_history import METRICS, Metric, RunMetrics
from gemma_tui.widgets.layer_heat_chart import ENTROPY, RESIDUAL_RMS, LayerHeatChart
from gemma_tui.widgets.loss_chart import LossChart
from gemma_tui.widgets.metric_chart import ChartView, MetricChart, point_at
from gemma_tui.widgets.redraw_pacer import RedrawPacer

POLL_S = 0.5  # how often the screen looks for a new snapshot (drawing is paced apart)
MIN_CHART = (36, 8)  # columns and rows a chart of the grid needs to be read
CURSOR_STEPS = 100  # an arrow press moves the cursor this fraction of the visible range
MIN_ZOOM_STEPS = 8
# How each metric is named in the readout line.
READOUT_NAMES = {"loss": "loss", "val_loss": "val", "perplexity": "ppl", "bits_per_byte": "bpb",
                 "grad_norm": "grad", "tokens_per_s": "tok/s", "learning_rate": "lr", "mfu": "MFU"}


def token_unit(largest: float) -> tuple[float, str]:
    for size, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if largest >= size:
            return size, name
    return 1.0, ""


def grid_columns(width: int, height: int, charts: int) -> int:
    """Charts per row of the grid, or 0: one chart at a time (the terminal is too small)."""
    rows_free = height - 6  # header, footer and the readout's lines
    for columns in (4, 3, 2):
        rows = -(-charts // columns)
        if width // columns >= MIN_CHART[0] and rows_free // rows >= MIN_CHART[1]:
            return columns
    return 0


class ChartsScreen(Screen[None]):
    TITLE = "Charts"
    DEFAULT_CSS = """
    ChartsScreen #charts-tabs { display: none; }
    ChartsScreen.-single #charts-tabs { display: block; }
    ChartsScreen #charts-grid { layout: grid; grid-size: 4 2; height: 1fr; }
    ChartsScreen MetricChart {
        height: 1fr;
        border: round $foreground 30%;
        border-title-color: $text-muted;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
    }
    ChartsScreen MetricChart.-selected { border: round $primary; border-title-color: $primary; }
    ChartsScreen #charts-readout { height: auto; max-height: 4; padding: 0 1; color: $text; }
    ChartsScreen LayerHeatChart {
        display: none;
        height: 1fr;
        border: round $primary;
        border-title-color: $primary;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
    }
    ChartsScreen.-layers LayerHeatChart { display: block; }
    ChartsScreen.-layers #charts-grid, ChartsScreen.-layers #charts-tabs,
    ChartsScreen.-single.-layers #charts-tabs { display: none; }
    """
    BINDINGS = [
        Binding("escape,q,g", "close", "Close", key_display="Esc"),
        Binding("left", "move_cursor(-1)", "Cursor", key_display="←→"),
        Binding("right", "move_cursor(1)", "Cursor", show=False),
        Binding("shift+left", "move_cursor(-10)", "Cursor ×10", show=False),
        Binding("shift+right", "move_cursor(10)", "Cursor ×10", show=False),
        Binding("home", "cursor_to_start", "First step", show=False),
        Binding("end", "cursor_to_end", "Latest step", show=False),
        Binding("i", "zoom_in", "Zoom in"),
        Binding("o", "zoom_out", "Zoom out"),
        Binding("0", "zoom_reset", "All steps"),
        # Not in the footer: the tabs strip shows the numbers, and the grid needs no switching.
        Binding("tab", "next_chart(1)", "Next chart", show=False),
        Binding("shift+tab", "next_chart(-1)", "Previous chart", show=False),
        Binding("a", "layers_page", "Layers"),
        Binding("l", "log_scale", "Log y"),
        Binding("t", "x_axis", "Step/tokens"),
        Binding("left_square_bracket", "smoothing(-1)", "Smooth-", key_display="["),
        Binding("right_square_bracket", "smoothing(1)", "Smooth+", key_display="]"),
        *(Binding(str(n), f"select({n - 1})", f"Chart {n}", show=False) for n in range(1, len(METRICS) + 1)),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.metrics = RunMetrics()
        self.selected = 0  # the chart shown where one is shown at a time, highlighted in the grid
        self.cursor_step: float | None = None  # None: the latest step, following new ones
        self.step_range: tuple[float, float] | None = None  # None: every step
        self._seen = None  # the app's snapshot last taken
        self._pacer = RedrawPacer(self, self._redraw_for_data, 0.5)
        self.layers_page: str | None = None  # ENTROPY or RESIDUAL_RMS: the per-layer page shown

    def compose(self) -> ComposeResult:
        yield Header()
        tabs = Tabs(*(Tab(f"{n} {title}", id=f"tab-{key}") for n, (key, title, _) in enumerate(METRICS, 1)),
                    id="charts-tabs")
        tabs.can_focus = False  # the arrows move the cursor, never the tabs
        yield tabs
        with Grid(id="charts-grid"):
            for key, _, _ in METRICS:
                yield MetricChart(key, id=f"chart-{key}")
        yield LayerHeatChart(id="layer-heat")
        yield Static(id="charts-readout", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._arrange()
        self._poll()
        self.set_interval(POLL_S, self._poll)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._draw())

    # ---------------------------------------------------------------- the data
    @property
    def loss_chart(self) -> LossChart:
        """The studio's loss chart: it holds the x axis, scale and smoothing both views use."""
        return self.app.query_one(LossChart)  # the app queries its main screen

    def _poll(self) -> None:
        snapshot = getattr(self.app, "snapshot", None)
        if snapshot is None or snapshot is self._seen:
            return
        first = self._seen is None
        self._seen = snapshot
        self._pacer.max_hz = self.loss_chart.max_data_hz
        if first:  # opening the screen shows the data at once
            self._redraw_for_data()
        else:
            self._pacer.data_changed()

    def _redraw_for_data(self) -> None:
        if self._seen is None or not self.is_attached:
            return
        self.metrics.update(self._seen)
        if self.metrics.reading:  # a long log: the rest in slices, the studio answering between them
            self.set_timer(0.05, self._redraw_for_data)
        self._draw()

    def _extent(self) -> tuple[float, float] | None:
        """The first and last step any series has."""
        steps = [s.steps for m in self.metrics.metrics() for s in m.series if s.steps.size]
        if not steps:
            return None
        return min(float(s[0]) for s in steps), max(float(s[-1]) for s in steps)

    def _step_to_tokens(self):
        """Steps to tokens seen, by the training loss's (step, tokens) pairs."""
        loss = next((m for m in self.metrics.metrics() if m.key == "loss"), None)
        if loss is None or not loss.series:
            return None
        series = loss.series[0]
        return series.steps, series.tokens

    # ------------------------------------------------------------------ the view
    def view(self) -> ChartView:
        chart = self.loss_chart
        view = ChartView(x_axis=chart.x_axis, log_scale=chart.log_scale, smoothing=chart.smoothing)
        extent = self._extent()
        if extent is None:
            return view
        cursor = extent[1] if self.cursor_step is None else self.cursor_step
        low, high = self.step_range or extent
        if view.x_axis == "tokens":
            pairs = self._step_to_tokens()
            if pairs is None:
                return ChartView(x_axis="tokens", log_scale=view.log_scale, smoothing=view.smoothing)
            scale, unit = token_unit(float(pairs[1][-1]))
            to_x = lambda step: float(np.interp(step, *pairs)) / scale
            return ChartView("tokens", view.log_scale, view.smoothing, scale, unit, (to_x(low), to_x(high)),
                             to_x(cursor))
        # Every chart spans the same steps, so the cursor stands at one place in all of them.
        return ChartView("step", view.log_scale, view.smoothing, x_range=(low, high), cursor=cursor)

    def _draw(self) -> None:
        if not self.is_attached:
            return
        view = self.view()
        metrics = {m.key: m for m in self.metrics.metrics()}
        with self.app.batch_update():
            for chart in self.query(MetricChart):
                chart.show(metrics[chart.key], view, self.metrics.version)
            heat = self.query_one(LayerHeatChart)
            if self.layers_page is not None and self._seen is not None:
                heat.show(self._seen.eval_history, view, self.layers_page)
            self.query_one("#charts-readout", Static).update(self.readout(view))

    def readout(self, view: ChartView | None = None) -> str:
        """Every series' value at the cursor (its nearest logged point), on one line."""
        view = view or self.view()
        if view.cursor is None:
            return "waiting for the first optimizer step"
        extent = self._extent()
        cursor = extent[1] if self.cursor_step is None else self.cursor_step
        parts = [f"step {round(cursor):,}"]
        if self.layers_page is not None:
            parts.append(self.query_one(LayerHeatChart).cursor_reading() or "no layers measured yet")
        for metric in () if self.layers_page is not None else self.metrics.metrics():
            parts += self._read(metric, view, round(cursor))
        if self.step_range is not None:
            parts.append(f"zoomed to steps {self.step_range[0]:,.0f}–{self.step_range[1]:,.0f} (0: all)")
        return " · ".join(parts)

    @staticmethod
    def _read(metric: Metric, view: ChartView, step: int) -> list[str]:
        name, readings = READOUT_NAMES[metric.key], []
        for series in metric.series:
            point = point_at(series, view)
            if point is None:
                continue
            label = f"{name} {series.name}" if len(metric.series) > 1 else name
            where = "" if point[0] == step or series.per_step else f" (step {point[0]:,})"
            readings.append(f"{label} {metric.format(point[1])}{where}")
        return readings

    # ------------------------------------------------------------------ layout
    def on_resize(self) -> None:
        self._arrange()

    def _arrange(self) -> None:
        """A grid where each chart has room to be read, else one chart at a time with tabs."""
        columns = grid_columns(self.size.width, self.size.height, len(METRICS))
        single = columns == 0
        grid = self.query_one("#charts-grid", Grid)
        self.set_class(single, "-single")
        grid.styles.grid_size_columns = columns or 1
        grid.styles.grid_size_rows = 1 if single else -(-len(METRICS) // columns)
        for number, chart in enumerate(self.query(MetricChart)):
            chart.display = not single or number == self.selected
            chart.set_class(not single and number == self.selected, "-selected")
        self.query_one(Tabs).active = f"tab-{METRICS[self.selected][0]}"

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        keys = [key for key, _, _ in METRICS]
        chosen = keys.index(event.tab.id.removeprefix("tab-"))
        if chosen != self.selected:
            self.selected = chosen
            self._arrange()

    # ----------------------------------------------------------------- actions
    def action_close(self) -> None:
        self.dismiss()

    def action_layers_page(self) -> None:
        """The metrics, then each layer's attention entropy, then residual RMS, then the metrics."""
        pages = (None, ENTROPY, RESIDUAL_RMS)
        self.layers_page = pages[(pages.index(self.layers_page) + 1) % len(pages)]
        self.set_class(self.layers_page is not None, "-layers")
        self._draw()

    def action_select(self, number: int) -> None:
        self.selected = number % len(METRICS)
        self._arrange()

    def action_next_chart(self, direction: int) -> None:
        self.action_select(self.selected + direction)

    def action_move_cursor(self, presses: int) -> None:
        extent = self._extent()
        if extent is None:
            return
        low, high = self.step_range or extent
        now = extent[1] if self.cursor_step is None else self.cursor_step
        step = max(1, round((high - low) / CURSOR_STEPS))
        moved = min(high, max(low, now + presses * step))
        self.cursor_step = None if moved >= extent[1] else moved
        self._draw()

    def action_cursor_to_start(self) -> None:
        extent = self._extent()
        if extent is not None:
            self.cursor_step = (self.step_range or extent)[0]
            self._draw()

    def action_cursor_to_end(self) -> None:
        self.cursor_step = None if self.step_range is None else self.step_range[1]
        self._draw()

    def action_zoom_in(self) -> None:
        """Half the visible steps, centred on the cursor (kept inside the run)."""
        extent = self._extent()
        if extent is None:
            return
        low, high = self.step_range or extent
        centre = extent[1] if self.cursor_step is None else self.cursor_step
        half = max(MIN_ZOOM_STEPS, high - low) / 4
        self._zoom_to(centre - half, centre + half, extent)

    def action_zoom_out(self) -> None:
        extent = self._extent()
        if extent is None or self.step_range is None:
            return
        low, high = self.step_range
        centre, span = (low + high) / 2, high - low
        self._zoom_to(centre - span, centre + span, extent)

    def _zoom_to(self, low: float, high: float, extent: tuple[float, float]) -> None:
        span = min(high - low, extent[1] - extent[0])
        low = min(max(low, extent[0]), extent[1] - span)  # slid back inside the run, span kept
        high = low + span
        self.step_range = None if span >= extent[1] - extent[0] else (low, high)
        if self.cursor_step is not None and self.step_range is not None:
            self.cursor_step = min(high, max(low, self.cursor_step))
        self._draw()

    def action_zoom_reset(self) -> None:
        self.step_range = None
        self._draw()

    def action_log_scale(self) -> None:
        self.app.action_toggle_log_scale()
        self._draw()

    def action_x_axis(self) -> None:
        self.app.action_toggle_x_axis()
        self._draw()

    def action_smoothing(self, direction: int) -> None:
        self.app.action_smoothing(direction)
        self._draw()

    def on_metric_chart_clicked(self, event: MetricChart.Clicked) -> None:
        """A click puts the cursor at that point of the x axis, in every chart."""
        extent = self._extent()
        if extent is None:
            return
        low, high = self.step_range or extent
        view = self.view()
        if view.x_axis == "tokens" and self._step_to_tokens() is not None:
            steps, tokens = self._step_to_tokens()
            x_low, x_high = float(np.interp(low, steps, tokens)), float(np.interp(high, steps, tokens))
            step = float(np.interp(x_low + event.fraction * (x_high - x_low), tokens, steps))
        else:
            step = low + event.fraction * (high - low)
        self.cursor_step = None if step >= extent[1] else step
        self._draw()
