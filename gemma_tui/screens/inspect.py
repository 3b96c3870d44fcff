"""Inspect: one forward pass of a prompt on the weights the studio shows, looked inside.

The attention map of a chosen layer and head (arrows move between them), the prompt's
tokens shaded by surprisal, and the logit lens as a table. The pass runs as a chat reply
does (between two training steps on a CPU, see ``gemma_tui/inspection.py``), in a worker
thread: the screen stays live, and training loses only the pass's own time. While the
screen is idle it costs nothing: it draws only when shown something new.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from gemma_core.errors import UserError
from gemma_core.safe_text import one_line, printable
from gemma_tui.inspection import run_inspection
from gemma_tui.widgets.attention_map import AttentionMap
from gemma_tui.widgets.lens_table import LAST, POSITIONS, LensTable, candidate
from gemma_tui.widgets.token_strip import TokenStrip

if TYPE_CHECKING:
    from gemma_core.inspect import Inspection

FALLBACK_PROMPT = "ROMEO:"
TOP_K = 5
WIDE_COLUMNS = 120  # from this width the lens opens with every position across
LINE_BREAK = "⏎"  # a line break as the one-line prompt field shows it


def default_prompt(engine, chat_panel=None, output_dir: str | None = None) -> str:
    """The last chat prompt (this session's, else the run's chat.jsonl), else the run's first
    --sample_prompt, else ``FALLBACK_PROMPT``."""
    if chat_panel is not None:
        from gemma_tui.widgets.chat_exchange import ChatExchange

        asked = [exchange.prompt for exchange in chat_panel.query(ChatExchange) if exchange.prompt.strip()]
        if asked:
            return asked[-1]
    if output_dir and Path(output_dir).is_dir():
        from gemma_tui.chat_transcript import read_transcript

        records, _ = read_transcript(output_dir)
        if records:
            return records[-1]["prompt"]
    settings = getattr(engine, "settings", None)
    prompts = getattr(settings, "sample_prompt", None)
    if prompts is None:  # a finished run: its config.json keeps the settings it trained with
        training = (getattr(engine, "config_data", None) or {}).get("training")
        prompts = training.get("sample_prompt") if isinstance(training, dict) else None
    if isinstance(prompts, str):
        prompts = [prompts]
    for prompt in prompts or ():
        if isinstance(prompt, str) and prompt.strip():
            return prompt
    return FALLBACK_PROMPT


def to_field(prompt: str) -> str:
    return prompt.replace("\r\n", "\n").replace("\n", LINE_BREAK)


def from_field(text: str) -> str:
    return text.replace(LINE_BREAK, "\n")


class InspectScreen(Screen[None]):
    DEFAULT_CSS = """
    InspectScreen { layout: vertical; }
    #inspect-status { height: 1; padding: 0 1; }
    #inspect-body { height: 1fr; }
    #inspect-map { width: 1fr; border: round $panel-lighten-2; border-title-color: $text-muted; padding: 0 1; }
    #inspect-map:focus { border: round $primary; }
    #inspect-side { width: 1fr; }
    #inspect-tokens { height: auto; max-height: 40%; border: round $panel-lighten-2;
                      border-title-color: $text-muted; padding: 0 1; overflow-y: auto; }
    #inspect-lens { height: 1fr; border: round $panel-lighten-2; border-title-color: $text-muted; }
    #inspect-prompt { height: 3; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close", id="inspect.close"),
        Binding("up,pageup", "layer(-1)", "Layer", key_display="↑↓", id="inspect.layer_up"),
        Binding("down,pagedown", "layer(1)", "Layer", show=False, id="inspect.layer_down"),
        Binding("left", "head(-1)", "Head", key_display="←→", id="inspect.head_left"),
        Binding("right", "head(1)", "Head", show=False, id="inspect.head_right"),
        Binding("r", "rerun", "Re-run", id="inspect.rerun"),
        Binding("v", "toggle_lens", "Lens view", id="inspect.lens_view"),
        Binding("slash", "edit_prompt", "Prompt", key_display="/", id="inspect.prompt"),
    ]

    def __init__(self, engine, prompt: str = FALLBACK_PROMPT, top_k: int = TOP_K) -> None:
        super().__init__()
        self.engine = engine
        self.prompt = prompt
        self.top_k = top_k
        self.found: Inspection | None = None
        self.layer_index = 0
        self.head_index = 0
        self.lens_view: str | None = None  # None: chosen by the terminal's width
        self.running = False
        self.problem: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="inspect-status")
        with Horizontal(id="inspect-body"):
            yield AttentionMap(id="inspect-map")
            with Vertical(id="inspect-side"):
                yield TokenStrip(id="inspect-tokens")
                yield LensTable(id="inspect-lens")
        yield Input(to_field(self.prompt), placeholder=f"a prompt to inspect (Enter runs it; {LINE_BREAK} is a line break)",
                    id="inspect-prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#inspect-map").border_title = "Attention"
        self.query_one("#inspect-tokens").border_title = "Prompt · surprisal in bits"
        self.query_one("#inspect-lens").border_title = "Logit lens"
        self.query_one(AttentionMap).focus()
        self.rerun()

    # ------------------------------------------------------------ the pass
    def rerun(self, prompt: str | None = None) -> bool:
        """Run ``prompt`` (else the one in the field) through the current weights."""
        prompt = from_field(self.query_one("#inspect-prompt", Input).value) if prompt is None else prompt
        if self.running:
            self.notify("The pass is still running: its result comes first.", severity="warning")
            return False
        if not prompt.strip():
            self.notify("Write a prompt to inspect first.", severity="warning")
            return False
        self.prompt, self.running, self.problem = prompt, True, None
        self._status()
        self.run_worker(lambda: self._pass(prompt), thread=True, group="inspect", exit_on_error=False,
                        description="inspect pass")
        return True

    def _pass(self, prompt: str) -> None:
        """Runs in a worker thread: waits for the engine, hands the result to the UI."""
        try:
            found = run_inspection(self.engine, prompt, self.top_k)
        except UserError as err:
            self.app.call_from_thread(self._failed, str(err))
        except Exception as err:  # shown on the screen, never a crash of the studio
            self.app.call_from_thread(self._failed, f"{type(err).__name__}: {err}")
        else:
            self.app.call_from_thread(self._shown, found)

    def _failed(self, message: str) -> None:
        self.running, self.problem = False, message
        if self.is_attached:
            self._status()

    def _shown(self, found: Inspection) -> None:
        self.running, self.found = False, found
        if not self.is_attached:
            return
        self.layer_index = min(self.layer_index, len(found.layers) - 1)
        self.head_index = min(self.head_index, found.layers[0].attention.shape[0] - 1) if found.layers else 0
        self.query_one(TokenStrip).show(found.tokens, found.surprisal)
        self._show_lens()
        self._show_map()
        self._status()

    # ------------------------------------------------------------- drawing
    def _status(self) -> None:
        found = self.found
        if self.running:
            line = "Running the prompt through the current weights… (on a CPU, between two training steps)"
        elif self.problem is not None:
            line = f"Not inspected: {one_line(printable(self.problem))}"
        elif found is None:
            line = ""
        else:
            following = ", ".join(candidate(p) for p in found.next[:3])
            line = f"weights of step {found.step:,} · {len(found.tokens):,} tokens · next: {following}"
        self.query_one("#inspect-status", Static).update(line)

    def _show_map(self) -> None:
        found = self.found
        layer = found.layers[self.layer_index] if found is not None and found.layers else None
        self.query_one(AttentionMap).show(layer, self.head_index, len(found.layers) if found else 0)

    def _show_lens(self) -> None:
        view = self.lens_view or (POSITIONS if self.app.size.width >= WIDE_COLUMNS else LAST)
        lens = self.query_one(LensTable)
        lens.show(self.found, view)
        lens.border_subtitle = ("top token per position" if view == POSITIONS
                                else f"last token's top {self.top_k}") + " · v"

    # ------------------------------------------------------------- actions
    def action_close(self) -> None:
        if isinstance(self.focused, Input):  # Esc first leaves the prompt, as in the chat
            self.query_one(AttentionMap).focus()
            return
        self.dismiss()

    def action_layer(self, step: int) -> None:
        if self.found is not None and self.found.layers:
            self.layer_index = (self.layer_index + step) % len(self.found.layers)
            self._show_map()

    def action_head(self, step: int) -> None:
        if self.found is not None and self.found.layers:
            heads = self.found.layers[self.layer_index].attention.shape[0]
            self.head_index = (self.head_index + step) % heads
            self._show_map()

    def action_rerun(self) -> None:
        self.rerun()

    def action_toggle_lens(self) -> None:
        shown = self.query_one(LensTable).view
        self.lens_view = LAST if shown == POSITIONS else POSITIONS
        self._show_lens()

    def action_edit_prompt(self) -> None:
        self.set_focus(self.query_one("#inspect-prompt", Input))

    @on(Input.Submitted, "#inspect-prompt")
    def _on_prompt(self, event: Input.Submitted) -> None:
        event.stop()
        if self.rerun(from_field(event.value)):
            self.query_one(AttentionMap).focus()
