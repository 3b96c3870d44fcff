"""The Samples screen: what the model wrote, by step, so a user sees the text improve.

A table lists the run's ``--sample_prompt`` continuations (carried by its snapshot, so an
attached studio has them too) and the chat replies kept in its ``chat.jsonl``, each with the
step whose weights wrote it, newest first (``o`` turns the order round). The row under the
cursor is shown whole beside the table, followed by the same prompt's text at every other
step, oldest first. The screen looks for new samples once a second while it is open and
costs nothing once closed. Model output is untrusted: it is shown as plain text, control
characters removed, never as markup.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from gemma_core.safe_text import printable
from gemma_tui.chat_transcript import read_transcript
from gemma_tui.sample_gallery import CHATS_SHOWN, SAMPLE, GalleryEntry, gallery_entries, same_prompt

LOOK_EVERY_S = 1.0
STEP_WIDTH, FROM_WIDTH = 8, 6
NONE_YET = ("Nothing written yet. A run started with --sample_prompt TEXT --sample_every N "
            "continues TEXT every N steps, and every chat reply (/ in the studio) is kept; both "
            "appear here, each with the step whose weights wrote it.")


def _one_line(text: str) -> str:
    return " ".join(printable(text).split())


def _cut(text: str, width: int) -> Text:
    """One line of ``text`` in ``width`` cells, an ellipsis where it goes on."""
    line = Text(_one_line(text))
    line.truncate(width, overflow="ellipsis")
    return line


def _step_text(entry: GalleryEntry) -> str:
    return f"{entry.step:,}" if entry.step is not None else "?"


class SamplesScreen(Screen[None]):
    DEFAULT_CSS = """
    SamplesScreen #samples-body { layout: horizontal; height: 1fr; }
    SamplesScreen.-narrow #samples-body { layout: vertical; }
    SamplesScreen #samples-table { width: 1fr; height: 1fr; border: round $foreground 30%;
                                   border-title-color: $text-muted; border-title-style: bold; }
    SamplesScreen #samples-table:focus { border: round $primary; border-title-color: $primary; }
    SamplesScreen #samples-detail { width: 1fr; height: 1fr; border: round $foreground 30%;
                                    border-title-color: $text-muted; border-title-style: bold;
                                    padding: 0 1; }
    SamplesScreen.-narrow #samples-table, SamplesScreen.-narrow #samples-detail { width: 1fr; height: 1fr; }
    """

    BINDINGS = [
        Binding("escape,q,w", "close", "Back", key_display="Esc"),
        # One key, named in the footer for what it does next (``check_action`` shows one of the two).
        Binding("o", "order('oldest')", "Oldest first"),
        Binding("o", "order('newest')", "Newest first"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.newest_first = True
        self.entries: list[GalleryEntry] = []  # oldest first
        self.chat_note: str | None = None
        self._looked_at: tuple | None = None  # what the list was last built from

    def compose(self) -> ComposeResult:
        yield Header()
        with Container(id="samples-body"):
            yield DataTable(id="samples-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="samples-detail"):
                yield Static(id="samples-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#samples-detail").border_title = "Selected"
        self.look_for_new()
        self.set_interval(LOOK_EVERY_S, self.look_for_new)
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        # Once laid out at the new size: the text column takes the width there is.
        self.call_after_refresh(self._fill_table)

    # ------------------------------------------------------------------ data
    def look_for_new(self) -> None:
        """Rebuild the list when the run sampled again or a chat reply was kept (cheap otherwise)."""
        snap = self.app.snapshot
        samples = snap.samples if snap is not None else ()
        folder = Path(snap.output_dir) if snap is not None and snap.output_dir else None
        transcript = self._transcript_stamp(folder)
        looked = (len(samples), samples[-1] if samples else None, transcript)
        if looked == self._looked_at:
            return
        self._looked_at = looked
        records, self.chat_note = read_transcript(folder, CHATS_SHOWN) if transcript else ([], None)
        self.entries = gallery_entries(samples, records)
        self._fill_table()

    @staticmethod
    def _transcript_stamp(folder: Path | None) -> tuple | None:
        from gemma_core.run.layout import CHAT_TRANSCRIPT

        if folder is None:
            return None
        try:
            stat = (folder / CHAT_TRANSCRIPT).stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def shown(self) -> list[GalleryEntry]:
        """The entries in the table's order: by step, either way round; within a step, always
        in the order the prompts were given."""
        if not self.newest_first:
            return list(self.entries)
        return sorted(self.entries, key=lambda entry: -1 if entry.step is None else -entry.step)

    # ----------------------------------------------------------------- table
    def _fill_table(self, selected: GalleryEntry | None = None) -> None:
        """(Re)build the table; the cursor stays on ``selected`` (else the row it is on)."""
        table = self.query_one(DataTable)
        selected = selected or self._selected()
        rows = self.shown()
        width = max(20, table.content_region.width or self.size.width // 2)
        longest_prompt = max((len(_one_line(entry.prompt)) for entry in rows), default=6)
        prompt_width = max(6, min(longest_prompt, 24, (width - STEP_WIDTH - FROM_WIDTH) // 3))
        # Less each column's padding (2 cells) and the scroll bar (2): no sideways scrolling.
        text_width = max(8, width - STEP_WIDTH - FROM_WIDTH - prompt_width - 10)
        table.clear(columns=True)
        table.add_column("Step", width=STEP_WIDTH, key="step")
        table.add_column("From", width=FROM_WIDTH, key="from")
        table.add_column("Prompt", width=prompt_width, key="prompt")
        table.add_column("Continuation", width=text_width, key="text")
        for index, entry in enumerate(rows):
            table.add_row(Text(_step_text(entry), justify="right"), Text(entry.source),
                          _cut(entry.prompt, prompt_width), _cut(entry.text, text_width), key=str(index))
        order = "newest first" if self.newest_first else "oldest first"
        samples = sum(entry.source == SAMPLE for entry in self.entries)
        table.border_title = (f"Samples · {samples:,} sampled, {len(self.entries) - samples:,} chat · "
                              f"{order}")
        if rows:
            table.move_cursor(row=rows.index(selected) if selected in rows else 0)
        self._show(self._selected())

    def _selected(self) -> GalleryEntry | None:
        table = self.query_one(DataTable)
        rows = self.shown()
        if not rows or table.row_count != len(rows) or not 0 <= table.cursor_row < len(rows):
            return None
        return rows[table.cursor_row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(self._selected())

    # ---------------------------------------------------------------- detail
    def _show(self, entry: GalleryEntry | None) -> None:
        text = self.query_one("#samples-text", Static)
        detail = self.query_one("#samples-detail")
        if entry is None:
            text.update(Text(NONE_YET + (f"\n\n{printable(self.chat_note)}" if self.chat_note else "")))
            detail.border_title = "Selected"
            return
        detail.border_title = f"Step {_step_text(entry)} · {entry.source}"
        text.update(self.describe(entry))
        detail.scroll_home(animate=False)

    def describe(self, entry: GalleryEntry) -> Text:
        """The entry whole, then the same prompt at every step, oldest first."""
        out = Text()
        out.append(printable(entry.prompt), style="dim")
        out.append(printable(entry.text))
        if entry.ended:
            out.append(f"  [{entry.ended}]", style="italic dim")
        sequence = same_prompt(self.entries, entry)
        if len(sequence) > 1:
            out.append(f"\n\nThe same prompt at {len(sequence):,} points of training, oldest first:\n",
                       style="bold")
            for other in sequence:
                out.append(f"\nstep {_step_text(other)} · {other.source}", style="bold" if other is entry else "")
                out.append("  ◀ selected\n" if other is entry else "\n", style="bold")
                out.append(printable(other.text) + "\n")
        return out

    # --------------------------------------------------------------- actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "order":
            return (parameters[0] == "oldest") == self.newest_first
        return True

    def action_order(self, which: str) -> None:
        selected = self._selected()
        self.newest_first = which == "newest"
        self.refresh_bindings()
        self._fill_table(selected)

    def action_close(self) -> None:
        self.dismiss()
