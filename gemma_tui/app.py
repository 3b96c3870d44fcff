"""The studio: a Textual app that watches an engine's snapshots and drives its controls.

The app never blocks the trainer: it polls ``engine.snapshot()`` (immutable,
cheap) a few times a second on a timer and calls the engine's non-blocking
controls. Nothing here runs on, or waits for, the training thread, except the
final join when quitting, after the engine has been asked to save and stop.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable

from textual.app import App, ComposeResult, SystemCommand
from textual import events
from textual.actions import SkipAction
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Header

from gemma_core.errors import UserError, internal_message
from gemma_core.safe_text import printable
from gemma_core.telemetry import TelemetrySampler
from gemma_core.run.events import RunSnapshot, RunState
from gemma_core.run.handle import RunHandle
from gemma_tui import formatting as fmt
from gemma_tui import pane_fit
from gemma_tui.chat_transcript import append_to_transcript, read_transcript
from gemma_tui.chart_export import EXPORTS, ChartExporter, studio_chart
from gemma_tui import notifications
from gemma_tui.preferences import Preferences
from gemma_tui.screens.confirm import ConfirmScreen
from gemma_tui.screens.charts import ChartsScreen
from gemma_tui.screens.help import HelpScreen
from gemma_tui.screens.inspect import InspectScreen, default_prompt
from gemma_tui.screens.quit_choice import KEEP, STOP, QuitChoiceScreen
from gemma_tui.screens.samples import SamplesScreen
from gemma_tui.terminal_watch import end_on_stop_signal_or_lost_terminal
from gemma_tui.themes import DEFAULT_THEME, FALLBACK_THEME, ThemeFileError, discover_themes, load_theme_file
from gemma_tui.widgets.chat_panel import ChatPanel, read_sampling_params
from gemma_tui.widgets.gpu_panel import GpuPanel
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart
from gemma_tui.widgets.run_stats import RunStats

# States in which the training thread is doing work worth a checkpoint.
ACTIVE_STATES = frozenset({RunState.STARTING, RunState.RUNNING, RunState.PAUSED,
                           RunState.EVALUATING, RunState.SAVING})
# How often the panes take a new snapshot, and the chart and layer map redraw, while a run
# trains on a GPU and on a CPU (where the studio's drawing is taken from training: see
# ``_paced_out``).
GPU_POLL_HZ, CPU_POLL_HZ = 2.0, 0.5
GPU_CHART_HZ, CPU_CHART_HZ = 0.5, 0.25
# Actions that only mean something while a run trains (greyed out otherwise).
CONTROL_ACTIONS = frozenset({"toggle_pause", "save_now", "eval_now", "stop_training"})
STUDIO_ACTIONS = CONTROL_ACTIONS | {"quit", "toggle_log_scale", "toggle_x_axis", "smoothing",
                                    "focus_chat", "cancel_reply", "change_theme", "help", "zoom", "inspect",
                                    "copy_reply", "show_hidden_pane", "show_charts",
                                    "show_samples", "toggle_notifications", "export_chart",
                                    "cycle_layer_shading", "toggle_token_probabilities"}


TALL_ROWS = 36  # from this many rows the chat shows its settings under a rule
# The panes in the order ``m`` shows those the terminal has no room for.
PANE_IDS = ("#loss-chart", "#chat", "#run-stats", "#layer-map", "#gpu-panel")


class GemmaStudio(App):
    TITLE = "Gemma Studio"
    CSS_PATH = "studio.tcss"
    AUTO_FOCUS = "#layer-map"  # not the prompt: one-letter keys work from the start
    # The screen gets one class per size band (studio.tcss arranges the panes for each):
    # 80x24 and 100x30 terminals get a narrower side column, a wide one a wider side column;
    # how the rows are shared is worked out from what each pane has to show (``_fit_panes``).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-medium"), (200, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_ROWS, "-tall")]
    # Quitting waits this long for the trainer to finish its step and save; a run
    # still tokenizing stops within a second.
    QUIT_TIMEOUT_S = 120.0

    # In the order the footer shows them: what a newcomer needs first, so a narrow terminal
    # cuts the least needed.
    BINDINGS = [
        Binding("q", "quit", "Quit", id="studio.quit"),
        Binding("f1,question_mark", "help", "Help", key_display="F1", id="studio.help"),
        # Shown only while the terminal is too small for some pane: each press zooms the next.
        Binding("m", "show_hidden_pane", "More panes", id="studio.more_panes"),
        Binding("p", "toggle_pause", "Pause/Resume", id="studio.pause"),
        Binding("s", "save_now", "Save", id="studio.save"),
        Binding("e", "eval_now", "Eval", id="studio.eval"),
        Binding("x", "stop_training", "Stop", id="studio.stop"),
        # Priority: the key is acted on the moment it arrives, so what is typed right after it
        # (in the same burst, from a browser or over ssh) already goes to the prompt.
        Binding("slash", "focus_chat", "Chat", key_display="/", id="studio.chat", priority=True),
        Binding("z,f11", "zoom", "Zoom", key_display="z", id="studio.zoom"),
        Binding("c", "copy_reply", "Copy reply", show=False, id="studio.copy_reply"),
        Binding("i", "inspect", "Inspect", show=False, id="studio.inspect"),
        Binding("w", "show_samples", "Samples", show=False, id="studio.samples"),
        Binding("l", "toggle_log_scale", "Log y", id="studio.log_scale"),
        Binding("t", "toggle_x_axis", "Step/tokens", id="studio.x_axis"),
        # o: "output" the chart; not Ctrl+S (terminals take it for flow control), not E (beside e: Eval).
        Binding("o", "export_chart", "Export chart", show=False, id="studio.export_chart"),
        Binding("left_square_bracket", "smoothing(-1)", "Smooth-", key_display="[",
                id="studio.smoothing_down"),
        Binding("right_square_bracket", "smoothing(1)", "Smooth+", key_display="]",
                id="studio.smoothing_up"),
        Binding("escape", "cancel_reply", "Cancel reply", id="studio.cancel_reply"),
        Binding("ctrl+t,T", "change_theme", "Theme", id="studio.theme"),
        # Not in the footer: its keys are listed in help and the palette (F1, Ctrl+P).
        Binding("g", "show_charts", "Charts", show=False, id="studio.charts"),
        Binding("a", "cycle_layer_shading", "Layer shading", show=False, id="studio.layer_shading"),
        # u: how sUre the model was of each token of the chat's replies.
        Binding("u", "toggle_token_probabilities", "Token probabilities", show=False,
                id="studio.token_probabilities"),
    ]

    # A browser keeps some keys before the page sees them (Ctrl+T opens a tab; F1 is a media
    # key on a Mac): in a page the footer shows the other key bound to the same action.
    WEB_KEYS = {"studio.help": "?", "studio.theme": "T"}

    def __init__(self, engine: RunHandle, theme: str | None = None,
                 telemetry: object | None = None, poll_hz: float | None = None,
                 telemetry_hz: float = 1.0, cpu_pace_s: float = 1 / CPU_POLL_HZ,
                 theme_dirs: tuple[Path, ...] | None = None, debug: bool = False) -> None:
        super().__init__()
        self.show_tracebacks = debug  # --debug: a crash shows its full traceback, not one line
        self.engine = engine
        self.telemetry = telemetry if telemetry is not None else TelemetrySampler()
        # None: paced by where the run trains (see ``_paced_out``); a number: that rate, always.
        self.fixed_poll_hz = poll_hz
        self.poll_hz = poll_hz if poll_hz is not None else GPU_POLL_HZ
        self.telemetry_hz = telemetry_hz
        # Seconds between two snapshots while a CPU trains (a browser page's studio waits longer:
        # its browser redraws on the same cores).
        self.cpu_pace_s = cpu_pace_s
        self._drawn_at = -math.inf  # when the panes last took a snapshot
        self._telemetry_at = -math.inf  # when the machine pane last took a reading
        self.snapshot: RunSnapshot | None = None
        self.startup_notices: list[str] = []
        self._paused = False  # what we last asked for, until a snapshot says otherwise
        self._shutting_down = False
        self._quit_deadline: float | None = None
        self._keep_training = False
        # Kept as an attribute: on_unmount cancels its reply after the DOM is gone.
        self.chat_panel = ChatPanel(engine, id="chat")
        self.chart_exporter = ChartExporter(self)  # o: the loss chart to files (a worker writes them)
        self._engine_error_shown = False
        self._transcript_problem_shown = False
        self.run_watcher = notifications.RunWatcher()  # a run's end or divergence, told once
        self.preferences, notice = Preferences.load()
        if notice:
            self.startup_notices.append(notice)
        self._preferences_save_timer = None
        self._fitted_for: tuple | None = None  # what the panes' heights were last worked out from
        self._install_themes(theme or self.preferences.theme, theme_dirs)

    # ------------------------------------------------------------------ themes
    def _install_themes(self, wanted: str | None, theme_dirs: tuple[Path, ...] | None) -> None:
        """Register the studio's themes, then pick ``wanted`` (a name or a .toml path).

        Problems become notices shown once the app runs; the app always starts.
        """
        scan = discover_themes() if theme_dirs is None else discover_themes(theme_dirs)
        for theme in scan.themes:
            self.register_theme(theme)
        self.startup_notices.extend(f"Theme file skipped: {err}" for err in scan.errors)
        name = wanted or DEFAULT_THEME
        if wanted and (wanted.endswith(".toml") or Path(wanted).is_file()):
            try:
                theme = load_theme_file(wanted)
            except ThemeFileError as err:
                self.startup_notices.append(f"Theme not loaded: {err}")
                name = DEFAULT_THEME
            else:
                self.register_theme(theme)
                name = theme.name
        if name not in self.available_themes:
            if wanted:
                self.startup_notices.append(
                    f"Unknown theme {wanted!r}; using {self._fallback_theme()!r}. "
                    "Ctrl+T lists the themes.")
            name = self._fallback_theme()
        self.theme = name

    def _fallback_theme(self) -> str:
        return DEFAULT_THEME if DEFAULT_THEME in self.available_themes else FALLBACK_THEME

    # ----------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="studio"):
            with Vertical(id="main"):
                yield LossChart(id="loss-chart", classes="pane")
                yield self.chat_panel
            with Vertical(id="side"):
                yield RunStats(id="run-stats", classes="pane")
                yield LayerMap(id="layer-map", classes="pane")
                yield GpuPanel(id="gpu-panel", classes="pane")
        yield Footer()

    # Set by ``run_studio`` for a real terminal (never in tests): signals end the studio.
    handles_signals = False
    interrupted = False  # a signal ended the studio (its exit status is then 130)

    def _on_stop_signal(self) -> None:
        """SIGINT, SIGTERM, SIGHUP or a lost terminal end the studio as quitting with "stop"
        does: the run saves a checkpoint (an attached studio just detaches), the terminal is
        restored, and the exit status is 130. Never a run killed unsaved."""
        self.interrupted = True
        if self._shutting_down:
            return
        if not self.engine.owns_run:
            self.chat_panel.cancel_reply()
            self.exit()
            return
        self.shut_down()

    def on_resize(self, event: events.Resize) -> None:
        # After the next layout: the side panes' widths (which decide how their lines wrap)
        # are known then.
        self.call_after_refresh(self._fit_panes)

    def _fit_panes(self) -> None:
        """Share the terminal between the panes so each shows whole, borders included; a pane
        without room for its essentials is hidden (``m`` zooms it), never cut. Cheap, and
        redone only when the size or what a pane has to show changed."""
        if not self.is_running:
            return
        try:
            chart, chat, stats, layers, machine = (self.query_one(pane) for pane in PANE_IDS)
        except NoMatches:  # shutting down
            return
        columns, rows = self.size.width, self.size.height - 2  # less the header and the footer
        side_width = pane_fit.side_width(columns)
        inner = side_width - pane_fit.BORDER - 2  # less the borders and the padding
        key = (columns, rows, stats.wants(inner), layers.rows_wanted(True, inner),
               layers.rows_wanted(False, inner), machine.readings_rows(inner))
        if key == self._fitted_for:
            return
        self._fitted_for = key
        _, _, run_wants, layers_brief, layers_full, readings = key
        plan = pane_fit.plan_side_column(rows if side_width else 0, run_wants, pane_fit.BORDER + layers_brief,
                                         pane_fit.BORDER + layers_full, pane_fit.BORDER + readings)
        with self.batch_update():
            chat.set_class(not pane_fit.chat_fits(rows), "-squeezed")
            side = self.query_one("#side")
            side.display = side_width > 0
            if side_width:
                side.styles.width = side_width
            layers.brief = plan.layers_brief
            machine.history_room = plan.machine_history
            for pane, height in ((stats, plan.run), (layers, plan.layers), (machine, plan.machine)):
                pane.set_class(height is None, "-squeezed")
                pane.styles.height = height  # None: the stylesheet's, so a zoomed hidden pane fills the screen
        self.refresh_bindings()

    def action_show_hidden_pane(self) -> None:
        """Zoom the next pane the terminal has no room for; after the last, back to the rest."""
        hidden = [self.query_one(pane) for pane in PANE_IDS if self.query_one(pane).has_class("-squeezed")]
        if not hidden:
            return
        shown = self.screen.maximized
        following = hidden[hidden.index(shown) + 1:] if shown in hidden else hidden
        if following:
            following[0].styles.height = "1fr"  # the whole screen, whatever its height in the column was
            self.screen.maximize(following[0], container=False)
            # The focus would fall to a field off screen and take the next key as text.
            self.call_after_refresh(self.screen.set_focus, following[0] if following[0].focusable else None)
        else:
            self.screen.minimize()

    def on_mount(self) -> None:
        if self.handles_signals:
            end_on_stop_signal_or_lost_terminal(self, self._on_stop_signal)
        for pane_id, title in (("#loss-chart", "Loss"), ("#layer-map", "Layers"),
                               ("#chat", "Chat"), ("#run-stats", "Run"),
                               ("#gpu-panel", "Machine")):
            self.query_one(pane_id).border_title = title
        for notice in self.startup_notices:
            self.notify(notice, severity="warning", timeout=10)
        self._apply_preferences()
        self.refresh_from_engine()
        self.set_interval(1 / self.poll_hz, self.refresh_from_engine)
        if self.telemetry_hz > 0:
            self.refresh_telemetry()
            self.set_interval(1 / self.telemetry_hz, self.refresh_telemetry)

    # ---------------------------------------------------------------- polling
    def refresh_from_engine(self) -> None:
        """Pull the latest snapshot and redraw what changed (runs on a UI timer)."""
        if not self.is_running:  # shutting down: the panes may already be gone
            return
        try:
            snap = self.engine.snapshot()
        except Exception as err:  # a broken engine is shown, never raised into Textual
            if not self._engine_error_shown:
                self._engine_error_shown = True
                self.notify(f"The engine stopped answering: {printable(str(err))}",
                            title="Engine error", severity="error", timeout=30)
            return
        layer_map = self.query_one(LayerMap)
        config = self.engine.model_config
        if layer_map.config is None and config is not None:
            layer_map.set_config(config)
            self.call_after_refresh(self._fit_panes)  # the map's rows are known now
        if self.snapshot is not None and snap.version == self.snapshot.version:
            return
        if self._paced_out(snap):
            return
        self._drawn_at = time.monotonic()
        previous, self.snapshot = self.snapshot, snap
        with self.batch_update():
            self.query_one(LossChart).show(snap)
            self.query_one(RunStats).show(snap)
            layer_map.show_stats(snap.layer_stats)
            layer_map.show_probe(snap.eval_history)
        self._fit_panes()  # a line more or less in the Run pane (an error, a message)
        if previous is None:
            self._show_earlier_chat(snap)
        if previous is None or previous.state != snap.state:
            self._state_changed(previous, snap)
        for notice in self.run_watcher.observe(snap):
            notifications.announce(self, notice, outside=self.preferences.notifications)
        best, was = snap.best_eval, previous.best_eval if previous is not None else None
        if best is not None and was is not None and best.step != was.step and best.val_loss < was.val_loss:
            self.notify(f"New best validation loss {best.val_loss:.4f} at step {best.step:,} "
                        f"(was {was.val_loss:.4f} at step {was.step:,}).", title="Validation", timeout=8)

    def _paced_out(self, snap: RunSnapshot) -> bool:
        """Whether to skip this snapshot to keep the studio's CPU share small.

        On a CPU the studio's own drawing takes its time from training's two or so
        compute threads (a share of a core costs training more than that share: BENCHMARKS.md), so
        while a run trains there the panes take a snapshot once a second and the
        chart redraws every few seconds; on a GPU twice a second. A change of state
        (paused, saving, finished) is always shown at once."""
        if self.fixed_poll_hz is not None or self.snapshot is None or snap.state != self.snapshot.state:
            return False
        on_cpu = self._trains_on_cpu(snap)
        chart_hz = min(CPU_CHART_HZ, 1 / self.cpu_pace_s) if on_cpu else GPU_CHART_HZ
        self.query_one(LossChart).max_data_hz = chart_hz
        self.query_one(LayerMap).pacer.max_hz = chart_hz
        return on_cpu and time.monotonic() - self._drawn_at < self.cpu_pace_s - 0.05

    def _trains_on_cpu(self, snap: RunSnapshot | None = None) -> bool:
        snap = snap if snap is not None else self.snapshot
        return (self.fixed_poll_hz is None and snap is not None and snap.device.startswith("cpu")
                and snap.state in ACTIVE_STATES)

    def _show_earlier_chat(self, snap: RunSnapshot) -> None:
        """A run opened or attached to shows what was asked of it before (its chat.jsonl)."""
        folder = Path(snap.output_dir)
        if not folder.is_dir():
            return
        records, note = read_transcript(folder)
        self.chat_panel.show_earlier(records)
        if note:
            self.notify(printable(note), severity="warning", timeout=10)

    def _state_changed(self, previous: RunSnapshot | None, snap: RunSnapshot) -> None:
        if snap.state in (RunState.PAUSED, RunState.RUNNING):  # not while saving/evaluating
            self._paused = snap.state == RunState.PAUSED
        parts = [snap.state.value]
        if snap.preset:
            parts.append(f"preset {snap.preset}")
        parts.append(snap.device)
        self.sub_title = " · ".join(p for p in parts if p)
        self.query_one(RunStats).set_class(snap.state == RunState.FAILED, "-failed")
        if snap.state == RunState.FAILED:
            self.notify(printable(snap.error or "no reason given"),
                        title=f"Training failed at step {snap.step:,}", severity="error",
                        timeout=60)
        elif snap.state == RunState.FINISHED and previous is not None:
            self.notify(f"Training finished at step {snap.step:,}.", title="Finished")
        elif snap.state == RunState.STOPPED and previous is not None:
            self.notify(f"Stopped at step {snap.step:,} of {snap.max_steps:,}; "
                        f"{fmt.resume_command(snap.output_dir)} continues it.", title="Stopped", timeout=30)
        self.refresh_bindings()

    def refresh_telemetry(self) -> None:
        if not self.is_running:
            return
        if self._trains_on_cpu() and time.monotonic() - self._telemetry_at < self.cpu_pace_s - 0.05:
            return  # the machine pane too, at the pace of the rest while a CPU trains
        self._telemetry_at = time.monotonic()
        try:
            sample = self.telemetry.sample()
        except Exception:  # telemetry is a nicety: never let it take the studio down
            return
        self.query_one(GpuPanel).show(sample)
        self._fit_panes()  # a GPU's readings take more rows than a CPU's

    # ---------------------------------------------------------------- actions
    @property
    def training_active(self) -> bool:
        state = self.snapshot.state if self.snapshot else RunState.STARTING
        return self.engine.is_alive() and state in ACTIVE_STATES

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if isinstance(self.screen, (ConfirmScreen, QuitChoiceScreen, HelpScreen, InspectScreen, SamplesScreen)) and action in STUDIO_ACTIONS:
            return False  # one question at a time: keys answer it, they do not act behind it
        if action == "show_hidden_pane":  # in the footer only while some pane has no room
            return bool(self.query(".-squeezed"))
        if action in CONTROL_ACTIONS and not (self.training_active and not self._shutting_down):
            return None  # shown greyed out in the footer
        return True

    def action_toggle_pause(self) -> None:
        if self._paused:
            self.engine.unpause()
            self.notify("Resuming training.")
        else:
            self.engine.pause()
            self.notify("Pausing after the current step.")
        self._paused = not self._paused

    def action_save_now(self) -> None:
        self.engine.save_now()
        self.notify("Saving a checkpoint after the current step.")

    def action_eval_now(self) -> None:
        self.engine.eval_now()
        self.notify("Evaluating after the current step.")

    def action_stop_training(self) -> None:
        def answered(stop: bool | None) -> None:
            if stop:
                self.engine.stop(save=True)
                self.notify("Stopping: a checkpoint is saved first.")

        output_dir = self.snapshot.output_dir if self.snapshot else "DIR"
        self.push_screen(ConfirmScreen(
            "Stop training? A checkpoint is saved first; "
            f"{fmt.resume_command(output_dir)} continues the run later.",
            "Stop training"), answered)

    def action_copy_reply(self) -> None:
        reply = self.chat_panel.last_reply()
        if reply is None:
            self.notify("No reply to copy yet: ask the model something first (/).", severity="warning")
            return
        self.copy_to_clipboard(reply)
        self.notify(f"Copied the last reply ({len(reply):,} characters) to the clipboard.")

    def on_chat_panel_reply_finished(self, event: ChatPanel.ReplyFinished) -> None:
        """Keep the exchange in the run folder's chat.jsonl (a run on this machine)."""
        folder = Path(self.snapshot.output_dir) if self.snapshot is not None else None
        if folder is None or not folder.is_dir():
            return
        problem = append_to_transcript(folder, event.exchange)
        if problem and not self._transcript_problem_shown:
            self._transcript_problem_shown = True
            self.notify(f"The chat transcript is not being saved ({printable(problem)}).", severity="warning")

    def action_inspect(self) -> None:
        """The Inspect screen on the weights shown (``i``), with the last chat prompt."""
        output_dir = self.snapshot.output_dir if self.snapshot is not None else None
        self.push_screen(InspectScreen(self.engine, default_prompt(self.engine, self.chat_panel, output_dir)))

    def action_show_charts(self) -> None:
        """Every number the run logs, one chart each (the screen exists only while shown)."""
        if not isinstance(self.screen, ChartsScreen):
            self.push_screen(ChartsScreen())

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_show_samples(self) -> None:
        """What the model wrote at each step: its samples and the chat replies (``w``)."""
        self.push_screen(SamplesScreen())

    def action_toggle_notifications(self) -> None:
        on = not self.preferences.notifications
        self._remember(notifications=on)
        self.notify("A run's end or divergence rings the bell and shows a desktop notification where "
                    "the terminal can." if on else "No bell or desktop notification when a run ends or "
                    "diverges (toasts still show here).", title=f"Notifications {'on' if on else 'off'}")

    def action_zoom(self) -> None:
        """The focused pane (else the chart) fills the screen; again, or Esc, brings the rest back."""
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
            return
        # Every pane allows maximizing; Textual finds the one holding the focus.
        if screen.focused is None or not screen.maximize(screen.focused):
            screen.maximize(self.query_one(LossChart))

    def action_cycle_layer_shading(self) -> None:
        """The Layers pane shaded by grad norm, attention entropy or residual RMS, in turn (``a``)."""
        self.query_one(LayerMap).cycle_shading()
        self.call_after_refresh(self._fit_panes)  # its legend may take a line more

    def action_toggle_token_probabilities(self) -> None:
        """The chat's replies shaded by the model's probability for each token, or plain (``u``)."""
        on = not self.chat_panel.shows_probabilities
        self.chat_panel.show_probabilities(on)
        self._remember(token_probabilities=on)

    def action_toggle_log_scale(self) -> None:
        self.query_one(LossChart).toggle_log_scale()

    def action_toggle_x_axis(self) -> None:
        self.query_one(LossChart).toggle_x_axis()

    def action_export_chart(self) -> None:
        """The loss chart as shown to PNG, SVG and CSV in the run folder's exports/ (see chart_export)."""
        curves, view = studio_chart(self.query_one(LossChart))
        folder = Path(self.snapshot.output_dir) if self.snapshot is not None else Path.cwd()
        # An attached studio may watch a run on another machine: then the current folder.
        self.chart_exporter.export(curves, view, (folder if folder.is_dir() else Path.cwd()) / EXPORTS, "loss")

    def action_smoothing(self, direction: int) -> None:
        # The chart's subtitle shows the weight as it changes: no toast per key press.
        chart = self.query_one(LossChart)
        chart.adjust_smoothing(direction)
        self._remember(smoothing=chart.smoothing)

    # ------------------------------------------------------------- preferences
    def _apply_preferences(self) -> None:
        prefs = self.preferences
        if prefs.smoothing is not None and 0.0 <= prefs.smoothing < 1.0:
            chart = self.query_one(LossChart)
            chart.smoothing = prefs.smoothing
            chart.border_subtitle = chart.describe_view()
        try:  # only settings that once started a reply are saved; still, check them again
            read_sampling_params(prefs.chat)
        except UserError:
            prefs.chat = {}
        self.chat_panel.set_settings_text(prefs.chat)
        if prefs.token_probabilities:
            self.chat_panel.show_probabilities(True)
        self.theme_changed_signal.subscribe(self, lambda theme: self._remember(theme=theme.name))

    def on_chat_panel_settings_used(self, event: ChatPanel.SettingsUsed) -> None:
        if event.settings != self.preferences.chat:
            self._remember(chat=event.settings)

    def _remember(self, **changes) -> None:
        """Change the saved preferences; written a moment later, once typing settles."""
        for name, value in changes.items():
            setattr(self.preferences, name, value)
        if self._preferences_save_timer is not None:
            self._preferences_save_timer.stop()
        self._preferences_save_timer = self.set_timer(0.5, self._save_preferences)

    def _save_preferences(self) -> None:
        self._preferences_save_timer = None
        notice = self.preferences.save()
        if notice:
            self.notify(notice, severity="warning", timeout=10)

    def action_focus_chat(self) -> None:
        """``/`` goes to the prompt from anywhere in the studio (a settings field included:
        none takes a slash); in the prompt itself, and in a dialog, it is just a slash."""
        if len(self.screen_stack) > 1:
            raise SkipAction()
        panel = self.query_one(ChatPanel)
        if self.focused is panel.prompt:
            raise SkipAction()
        panel.focus_prompt()

    def action_cancel_reply(self) -> None:
        if self.screen.maximized is not None:  # Esc first leaves a zoomed pane
            self.screen.minimize()
            return
        self.query_one(ChatPanel).cancel_reply()

    async def action_quit(self) -> None:
        if self._shutting_down:
            self.notify("Still saving a checkpoint before quitting…")
            return
        if not self.engine.owns_run:  # attached to a run in another process: it goes on
            self.chat_panel.cancel_reply()
            self.exit()
            return
        if not self.training_active:
            self.shut_down()
            return

        def answered(choice: str | None) -> None:
            if choice in (STOP, KEEP):
                self.shut_down(keep_training=choice == KEEP)

        output_dir = self.snapshot.output_dir if self.snapshot is not None else "DIR"
        self.push_screen(QuitChoiceScreen(output_dir), answered)

    def shut_down(self, keep_training: bool = False) -> None:
        """Stop generation and training (saving a checkpoint), then exit once the
        training thread has ended. Waiting is a UI timer, so the screen stays live.

        ``keep_training``: the run is to go on without the studio; the app exits with
        the result ``KEEP`` once its checkpoint is saved, and the command line starts
        the run again, in the background, from that checkpoint.
        """
        self._keep_training = keep_training
        self._shutting_down = True
        self.refresh_bindings()
        self.chat_panel.cancel_reply()
        if not self.engine.is_alive():
            self.exit()
            return
        self.engine.stop(save=True)
        self._quit_deadline = time.monotonic() + self.QUIT_TIMEOUT_S
        self.notify("Saving a checkpoint and stopping the trainer…", timeout=self.QUIT_TIMEOUT_S)
        self.set_interval(0.1, self._exit_when_stopped)

    def _exit_when_stopped(self) -> None:
        if not self.engine.is_alive():
            self.engine.join(timeout=1.0)
            self.exit(result=KEEP if self._keep_training else None)
        elif time.monotonic() > self._quit_deadline:
            self.exit(message=f"The trainer did not stop within {self.QUIT_TIMEOUT_S:.0f} s; quitting "
                              "without it. The last complete checkpoint is kept.")

    def on_unmount(self) -> None:
        # However the app ends (quit, ctrl+c, an exception), no trainer thread may outlive it
        # for long: it is asked to stop, and waited for at most QUIT_TIMEOUT_S.
        self.chat_panel.cancel_reply()
        if self._preferences_save_timer is not None:  # a change made just before quitting
            self._preferences_save_timer.stop()
            self.preferences.save()
        if not self.engine.owns_run:
            self.engine.close()  # detach: the run is not this studio's to stop
        elif self.engine.is_alive():
            self.engine.stop(save=True)
            self.engine.join(timeout=max(0.0, self._quit_deadline - time.monotonic())
                             if self._quit_deadline else self.QUIT_TIMEOUT_S)
        close = getattr(self.telemetry, "close", None)
        if close is not None:
            close()

    def _fatal_error(self) -> None:
        """An unexpected error in the studio: one line on exit, like every command here,
        unless --debug asks for Textual's full traceback."""
        if self.show_tracebacks or self._exception is None:
            super()._fatal_error()
            return
        self.bell()
        self._exit_renderables.append("error: " + printable(internal_message(self._exception)))
        self._close_messages_no_wait()

    # ---------------------------------------------------------- command palette
    def get_key_display(self, binding: Binding) -> str:
        if self.is_web and binding.id in self.WEB_KEYS:
            return self.WEB_KEYS[binding.id]
        return super().get_key_display(binding)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        commands = [
            ("toggle_pause", "Pause / resume training", "Pause after this step, or carry on (p)"),
            ("save_now", "Save checkpoint now", "Write a resumable checkpoint (s)"),
            ("eval_now", "Evaluate now", "Compute validation loss at this step (e)"),
            ("stop_training", "Stop training", "Save a checkpoint and end the run (x)"),
            ("toggle_log_scale", "Toggle log scale", "Plot log10 of loss and learning rate (l)"),
            ("toggle_x_axis", "Toggle x axis: steps / tokens", "Plot against tokens seen (t)"),
            ("smoothing(1)", "Smoother loss curve", "Raise the EMA smoothing weight (])"),
            ("smoothing(-1)", "Rougher loss curve", "Lower the EMA smoothing weight ([)"),
            ("focus_chat", "Chat with the model", "Move to the prompt (/)"),
            ("cancel_reply", "Cancel chat reply", "Stop the reply that is streaming (Esc)"),
            ("copy_reply", "Copy the last reply", "The newest chat reply to the clipboard (c)"),
            ("zoom", "Zoom pane", "The focused pane (else the chart) fills the screen, and back (z)"),
            ("export_chart", "Export the loss chart", "As shown, to PNG, SVG and CSV in the run folder's "
             "exports/ (o)"),
            ("inspect", "Inspect the model", "Attention maps, surprisal and the logit lens on the current "
             "weights (i)"),
            ("show_charts", "Charts of every metric",
             "Grad norm, tokens/s, perplexity, bits per byte, learning rates, MFU: a cursor reads them (g)"),
            ("toggle_token_probabilities", "Token probabilities on / off",
             "Shade each chat reply's tokens by how sure the model was; ← → or a click show what else it "
             "weighed (u)"),
            ("cycle_layer_shading", "Shade the layers by…", "Grad norm, attention entropy or residual "
             "RMS on the probe prompt, in turn (a)"),
            ("show_samples", "Samples by step", "What the model wrote at each step: samples and chat "
             "replies (w)"),
            ("toggle_notifications", "Notifications on / off", "Bell and desktop notification when a run "
             "ends or diverges"),
            ("help", "Help", "Every key, and what each pane shows (F1)"),
        ]
        for action, title, help_text in commands:
            name = action.split("(")[0]
            if name in CONTROL_ACTIONS and self.check_action(name, ()) is None:
                continue
            yield SystemCommand(title, help_text, self._runner(action))

    def _runner(self, action: str):
        async def run() -> None:
            await self.run_action(action)
        return run


def create_app(engine: RunHandle, theme: str | None = None, **options) -> GemmaStudio:
    """The studio for any object with the engine interface (``gemma_core.run.handle.RunHandle``):
    a live ``TrainingEngine``, a ``RunViewer`` or a test double."""
    return GemmaStudio(engine, theme=theme, **options)
