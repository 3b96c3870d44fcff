"""One prompt and the model's streamed reply, shown as plain text."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from gemma_core.model.sampling import SamplingParams
from gemma_core.safe_text import printable
from gemma_core.chat import ChatJob


class ChatExchange(Static):
    """A prompt, then the reply as it streams in.

    The reply is untrusted model output: it is shown as a rich ``Text`` with
    escape and control characters stripped, never parsed as markup.
    ``job`` is set by the worker thread that asked the engine for it (a single
    attribute write); everything else runs on the UI thread.
    """

    def __init__(self, prompt: str, params: SamplingParams) -> None:
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

    def on_mount(self) -> None:
        self._redraw()

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
        text.append(self.reply)
        if self.cut:
            text.append("…", style="bold")
        if self.status:
            text.append(f"  [{self.status}]", style="italic dim")
        return text
