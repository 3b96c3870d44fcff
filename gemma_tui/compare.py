"""``gemma-tui compare RUN RUN ...``: runs side by side on one chart, read from their logs.

A live run's curves grow: the logs are read again every few seconds.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header

from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.run.history import read_run_history
from gemma_tui.series import columns_of
from gemma_tui.themes import use_studio_themes
from gemma_tui.widgets.compare_chart import CompareChart, RunCurves

RELOAD_S = 5.0


def run_names(folders: list[Path]) -> list[str]:
    """Each run's folder name; where two share one, enough of the path above to tell them apart."""
    parts = [folder.resolve().parts for folder in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(folder) for folder in folders]


def read_curves(folders: list[Path]) -> list[RunCurves]:
    """Each run's training and validation history; a folder without a run is said by name."""
    curves = []
    for folder, name in zip(folders, run_names(folders)):
        if not layout.holds_run(folder):
            raise UserError(f"{folder}: holds no run (no config.json, logs or checkpoint); "
                            "gemma-tui open lists the runs under a folder")
        history = read_run_history(folder, 0)
        steps, tokens, loss = columns_of([(m.step, m.tokens_seen, m.loss) for m in history.steps], 0, 1, 2)
        val_steps, val_tokens, val_loss = columns_of(
            [(e.step, e.tokens_seen, e.val_loss) for e in history.evals], 0, 1, 2)
        curves.append(RunCurves(name, steps, tokens, loss, val_steps, val_tokens, val_loss))
    return curves


class CompareApp(App):
    TITLE = "Gemma Studio"
    CSS = """
    CompareChart { height: 1fr; border: round $foreground 30%; border-title-color: $text-muted;
                   border-subtitle-color: $text-muted; }
    """
    BINDINGS = [
        Binding("q,escape", "quit", "Quit"),
        Binding("t", "x_axis", "Step/tokens"),
        Binding("l", "log_scale", "Log y"),
        Binding("g", "training", "Training curves"),
        Binding("left_square_bracket", "smoothing(-1)", "Smooth-", key_display="["),
        Binding("right_square_bracket", "smoothing(1)", "Smooth+", key_display="]"),
    ]

    def __init__(self, folders: list[Path], theme: str | None = None) -> None:
        super().__init__()
        self.folders = folders
        self.chart = CompareChart(read_curves(folders), id="compare-chart")  # a bad folder is said first
        use_studio_themes(self, theme)
        self.sub_title = f"comparing {len(folders)} runs"

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.chart
        yield Footer()

    def on_mount(self) -> None:
        self.chart.border_title = "Loss by run"
        self.set_interval(RELOAD_S, self.reload)

    def reload(self) -> None:
        try:
            self.chart.set_runs(read_curves(self.folders))
        except UserError as err:  # a run folder went away or broke while shown: keep what was read
            self.notify(str(err), severity="warning", timeout=10)

    def action_x_axis(self) -> None:
        self.chart.toggle_x_axis()

    def action_log_scale(self) -> None:
        self.chart.toggle_log_scale()

    def action_training(self) -> None:
        self.chart.toggle_training()

    def action_smoothing(self, direction: int) -> None:
        self.chart.adjust_smoothing(direction)
