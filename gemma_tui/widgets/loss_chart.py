"""Loss curves: training loss (raw and smoothed), validation loss and learning rate."""

from __future__ import annotations

import math

from textual.color import Color
from textual.content import Content
from textual_plotext import PlotextPlot

from gemma_core.run.events import RunSnapshot
from gemma_tui.palette import studio_palette
from gemma_tui.series import HistoryColumns, columns_of, downsample, ema, finite, interpolate_x, log10
from gemma_tui.widgets.redraw_pacer import RedrawPacer

SMOOTHING_STEPS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99)
COMPACT_ROWS = 16  # a chart shorter than this gives the rows of its axis titles to the curves
WIDE_LEGEND = 60  # from this many columns the legend says which axis the learning rate is read on


def next_smoothing(current: float, direction: int) -> float:
    """The smoothing weight one step smoother (+1) or rougher (-1) than ``current``."""
    steps = SMOOTHING_STEPS
    index = min(range(len(steps)), key=lambda i: abs(steps[i] - current))
    return steps[max(0, min(len(steps) - 1, index + direction))]


def _rgb(color: Color) -> tuple[int, int, int]:
    return color.rgb


def _token_unit(largest: float) -> tuple[float, str]:
    for size, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if largest >= size:
            return size, name
    return 1.0, ""


def tick_labels(ticks: list[float], unit: str = "") -> list[str]:
    """Each tick as a short number with its unit on it ("50k", "1.2M"): an axis read at a
    glance, even where the axis title has no room."""
    return [f"{t:g}{unit if t else ''}" for t in ticks]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round numbers (1, 2 or 5 times a power of ten apart) spanning [low, high]."""
    if not high > low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Round values (1, 2, 3 or 5 times a power of ten; every digit when the span is short)
    whose log10 lies in [low, high]: the log view's axis is labelled in loss, not in log10."""
    if not high > low:
        return [10 ** low]
    powers = range(math.floor(low), math.ceil(high) + 1)
    for mantissas in ((1, 2, 3, 5), range(1, 10), tuple(m / 10 for m in range(10, 100))):
        values = [m * 10 ** e for e in powers for m in mantissas if low <= math.log10(m * 10 ** e) <= high]
        if len(values) >= 4:
            break
    if len(values) > 7:  # thin out a long axis evenly
        values = values[::math.ceil(len(values) / 6)]
    return values


