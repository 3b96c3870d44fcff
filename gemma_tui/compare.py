"""``gemma-tui compare RUN RUN ...``: runs side by side on one chart, read from their logs,
and as a table (``v``): each run's preset, the settings that differ, its best and final
validation loss and bits per byte, steps, tokens and training time; Enter on a row shows
that run's curves alone (Esc: every run again). ``o`` exports the chart (PNG, SVG, CSV) into
the current folder.

Each run's logs are read in full once, then every few seconds only what a live run has
appended; a run that has ended is never read again. All reading happens off the UI
thread. The comparison ends when its terminal goes away (closed, or hung up).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Header, Static

from gemma_core.errors import UserError
from gemma_core.run import layout
from gemma_core.run.history import LossCurveFollower
from gemma_core.run.run_summary import RunSummaryFollower
from gemma_tui.chart_export import ChartExporter, compared_chart
from gemma_tui.terminal_watch import end_on_stop_signal_or_lost_terminal
from gemma_tui.themes import use_studio_themes
from gemma_tui.widgets.compare_chart import CompareChart, RunCurves
from gemma_tui.widgets.compare_table import CompareTable

RELOAD_S = 5.0
BOTH_FROM = (120, 40)  # columns, rows: from this size the chart and the table are shown together


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
    #compare-pane { height: 1fr; border: round $foreground 30%; border-title-color: $text-muted;
                    border-subtitle-color: $text-muted; }
    #compare-legend { height: auto; padding: 0 1; }
    CompareChart { height: 1fr; }
    #compare-table { height: 1fr; border: round $foreground 30%; border-title-color: $text-muted;
                     border-subtitle-color: $text-muted; }
    #compare-table.-under-chart { height: auto; max-height: 45%; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("escape", "back", "Back", show=False),  # a run shown alone: every run again; else quit
        Binding("v", "switch_view", "Table/chart"),
        Binding("o", "export_chart", "Export"),
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
        # Each run's table row takes its evaluations as its curves are read (one read of each log).
        self.summaries = [RunSummaryFollower(folder) for folder in folders]
        self.runs = [LossCurveFollower(folder, summary) for folder, summary in zip(folders, self.summaries)]
        self.names = run_names(folders)
        self.chart = CompareChart([], id="compare-chart")
        # The legend is a row of its own above the plot: inside it, it would cover the curves.
        self.legend = Static("", id="compare-legend")
        self.pane = Vertical(self.legend, self.chart, id="compare-pane")
        self.table = CompareTable(id="compare-table")
        self.view: str | None = None  # "chart", "table" or "both"; None: as the terminal's size suits
        self._view_before_isolating: str | None = None
        self.exporter = ChartExporter(self)
        self.refusal: UserError | None = None  # what made the first reading fail, said once the app is gone
        self._stop_reading = threading.Event()
        use_studio_themes(self, theme)
        self.sub_title = f"comparing {len(folders)} runs"

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.pane
        yield self.table
        yield Footer()

    async def on_mount(self) -> None:
        self.pane.border_title = "Loss by run (reading the logs)"
        self.show_view()
        self.apply_view()
        self.theme_changed_signal.subscribe(self, lambda _theme: self.show_view())  # the runs' colours
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
        self.pane.border_title = "Loss by run"
        self.set_interval(RELOAD_S, self.reload)

    async def read_logs(self) -> list[str]:
        """Read what each run's logs gained (in a thread) and show it; the damaged lines met."""
        curves = await asyncio.to_thread(self._read_appended)
        if self._stop_reading.is_set():  # the app is ending: what was read is not shown
            return []
        self.chart.set_runs(curves)
        self.table.set_runs(self.names, [summary.summary for summary in self.summaries])
        self.show_view()
        return [line for run in self.runs for line in run.take_damage()]

    def _read_appended(self) -> list[RunCurves]:
        for run, summary in zip(self.runs, self.summaries):
            if not run.ended:  # its table row too is read once more after it ended, then never
                run.read_appended(self._stop_reading)
                summary.refresh()
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

    def show_view(self) -> None:
        """The legend and, under the chart, the view's options."""
        self.legend.update(self.chart.legend())
        self.pane.border_subtitle = self.chart.describe_view()

    def on_compare_chart_view_changed(self, _event: CompareChart.ViewChanged) -> None:
        self.show_view()

    def action_x_axis(self) -> None:
        self.chart.toggle_x_axis()

    def action_log_scale(self) -> None:
        self.chart.toggle_log_scale()

    def action_training(self) -> None:
        self.chart.toggle_training()

    def action_smoothing(self, direction: int) -> None:
        self.chart.adjust_smoothing(direction)

    # ------------------------------------------------------------ table and export
    def _large(self) -> bool:
        return self.size.width >= BOTH_FROM[0] and self.size.height >= BOTH_FROM[1]

    def apply_view(self) -> None:
        """Show the chart, the table or (where the terminal is large) both, one above the other."""
        if self.view is None:
            self.view = "both" if self._large() else "chart"
        view = "chart" if self.view == "both" and not self._large() else self.view
        with self.batch_update():
            self.pane.display = view in ("chart", "both")
            self.table.display = view in ("table", "both")
            self.table.set_class(view == "both", "-under-chart")
        if view != "chart":
            self.table.focus()

    def on_resize(self, _event: events.Resize) -> None:
        self.apply_view()

    def action_switch_view(self) -> None:
        """Chart, table and, where the terminal is large, both: each press the next."""
        views = ("both", "chart", "table") if self._large() else ("chart", "table")
        current = "chart" if self.view == "both" and not self._large() else self.view
        self.view = views[(views.index(current) + 1) % len(views)] if current in views else views[0]
        self.apply_view()

    def on_compare_table_run_chosen(self, event: CompareTable.RunChosen) -> None:
        """Enter on a run's row: its curves alone on the chart, in its own colour (Esc: every run)."""
        if self.chart.isolated is None:
            self._view_before_isolating = self.view
        self.chart.isolate(event.name)
        self.pane.border_title = f"Loss: {event.name} alone · Esc: every run"
        if self.view == "table":
            self.view = "chart"
        self.apply_view()

    def action_back(self) -> None:
        if self.chart.isolated is None:
            self.exit()
            return
        self.chart.isolate(None)
        self.pane.border_title = "Loss by run"
        self.view = self._view_before_isolating or self.view
        self.apply_view()

    def action_export_chart(self) -> None:
        """The chart as shown (its runs, axis, smoothing, scale) to PNG, SVG and CSV, here."""
        curves, view = compared_chart(self.chart)
        self.exporter.export(curves, view, Path.cwd(), "compare")

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Export chart", "The chart as PNG and SVG, its series as CSV, into the current "
                            "folder (o)", self.action_export_chart)
        yield SystemCommand("Table / chart", "The runs as a table (sortable; Enter shows one run's curves), "
                            "the chart, or both (v)", self.action_switch_view)
