"""``gemma-tui open`` without a folder: the runs under the current folder (or ``--runs DIR``),
with state, step, best validation loss and when each last wrote; Enter opens one (a live run
attached, a finished one opened), Space marks runs and ``c`` compares the marked ones.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from gemma_core.serve.catalog import RunEntry, find_runs
from gemma_core.safe_text import printable
from gemma_tui.themes import use_studio_themes

OPEN = "open"
COMPARE = "compare"


def when(seconds: float) -> str:
    """Today's times as a clock, older ones as a date: how recently a run wrote."""
    moment = time.localtime(seconds)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("today %H:%M", moment)
    return time.strftime("%Y-%m-%d %H:%M", moment)


def row_of(entry: RunEntry, root: Path) -> tuple[str, ...]:
    try:
        name = str(entry.folder.relative_to(root)) if entry.folder != root else entry.folder.name
    except ValueError:
        name = str(entry.folder)
    state = entry.state + (" (live)" if entry.live and entry.state != "live" else "")
    if entry.problem is not None and entry.state == "unreadable":
        return (printable(name), state, "-", "-", when(entry.modified))
    step = f"{entry.step:,} / {entry.max_steps:,}" if entry.max_steps else f"{entry.step:,}"
    best = ("-" if entry.best_val_loss is None or not math.isfinite(entry.best_val_loss)
            else f"{entry.best_val_loss:.4f}" + (f" @ {entry.best_val_step:,}" if entry.best_val_step else ""))
    return (printable(name), state, step, best, when(entry.modified))


class RunPicker(App[tuple[str, list[RunEntry]] | None]):
    """Returns (OPEN, [run]) or (COMPARE, [runs...]) from ``run()``; None when left with q."""

    TITLE = "Gemma Studio"
    CSS = """
    #runs { height: 1fr; }
    #picker-hint { color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [
        Binding("enter", "open", "Open", priority=True),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
        Binding("r", "refresh", "Refresh"),
        Binding("q,escape", "quit", "Quit"),
    ]

    def __init__(self, root: Path, entries: list[RunEntry] | None = None, theme: str | None = None,
                 cursor_on: Path | None = None, notice: str | None = None) -> None:
        """``cursor_on``: the run to start on (the one just left); ``notice``: why the last
        run chosen could not be shown."""
        super().__init__()
        self.root = root
        self.entries = entries if entries is not None else find_runs(root)
        self.cursor_on = cursor_on
        self.notice = notice
        self.marked: set[Path] = set()
        use_studio_themes(self, theme)
        self.sub_title = f"runs under {printable(str(root))}"

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("Enter opens a run (a live one attached) · Space marks runs · c compares the marked runs",
                     id="picker-hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(" ", "run", "state", "step", "best validation", "last written")
        self._fill()
        folders = [entry.folder for entry in self.entries]
        if self.cursor_on in folders:
            table.move_cursor(row=folders.index(self.cursor_on))
        table.focus()
        if self.notice:
            self.notify(printable(self.notice), title="That run cannot be shown", severity="error", timeout=15)

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for entry in self.entries:
            table.add_row("✓" if entry.folder in self.marked else " ", *row_of(entry, self.root),
                          key=str(entry.folder))
        if self.entries:
            table.move_cursor(row=min(cursor, len(self.entries) - 1))

    @property
    def current(self) -> RunEntry | None:
        table = self.query_one(DataTable)
        return self.entries[table.cursor_row] if self.entries and 0 <= table.cursor_row < len(self.entries) else None

    def action_open(self) -> None:
        entry = self.current
        if entry is None:
            return
        if entry.problem is not None:
            self.notify(printable(entry.problem), title="This run cannot be opened", severity="error", timeout=10)
            return
        self.exit((OPEN, [entry]))

    def action_mark(self) -> None:
        entry = self.current
        if entry is None:
            return
        self.marked ^= {entry.folder}
        self._fill()

    def action_compare(self) -> None:
        chosen = [entry for entry in self.entries if entry.folder in self.marked and entry.opens]
        if len(chosen) < 2:
            self.notify("Mark two runs or more with Space, then press c.", severity="warning")
            return
        self.exit((COMPARE, chosen))

    def action_refresh(self) -> None:
        self.entries = find_runs(self.root)
        self.marked &= {entry.folder for entry in self.entries}
        self._fill()
