"""Quitting the studio while its own run trains: stop the run, or keep it training without the studio."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

STOP = "stop"  # save a checkpoint and end the run
KEEP = "keep"  # the run goes on in the background; gemma-tui attach finds it again


class QuitChoiceScreen(ModalScreen[str | None]):
    """Dismisses with STOP (s), KEEP (k, Enter) or None (Esc: stay in the studio)."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop the run", show=False),
        Binding("k", "choose('keep')", "Keep training", show=False),
        Binding("escape", "choose(None)", "Stay", show=False),
    ]

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self.output_dir = output_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Label("Training is running. Keep it training in the background (the terminal may "
                        f"close; gemma-tui attach {self.output_dir} comes back to it), or stop it "
                        "with a checkpoint?", id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button("Keep training (k)", variant="primary", id="quit-keep")
                yield Button("Stop the run (s)", variant="warning", id="quit-stop")
                yield Button("Stay (Esc)", id="quit-stay")

    def on_mount(self) -> None:
        self.query_one("#quit-keep", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss({"quit-keep": KEEP, "quit-stop": STOP}.get(event.button.id))

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
