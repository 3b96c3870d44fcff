"""Several runs on one chart: each run's validation loss, and its smoothed training loss,
against optimizer step or tokens seen, each named in the legend in a colour of its own."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from textual.color import Color
from textual_plotext import PlotextPlot

from gemma_tui.palette import studio_palette
from gemma_tui.series import downsample, ema, finite, log10
from gemma_tui.widgets.loss_chart import _token_unit, log_ticks, next_smoothing, nice_ticks


@dataclass(frozen=True)
class RunCurves:
    """What one run's logs say, as columns: the training steps and the evaluations."""

    name: str  # as the legend shows it
    steps: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    val_steps: np.ndarray
    val_tokens: np.ndarray
    val_loss: np.ndarray


# A run's colour: the theme's own series colours first, then colours apart from them.
EXTRA_COLORS = ("#e06c75", "#56b6c2", "#c678dd", "#d19a66", "#98c379", "#61afef")


class CompareChart(PlotextPlot):
    """Validation (points joined by a line) and smoothed training loss (fine dots) per run."""

    ALLOW_MAXIMIZE = True

    def __init__(self, runs: list[RunCurves], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs = runs
        self.x_axis = "step"  # or "tokens"
        self.log_scale = False
        self.show_training = True
        self.smoothing = 0.9

    def set_runs(self, runs: list[RunCurves]) -> None:
        self.runs = runs
        self.refresh()

    def colors(self) -> list[Color]:
        palette = studio_palette(self.app)
        theme = [palette.val, palette.smooth, palette.lr, palette.full]
        unique = list(dict.fromkeys(c.hex for c in theme)) + [c for c in EXTRA_COLORS]
        return [Color.parse(unique[i % len(unique)]) for i in range(len(self.runs))]

    def toggle_x_axis(self) -> None:
        self.x_axis = "tokens" if self.x_axis == "step" else "step"
        self._view_changed()

    def toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._view_changed()

    def toggle_training(self) -> None:
        self.show_training = not self.show_training
        self._view_changed()

    def _view_changed(self) -> None:
        self.border_subtitle = self.describe_view()  # the view's options, said under the chart
        self.refresh()

    def adjust_smoothing(self, direction: int) -> None:
        self.smoothing = next_smoothing(self.smoothing, direction)
        self._view_changed()

    def describe_view(self) -> str:
        training = f"training smoothed {self.smoothing:.2f}" if self.show_training else "validation only"
        return f"x: {self.x_axis} · {'log' if self.log_scale else 'linear'} · {training}"

    def on_mount(self) -> None:
        super().on_mount()
        self.border_subtitle = self.describe_view()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    def render(self):
        self._draw_curves()
        return super().render()

    def _draw_curves(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        columns = max(10, self.size.width - 12)
        largest_tokens = max((float(run.tokens[-1]) for run in self.runs if run.tokens.size), default=0.0)
        scale, unit = _token_unit(largest_tokens) if self.x_axis == "tokens" else (1.0, "")
        plt.xlabel(f"tokens seen{f' ({unit})' if unit else ''}" if self.x_axis == "tokens" else "optimizer step")
        plt.ylabel("validation loss" + (" and smoothed training loss" if self.show_training else "")
                   + (" (log scale)" if self.log_scale else ""))
        every_x: list[float] = []
        every_y: list[float] = []

        def draw(x, y, marker: str, label: str, smoothing: float | None = None) -> None:
            points = finite(x, y)
            if smoothing is not None:
                points = (points[0], ema(points[1], smoothing))
            if self.log_scale:
                points = log10(*points)
            xs, ys = downsample(*points, columns)
            if xs.size:
                plt.plot(xs.tolist(), ys.tolist(), color=color.rgb, marker=marker, label=label)
                every_x.extend((float(xs[0]), float(xs[-1])))
                every_y.extend((float(ys.min()), float(ys.max())))

        by_tokens = self.x_axis == "tokens"
        for run, color in zip(self.runs, self.colors()):
            if self.show_training and run.loss.size:
                draw(run.tokens / scale if by_tokens else run.steps, run.loss, "braille", f"{run.name} train",
                     self.smoothing)
            draw(run.val_tokens / scale if by_tokens else run.val_steps, run.val_loss, "•",
                 f"{run.name} validation")
        if not every_x:
            plt.title("no training steps or evaluations logged yet")
            return
        ticks = nice_ticks(min(every_x), max(every_x))
        plt.xticks(ticks, [f"{t:g}" for t in ticks])
        if self.log_scale:  # the points are log10 values: label the axis with the losses
            values = log_ticks(min(every_y), max(every_y))
            plt.yticks([math.log10(v) for v in values], [f"{v:.3g}" for v in values])