class LossChart(PlotextPlot):
    """Plots a snapshot's histories against optimizer step or tokens seen.

    Drawing cost is bounded: every series is cut down to about two points per
    plot column before plotext sees it, and the plot is rebuilt only when the
    data, the size, the theme or a view option changed (a textual-plotext plot
    otherwise rebuilds from all its points on every repaint).
    """

    ALLOW_MAXIMIZE = True  # z zooms it to the whole screen

    def __init__(self, *, id: str | None = None, classes: str | None = None,
                 max_data_hz: float = 0.5) -> None:
        super().__init__(id=id, classes=classes)
        self.snapshot: RunSnapshot | None = None
        self.log_scale = False
        self.x_axis = "step"  # or "tokens"
        self.smoothing = 0.8
        self._data_key: tuple = ()
        self._pacer = RedrawPacer(self, self._redraw_for_data, max_data_hz)
        self._drawn_key: tuple | None = None
        self._drawn = None
        self._train_columns = HistoryColumns(0, 1, 2)  # step, tokens seen, loss
        self._lr_columns = HistoryColumns(0, 1)  # step, learning rate

    # ------------------------------------------------------------ view options
    def show(self, snapshot: RunSnapshot) -> None:
        """Take a new snapshot; redraw for new data at most ``max_data_hz`` times a second.

        Rebuilding the plot is the costliest thing the studio draws, and a curve
        that moves once a second reads as well as one that moves four times.
        """
        self.snapshot = snapshot
        if self._data_key_of(snapshot) != self._data_key:
            self._pacer.data_changed()

    @staticmethod
    def _data_key_of(snapshot: RunSnapshot) -> tuple:
        return (len(snapshot.train_history), snapshot.train_history[-1:],
                len(snapshot.eval_history), snapshot.lr_history[-1:])

    def _redraw_for_data(self) -> None:
        self._data_key = self._data_key_of(self.snapshot)
        self.refresh()

    @property
    def max_data_hz(self) -> float:
        return self._pacer.max_hz

    @max_data_hz.setter
    def max_data_hz(self, hz: float) -> None:
        self._pacer.max_hz = hz

    def toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._options_changed()

    def toggle_x_axis(self) -> None:
        self.x_axis = "tokens" if self.x_axis == "step" else "step"
        self._options_changed()

    def adjust_smoothing(self, direction: int) -> None:
        """Move to the next smoother (+1) or rougher (-1) smoothing weight."""
        self.smoothing = next_smoothing(self.smoothing, direction)
        self._options_changed()

    def _options_changed(self) -> None:
        self.border_subtitle = self.describe_view()
        self.refresh()

    def _legend_title(self, palette) -> Content:
        """"Loss" and each series' mark in its colour: the chart's legend, kept in its border so
        it never covers a curve (plotext draws its own legend over the plot)."""
        parts: list = ["Loss "]
        lr = "lr (right axis)" if self.size.width >= WIDE_LEGEND else "lr"
        for mark, name, color in (("⠒", "train", palette.train), ("▄", "smoothed", palette.smooth),
                                  ("•", "val", palette.val), ("⠒", lr, palette.lr)):
            parts += [(f" {mark}", f"bold {color.hex}"), name]
        return Content.assemble(*parts)

    def describe_view(self) -> str:
        scale = "log" if self.log_scale else "linear"
        return f"x: {self.x_axis} · {scale} · smoothing {self.smoothing:.2f}"

    def on_mount(self) -> None:
        super().on_mount()
        self.border_subtitle = self.describe_view()
        # Series colours come from the theme: rebuild when it changes.
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    # ----------------------------------------------------------------- drawing
    def render(self):
        key = (self._data_key, self.size, self.app.theme, self.log_scale, self.x_axis,
               self.smoothing)
        if key != self._drawn_key or self._drawn is None:
            self._plot_series()
            self._drawn = super().render()
            self._drawn_key = key
        return self._drawn

    def series(self, columns: int) -> dict[str, list[tuple[float, float]]]:
        """The points to draw, already transformed, smoothed and downsampled."""
        snap = self.snapshot
        if snap is None:
            return {"train": [], "smoothed": [], "val": [], "lr": []}
        steps, tokens, loss = self._train_columns(snap.train_history)
        val_steps, val_tokens, val_loss = columns_of(
            [(e.step, e.tokens_seen, e.val_loss) for e in snap.eval_history], 0, 1, 2)
        lr_steps, lr = self._lr_columns(snap.lr_history)
        if self.x_axis == "tokens":
            scale, _ = _token_unit(tokens[-1] if tokens.size else 0)
            lr_x = interpolate_x(lr_steps, steps, tokens) / scale
            train_x, val_x = tokens / scale, val_tokens / scale
        else:
            train_x, val_x, lr_x = steps, val_steps, lr_steps
        train = finite(train_x, loss)
        smoothed = (train[0], ema(train[1], self.smoothing))
        val, lr_points = finite(val_x, val_loss), finite(lr_x, lr)
        if self.log_scale:
            train, smoothed, val, lr_points = (log10(*p) for p in (train, smoothed, val, lr_points))
        shaped = {"train": downsample(*train, columns), "smoothed": downsample(*smoothed, columns),
                  "val": downsample(*val, columns // 2), "lr": downsample(*lr_points, columns)}
        return {name: list(zip(x.tolist(), y.tolist())) for name, (x, y) in shaped.items()}

    def _x_unit(self) -> str:
        """The unit the x values were divided by ("k", "M"...; none for steps)."""
        snap = self.snapshot
        if self.x_axis != "tokens" or snap is None or not snap.train_history:
            return ""
        return _token_unit(snap.train_history[-1][1])[1]

    def _plot_series(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        palette = studio_palette(self.app)
        columns = max(10, self.size.width - 12)  # less the y-axis labels
        series = self.series(columns)
        suffix = " (log scale)" if self.log_scale else ""
        title = self._legend_title(palette)
        if title != self.border_title:
            self.border_title = title
        # A short chart gives its rows to the curves: the axis titles go (the subtitle still
        # says what x is, and the tick labels carry their unit).
        compact = self.size.height < COMPACT_ROWS
        if compact:
            plt.xlabel("")
            plt.ylabel("", yside="left")
            plt.ylabel("", yside="right")
        else:
            plt.xlabel("tokens seen" if self.x_axis == "tokens" else "optimizer step")
            plt.ylabel(f"loss{suffix}", yside="left")
            if series["lr"]:
                plt.ylabel(f"learning rate{suffix}", yside="right")
        if not any(series.values()):
            plt.title("waiting for the first optimizer step")
            return
        # Raw loss in fine braille dots, the smoothed line in bolder half blocks
        # on top, validation points as bullets: three series that stay apart. No plotext
        # labels: its legend is drawn inside the plot, over the curves.
        if series["train"]:
            xs, ys = zip(*series["train"])
            plt.plot(xs, ys, color=_rgb(palette.train), marker="braille")
        if series["smoothed"]:
            xs, ys = zip(*series["smoothed"])
            plt.plot(xs, ys, color=_rgb(palette.smooth), marker="hd")
        if series["val"]:
            xs, ys = zip(*series["val"])
            plt.scatter(xs, ys, color=_rgb(palette.val), marker="•")
        every_x = [x for points in series.values() for x, _ in points]
        if every_x:
            ticks = nice_ticks(min(every_x), max(every_x))
            plt.xticks(ticks, tick_labels(ticks, self._x_unit()))
        if series["lr"]:
            xs, ys = zip(*series["lr"])
            plt.plot(xs, ys, color=_rgb(palette.lr), marker="braille", yside="right")
        if self.log_scale:  # the points are log10 values: label the axes with what they stand for
            for side, names in (("left", ("train", "smoothed", "val")), ("right", ("lr",))):
                ys = [y for name in names for _, y in series[name]]
                if ys:
                    values = log_ticks(min(ys), max(ys))
                    plt.yticks([math.log10(v) for v in values], [f"{v:.3g}" for v in values], yside=side)
