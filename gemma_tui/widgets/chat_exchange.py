"""One prompt and the model's streamed reply, shown as plain text, or with each token
shaded by the model's probability for it (``u``; ``gemma_tui/token_shading.py``)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.geometry import Region
from textual.widgets import Static

from gemma_core.model.sampling import SamplingParams
from gemma_core.model.token_choices import TokenChoice
from gemma_core.safe_text import printable
from gemma_core.chat import ChatJob
from gemma_tui.palette import studio_palette
from gemma_tui.token_shading import alternatives_text, append_shaded, spans


class ChatExchange(Static):
    """A prompt, then the reply as it streams in.

    The reply is untrusted model output: it is shown as a rich ``Text`` with
    escape and control characters stripped, never parsed as markup.
    ``job`` is set by the worker thread that asked the engine for it (a single
    attribute write); everything else runs on the UI thread.

    While shaded, the exchange takes the focus (Tab, or a click on a token) and ``←`` ``→``
    select a token of the reply: what the model weighed there shows under it.
    """

    DEFAULT_CSS = """
    ChatExchange:focus { background: $primary 8%; }
    """
    BINDINGS = [
        Binding("left", "move_token(-1)", "Token", key_display="←→"),
        Binding("right", "move_token(1)", "Token", show=False),
        Binding("home", "move_token(-1000000)", "First token", show=False),
        Binding("end", "move_token(1000000)", "Last token", show=False),
    ]

    def __init__(self, prompt: str, params: SamplingParams, shaded: bool = False) -> None:
        super().__init__(classes="chat-exchange")
        self.prompt = prompt
        self.params = params  # the sampling settings that asked for it
        self.cut = False  # ended by max tokens or the context, not by the model
        self.reply = ""
        self.pieces = 0  # how many updates the reply arrived in (a streaming reply: many)
        self.job: ChatJob | None = None
        self.start_error: str | None = None  # engine.chat() itself failed
        self.cancel_requested = False
        self.finished = False
        self.status = "waiting for the model…"
        self.tokens: list[TokenChoice] = []  # the reply's tokens with their probabilities, as they come
        self.shaded = shaded
        self.can_focus = shaded
        self.selected: int | None = None  # the token whose alternatives show

    def on_mount(self) -> None:
        self._redraw()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.shaded and self._redraw())

    # ------------------------------------------------------------ probabilities
    def add_tokens(self, choices: list[TokenChoice]) -> None:
        if choices:
            self.tokens.extend(choices)
            if self.shaded:
                self._redraw()

    def set_shaded(self, shaded: bool) -> None:
        if shaded != self.shaded:
            self.shaded = shaded
            self.can_focus = shaded
            self.selected = None
            self._redraw()

    def select_token(self, index: int | None) -> None:
        if index != self.selected:
            self.selected = index
            self._redraw()
            if index is not None:
                self.call_after_refresh(self._show_alternatives)

    def _show_alternatives(self) -> None:
        """Scroll the chat so the alternatives, this reply's last line, are in view: on a long
        reply they would otherwise be drawn below the bottom of the pane."""
        log = self.parent
        if isinstance(log, ScrollableContainer):
            region = self.virtual_region
            log.scroll_to_region(Region(region.x, region.bottom - 1, region.width, 1), animate=False,
                                 immediate=True)

    def action_move_token(self, step: int) -> None:
        """The next or previous token of the reply shown (the first or last if none is selected)."""
        shown = [span.token for span in spans(self.reply, self.tokens)]
        if not self.shaded or not shown:
            return
        if self.selected in shown:
            at = max(0, min(len(shown) - 1, shown.index(self.selected) + step))
        else:
            at = 0 if step > 0 else len(shown) - 1
        self.select_token(shown[at])

    def on_click(self, event: events.Click) -> None:
        index = event.style.meta.get("token")
        if self.shaded and isinstance(index, int) and 0 <= index < len(self.tokens):
            event.stop()
            self.focus()
            self.select_token(index)

    def add_text(self, piece: str) -> None:
        if piece:
            self.reply += printable(piece)
            self.pieces += 1
            self._redraw()

    def finish(self, status: str) -> None:
        self.finished = True
        self.status = status
        self._redraw()

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._redraw()

    def _redraw(self) -> None:
        self.update(self.as_text())

    def as_text(self) -> Text:
        """The exchange as shown: prompt, which step's weights answered, the reply."""
        text = Text()
        text.append("you › ", style="bold")
        text.append(printable(self.prompt))
        text.append("\n")
        step = f"model @ step {self.job.step:,}" if self.job is not None else "model"
        text.append(f"{step} › ", style="bold")
        text.append(printable(self.prompt), style="dim")
        palette = studio_palette(self.app) if self.shaded else None
        if palette is not None and self.tokens:
            append_shaded(text, self.reply, self.tokens, self.selected, palette)
        else:
            text.append(self.reply)
        if self.cut:
            text.append("…", style="bold")
        if self.status:
            text.append(f"  [{self.status}]", style="italic dim")
        if palette is not None and not self.tokens and self.finished and self.reply:
            text.append("  (no probabilities came with this reply)", style="italic dim")
        if palette is not None and self.selected is not None and self.selected < len(self.tokens):
            text.append("\n")
            text.append_text(alternatives_text(self.tokens[self.selected], self.selected, len(self.tokens), palette))
        return text
