"""``gemma-tui compare RUN RUN ...``: runs side by side on one chart, read from their logs.

Each run's logs are read in full once, then every few seconds only what a live run has
appended; a run that has ended is never read again. All reading happens off the UI
thread. The comparison ends when its terminal goes away (closed, or hung up).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header

from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.run.history import LossCurveFollower
from gemma_tui.terminal_watch import end_on_stop_signal_or_lost_terminal
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


def check_runs(folders: list[Path]) -> None:
    """Every folder compared holds a run; one that does not is said by name."""
    for folder in folders:
        if not layout.holds_run(folder):
            raise UserError(f"{folder}: holds no run (no config.json, logs or checkpoint); "
                            "gemma-tui open lists the runs under a folder")


def curves_of(name: str, run: LossCurveFollower) -> RunCurves:
    train, val = run.train.columns, run.val.columns
    return RunCurves(name, train.steps, train.tokens, train.loss, val.steps, val.tokens, val.loss)


def read_curves(folders: list[Path]) -> list[RunCurves]:
    """Each run's training and validation history, read in full; a folder without a run, or a
    damaged log line, is said by name."""
    check_runs(folders)
    curves = []
    for folder, name in zip(folders, run_names(folders)):
        run = LossCurveFollower(folder)
        run.read_appended()
        damage = run.take_damage()
        if damage:
            raise UserError(damage[0])
        curves.append(curves_of(name, run))
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

    # The process's signals and terminal are the app's only when it runs for real (not under run_test).
    interrupted = False  # a signal or a lost terminal ended it: the command exits 130

    def __init__(self, folders: list[Path], theme: str | None = None) -> None:
        super().__init__()
        check_runs(folders)  # a bad folder is said first
        self.runs = [LossCurveFollower(folder) for folder in folders]
        self.names = run_names(folders)
        self.chart = CompareChart([], id="compare-chart")
        self.refusal: UserError | None = None  # what made the first reading fail, said once the app is gone
        self._stop_reading = threading.Event()
        use_studio_themes(self, theme)
        self.sub_title = f"comparing {len(folders)} runs"

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.chart
        yield Footer()

    async def on_mount(self) -> None:
        self.chart.border_title = "Loss by run (reading the logs)"
        if not self.is_headless:
            end_on_stop_signal_or_lost_terminal(self, self.end_interrupted)
        try:
            damage = await self.read_logs()
        except UserError as err:  # a log that cannot be read
            damage = [str(err)]
        if damage:  # a damaged log is refused, as a folder without a run is, before anything is shown
            self.refusal = UserError(damage[0])
            self.exit()
            return
        self.chart.border_title = "Loss by run"
        self.set_interval(RELOAD_S, self.reload)

    async def read_logs(self) -> list[str]:
        """Read what each run's logs gained (in a thread) and show it; the damaged lines met."""
        curves = await asyncio.to_thread(self._read_appended)
        if self._stop_reading.is_set():  # the app is ending: what was read is not shown
            return []
        self.chart.set_runs(curves)
        return [line for run in self.runs for line in run.take_damage()]

    def _read_appended(self) -> list[RunCurves]:
        for run in self.runs:
            run.read_appended(self._stop_reading)  # a run that ended returns at once
        return [curves_of(name, run) for name, run in zip(self.names, self.runs)]

    async def reload(self) -> None:
        try:
            damage = await self.read_logs()
        except UserError as err:  # a run folder went away or broke while shown: keep what was read
            damage = [str(err)]
        for line in damage:
            self.notify(line, severity="warning", timeout=10)

    def end_interrupted(self) -> None:
        self.interrupted = True
        self.exit()

    def exit(self, *args, **kwargs) -> None:
        self._stop_reading.set()  # a read under way stops at its next block
        super().exit(*args, **kwargs)

    def run(self, *args, **kwargs):
        """Run; then a damaged log is refused (exit 2) and an interruption is one (exit 130)."""
        result = super().run(*args, **kwargs)
        if self.refusal is not None:
            raise self.refusal
        if self.interrupted:
            raise KeyboardInterrupt
        return result

    def action_x_axis(self) -> None:
        self.chart.toggle_x_axis()

    def action_log_scale(self) -> None:
        self.chart.toggle_log_scale()

    def action_training(self) -> None:
        self.chart.toggle_training()

    def action_smoothing(self, direction: int) -> None:
        self.chart.adjust_smoothing(direction)
