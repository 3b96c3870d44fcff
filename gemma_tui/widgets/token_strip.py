"""The prompt's tokens in a row, each shaded by its surprisal and followed by it in bits.

Surprisal is -log2 p(token | the tokens before it): a token the model expected is pale,
one that surprised it is strong. The first token has no prediction and no shade.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widgets import Static

from gemma_core.safe_text import printable
from gemma_tui.palette import studio_palette

MIN_SCALE_BITS = 4.0  # a prompt the model found easy stays pale: shades are against at least this


def visible_token(text: str) -> str:
    """A token as it can be read in one cell row: a newline as ⏎, a space as ·, a tab as →."""
    return printable(text).replace("\n", "⏎").replace("\t", "→").replace(" ", "·") or "∅"


def surprisal_shades(surprisal: list[float | None], surface: Color, strong: Color) -> list[Color | None]:
    """Each token's background: ``surface`` blended toward ``strong`` in proportion to its
    surprisal against the prompt's largest (None: the first token, which nothing predicts)."""
    known = [s for s in surprisal if s is not None]
    scale = max([MIN_SCALE_BITS, *known])
    return [None if s is None else surface.blend(strong, min(1.0, max(0.0, s) / scale)) for s in surprisal]


class TokenStrip(Static):
    """``show(tokens, surprisal)``; redrawn only when shown something new or the theme changes."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.tokens: list[str] = []
        self.surprisal: list[float | None] = []
        self.shades: list[Color | None] = []

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._draw())

    def show(self, tokens: list[str], surprisal: list[float | None]) -> None:
        self.tokens, self.surprisal = list(tokens), list(surprisal)
        self._draw()

    def _draw(self) -> None:
        palette = studio_palette(self.app)
        self.shades = surprisal_shades(self.surprisal, palette.surface, palette.val)
        text = Text(no_wrap=False)
        for token, bits, shade in zip(self.tokens, self.surprisal, self.shades):
            style = Style(bgcolor=shade.rich_color, color=_ink(shade, palette).rich_color) if shade else Style()
            text.append(visible_token(token), style=style)
            text.append(f" {bits:.1f}  " if bits is not None else " –  ", style="dim")
        self.update(text)


def _ink(shade: Color, palette) -> Color:
    """Text that reads on ``shade``: dark on a strong shade, the theme's on a pale one."""
    return Color(16, 16, 16) if shade.brightness > 0.6 else palette.foreground
