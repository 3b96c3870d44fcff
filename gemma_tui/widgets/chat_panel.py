"""Chat: prompt the model mid-training and watch the continuation stream in.

Asking the engine for a reply happens in a worker thread (``engine.chat`` may
wait for the trainer to hand over weights); the reply is then collected with
the job's non-blocking ``take()`` on a UI timer at 10 Hz, so many small pieces
become a few repaints and neither the UI nor training ever waits on generation.
"""

from __future__ import annotations

import math

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Static

from gemma_core.errors import UserError
from gemma_core.model.sampling import GenerationStats, SamplingParams
from gemma_core.model.token_choices import TOP_ALTERNATIVES
from gemma_core.run.handle import RunHandle
from gemma_tui.widgets.chat_exchange import ChatExchange
from gemma_tui.widgets.probability_legend import ProbabilityLegend

POLL_SECONDS = 0.1

# (input id, label, default text, placeholder)
PARAMETER_FIELDS = (
    ("temperature", "temp", "0.8", "0 = greedy"),
    ("top-k", "top-k", "", "off"),
    ("top-p", "top-p", "", "off"),
    ("max-tokens", "max", "96", "tokens"),
)


def read_sampling_params(values: dict[str, str]) -> SamplingParams:
    """SamplingParams from the four fields' text; raises UserError naming a bad one."""
    def parse(name: str, kind: type, text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            noun = "whole number" if kind is int else "number"
            raise UserError(f"{name} must be a {noun}, got {text!r}")
        return value

    temperature = values.get("temperature", "").strip() or "0.8"
    top_k = values.get("top-k", "").strip()
    top_p = values.get("top-p", "").strip()
    max_tokens = values.get("max-tokens", "").strip() or "96"
    params = SamplingParams(
        max_new_tokens=parse("max tokens", int, max_tokens),
        temperature=parse("temperature", float, temperature),
        top_k=parse("top-k", int, top_k) if top_k else None,
        top_p=parse("top-p", float, top_p) if top_p else None)
    params.validate()
    return params


def finish_note(stats: GenerationStats, max_new_tokens: int) -> str:
    """Why a reply ended, when the model did not end it: a cut reply is marked, never passed
    off as complete, and a prompt cut to fit is said."""
    notes = []
    if stats.prompt_cut:
        notes.append(f"prompt cut to its last {stats.prompt_tokens:,} tokens to fit the context")
    if stats.finish_reason == "length":
        notes.append("cut: the context is full" if stats.context_full
                     else f"cut at max tokens ({max_new_tokens:,})")
    return " · ".join(notes)


class ChatPanel(Vertical):
    """Transcript, sampling settings and the prompt line."""

    ALLOW_MAXIMIZE = True  # z zooms it to the whole screen

    BINDINGS = [
        Binding("escape", "cancel_reply", "Cancel reply", show=True),
    ]

    def __init__(self, engine: RunHandle, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.engine = engine
        self.active: ChatExchange | None = None
        self._poll_timer = None
        self.shows_probabilities = False  # replies' tokens shaded by the model's probability (u)

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="chat-log")
        yield ProbabilityLegend(id="chat-legend")
        with Container(id="chat-params"):  # a grid: one row, or two where narrow
            for field_id, label, default, placeholder in PARAMETER_FIELDS:
                yield Label(label, classes="chat-param-label")
                yield Input(default, placeholder=placeholder, id=f"chat-{field_id}", classes="chat-param",
                            compact=True)
        yield Input(placeholder="Prompt the model and press Enter (Esc cancels a reply)",
                    id="chat-prompt")

    def on_mount(self) -> None:
        self.query_one("#chat-log", VerticalScroll).anchor()
        self.query_one("#chat-params").border_title = "sampling · Tab to edit, / back to the prompt"
        self.query_one(ProbabilityLegend).display = self.shows_probabilities
        self._poll_timer = self.set_interval(POLL_SECONDS, self._collect, pause=True)

    def show_earlier(self, records: list[dict]) -> None:
        """The run's earlier exchanges (from its chat.jsonl), above any new one."""
        from gemma_tui.chat_transcript import earlier_exchange_text

        log = self.query_one("#chat-log", VerticalScroll)
        widgets = [Static(earlier_exchange_text(record), classes="chat-exchange chat-earlier")
                   for record in records]
        if widgets:
            first = log.children[0] if log.children else None
            log.mount_all(widgets, before=first) if first is not None else log.mount_all(widgets)
            log.anchor()

    # ------------------------------------------------------------- prompting
    @property
    def busy(self) -> bool:
        return self.active is not None

    class SettingsUsed(Message):
        """A reply started with these settings (the fields' text, by field id): the studio
        remembers settings that worked, never a half-typed or refused one."""

        def __init__(self, settings: dict[str, str]) -> None:
            super().__init__()
            self.settings = settings

    def settings_text(self) -> dict[str, str]:
        return {field_id: self.query_one(f"#chat-{field_id}", Input).value for field_id, *_ in PARAMETER_FIELDS}

    def set_settings_text(self, settings: dict[str, str]) -> None:
        """Fill the settings fields (from saved preferences); unknown fields are ignored."""
        for field_id, *_ in PARAMETER_FIELDS:
            if isinstance(settings.get(field_id), str):
                self.query_one(f"#chat-{field_id}", Input).value = settings[field_id]

    @on(Input.Submitted, "#chat-prompt")
    def _on_prompt(self, event: Input.Submitted) -> None:
        event.stop()
        self.send(event.value)

    def send(self, prompt: str) -> bool:
        """Start a reply to ``prompt``; False (with a notice) when it cannot start."""
        if not prompt.strip():
            return False
        if self.busy:
            self.notify("A reply is still streaming: wait, or press Esc to cancel it.",
                        severity="warning")
            return False
        settings = self.settings_text()
        try:
            params = read_sampling_params(settings)
        except UserError as err:
            self.notify(str(err), title="Sampling settings", severity="error")
            return False
        self.post_message(self.SettingsUsed(settings))
        exchange = ChatExchange(prompt, params, shaded=self.shows_probabilities)
        log = self.query_one("#chat-log", VerticalScroll)
        log.mount(exchange)
        log.anchor()  # a new prompt comes into view, even after scrolling up through old ones
        self.prompt.value = ""
        self.active = exchange
        self.run_worker(lambda: self._ask_engine(exchange, prompt, params), thread=True,
                        group="chat", exit_on_error=False, description="chat request")
        self._poll_timer.resume()
        return True

    def _ask_engine(self, exchange: ChatExchange, prompt: str, params: SamplingParams) -> None:
        """Runs in a worker thread; only writes attributes the UI timer reads."""
        try:
            # Always with probabilities (a softmax per token): turning the shading on later
            # shows them on the replies already written.
            job = self.engine.chat(prompt, params, alternatives=TOP_ALTERNATIVES)
        except Exception as err:  # a failure to show in the transcript, not a crash
            exchange.start_error = str(err) or type(err).__name__
            return
        # Publish the job before reading the flag: a cancel that found no job yet
        # set the flag first, so one of the two sides always cancels it.
        exchange.job = job
        if exchange.cancel_requested:
            job.cancel()

    def _collect(self) -> None:
        exchange = self.active
        if exchange is None:
            self._poll_timer.pause()
            return
        if exchange.start_error is not None:
            self._finish(exchange, f"failed: {exchange.start_error}")
            return
        job = exchange.job
        if job is None:
            if exchange.cancel_requested:  # the worker cancels the job when it arrives
                self._finish(exchange, "cancelled")
            return
        exchange.add_text(job.take())
        exchange.add_tokens(job.take_tokens())  # after the text: a job puts a token before its text
        if job.done:
            exchange.add_text(job.take())  # the last pieces, written just before done
            exchange.add_tokens(job.take_tokens())
            if exchange.cancel_requested:
                self._finish(exchange, "cancelled")
            elif job.error:
                self._finish(exchange, f"failed: {job.error}")
            else:
                exchange.cut = job.stats.finish_reason == "length"
                self._finish(exchange, finish_note(job.stats, exchange.params.max_new_tokens))
        else:
            exchange.set_status("streaming…")

    def _finish(self, exchange: ChatExchange, status: str) -> None:
        exchange.finish(status)
        self.active = None
        self._poll_timer.pause()
        self.post_message(self.ReplyFinished(exchange))

    class ReplyFinished(Message):
        """A reply ended (complete, cut, cancelled or failed): the studio keeps a transcript."""

        def __init__(self, exchange: ChatExchange) -> None:
            super().__init__()
            self.exchange = exchange

    def last_reply(self) -> str | None:
        """The newest reply with any text, as shown."""
        for exchange in reversed(list(self.query(ChatExchange))):
            if exchange.reply:
                return exchange.reply
        return None

    # ------------------------------------------------------------ probabilities
    def show_probabilities(self, on: bool) -> None:
        """Shade every reply's tokens by the model's probability (and show the legend), or not.
        Turned on, the newest reply takes the focus unless the chat has it, so ← → select
        its tokens at once."""
        self.shows_probabilities = on
        exchanges = list(self.query(ChatExchange))
        with self.app.batch_update():
            self.query_one(ProbabilityLegend).display = on
            for exchange in exchanges:
                exchange.set_shaded(on)
        focused = self.screen.focused
        if on and exchanges and (focused is None or self not in focused.ancestors):
            self.screen.set_focus(exchanges[-1])
        elif not on and isinstance(focused, ChatExchange):
            self.screen.set_focus(None)

    # ------------------------------------------------------------- cancelling
    def action_cancel_reply(self) -> None:
        if not self.cancel_reply():
            self.screen.set_focus(None)  # nothing to cancel: Esc leaves the prompt, so
            # the studio's one-letter keys work again

    def cancel_reply(self) -> bool:
        exchange = self.active
        if exchange is None:
            return False
        exchange.cancel_requested = True
        if exchange.job is not None:
            exchange.job.cancel()
        exchange.set_status("cancelling…")
        return True

    @property
    def prompt(self) -> Input:
        return self.query_one("#chat-prompt", Input)

    def focus_prompt(self) -> None:
        # At once, not by ``Input.focus()``, which waits behind the keys already queued: in a
        # browser or over ssh, "/" and the prompt typed after it often arrive together.
        self.screen.set_focus(self.prompt)
