"""Several runs on one chart: each run's validation loss, and its smoothed training loss,
against optimizer step or tokens seen, each in a colour of its own named by ``legend()``
(shown beside the plot, never inside it: plotext's own legend covers the curves)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from textual.color import Color
from textual.content import Content
from textual.message import Message
from textual_plotext import PlotextPlot

from gemma_tui.palette import studio_palette
from gemma_tui.series import downsample, ema, finite, log10
from gemma_tui.widgets.loss_chart import _token_unit, log_ticks, next_smoothing, nice_ticks, tick_labels


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
        self.isolated: str | None = None  # the one run shown (Enter on its row of the table)

    def set_runs(self, runs: list[RunCurves]) -> None:
        self.runs = runs
        self.refresh()

    def colors(self) -> list[Color]:
        palette = studio_palette(self.app)
        theme = [palette.val, palette.smooth, palette.lr, palette.full]
        unique = list(dict.fromkeys(c.hex for c in theme)) + [c for c in EXTRA_COLORS]
        return [Color.parse(unique[i % len(unique)]) for i in range(len(self.runs))]

    def _shown_with_colors(self) -> list[tuple[RunCurves, Color]]:
        """The runs drawn, each in its colour among all the runs (isolating one keeps its colour)."""
        return [(run, color) for run, color in zip(self.runs, self.colors())
                if self.isolated is None or run.name == self.isolated]

    def shown_runs(self) -> list[RunCurves]:
        return [run for run in self.runs if self.isolated is None or run.name == self.isolated]

    def isolate(self, name: str | None) -> None:
        """Show only the run named ``name`` (None: every run)."""
        self.isolated = name
        self._view_changed()

    def legend(self) -> Content:
        """Each run's name in its colour, then what the two marks mean."""
        parts: list = []
        for run, color in self._shown_with_colors():
            parts += [("■ ", f"bold {color.hex}"), run.name, "   "]
        key = "• validation" + ("   ⠒ training (smoothed)" if self.show_training else "")
        return Content.assemble(*parts, (key, "$text-muted"))

    def toggle_x_axis(self) -> None:
        self.x_axis = "tokens" if self.x_axis == "step" else "step"
        self._view_changed()

    def toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._view_changed()

    def toggle_training(self) -> None:
        self.show_training = not self.show_training
        self._view_changed()

    class ViewChanged(Message):
        """The view's options changed: the pane around the chart says them again."""

    def _view_changed(self) -> None:
        self.post_message(self.ViewChanged())
        self.refresh()

    def adjust_smoothing(self, direction: int) -> None:
        self.smoothing = next_smoothing(self.smoothing, direction)
        self._view_changed()

    def describe_view(self) -> str:
        training = f"training smoothed {self.smoothing:.2f}" if self.show_training else "validation only"
        return f"x: {self.x_axis} · {'log' if self.log_scale else 'linear'} · {training}"

    def on_mount(self) -> None:
        super().on_mount()
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
        plt.xlabel("tokens seen" if self.x_axis == "tokens" else "optimizer step")
        plt.ylabel("validation loss" + (" and smoothed training loss" if self.show_training else "")
                   + (" (log scale)" if self.log_scale else ""))
        every_x: list[float] = []
        every_y: list[float] = []

        def draw(x, y, marker: str, smoothing: float | None = None) -> None:
            points = finite(x, y)
            if smoothing is not None:
                points = (points[0], ema(points[1], smoothing))
            if self.log_scale:
                points = log10(*points)
            xs, ys = downsample(*points, columns)
            if xs.size:
                plt.plot(xs.tolist(), ys.tolist(), color=color.rgb, marker=marker)
                every_x.extend((float(xs[0]), float(xs[-1])))
                every_y.extend((float(ys.min()), float(ys.max())))

        by_tokens = self.x_axis == "tokens"
        for run, color in self._shown_with_colors():
            if self.show_training and run.loss.size:
                draw(run.tokens / scale if by_tokens else run.steps, run.loss, "braille", self.smoothing)
            draw(run.val_tokens / scale if by_tokens else run.val_steps, run.val_loss, "•")
        if not every_x:
            plt.title("no training steps or evaluations logged yet")
            return
        ticks = nice_ticks(min(every_x), max(every_x))
        plt.xticks(ticks, tick_labels(ticks, unit))
        if self.log_scale:  # the points are log10 values: label the axis with the losses
            values = log_ticks(min(every_y), max(every_y))
            plt.yticks([math.log10(v) for v in values], [f"{v:.3g}" for v in values])
