"""One head's attention map drawn in the terminal: row i is token i, column j the token it
reads, each cell two rows of the map in half blocks (▀: the top row in the foreground
colour, the bottom one in the background), shaded by weight.

A key a query cannot see (after it, or beyond a sliding layer's window) has weight exactly
0 and is left blank, so a sliding layer shows its band and a full layer its whole
triangle. A prompt longer than the room is pooled, each cell the largest weight it covers:
a blank cell is still one that no query in it sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from gemma_tui.palette import studio_palette

if TYPE_CHECKING:
    from gemma_core.inspect import LayerInspection

CAPTION_ROWS = 3  # two caption lines and the axis legend
FAINTEST = 0.12  # the least shade of a visible key, so the band shows where weights are tiny
SHADES = 24  # steps of shade between the faintest and the hue


class AttentionMap(Widget, can_focus=True):
    DEFAULT_CSS = "AttentionMap { width: 1fr; height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.inspected: LayerInspection | None = None
        self.n_layers = 0
        self.head = 0
        self._weights: np.ndarray | None = None  # (T, T) of the shown head

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    def show(self, layer: LayerInspection | None, head: int, n_layers: int) -> None:
        self.inspected, self.head, self.n_layers = layer, head, n_layers
        # A view of the tensor's memory, not a torch operation (see gemma_tui/inspection.py).
        self._weights = layer.attention[head].numpy() if layer is not None else None
        self.refresh()

    def caption(self) -> tuple[str, str]:
        layer = self.inspected
        if layer is None:
            return "no inspection yet", ""
        kind = f"sliding, window {layer.window}" if layer.window is not None else "full (global)"
        heads = layer.attention.shape[0]
        entropy = float(layer.entropy[self.head])
        return (f"layer {layer.index} of {self.n_layers} · {kind}",
                f"head {self.head + 1} of {heads} · entropy {entropy:.2f} nats")

    def render(self) -> Text:
        first, second = self.caption()
        text = Text(f"{first}\n{second}\n", no_wrap=True, overflow="ellipsis")
        if self._weights is None:
            return text
        width, rows = self.content_size.width, self.content_size.height - CAPTION_ROWS
        if width < 1 or rows < 1:
            return text
        tokens = self._weights.shape[0]
        grid = fit_to(self._weights, width, 2 * rows)
        pooled = grid.shape[1] < tokens
        text.append(f"↓ token · → token it reads{'  (pooled: max per cell)' if pooled else ''}\n", style="dim")
        palette = studio_palette(self.app)
        hue = palette.sliding if self.inspected.window is not None else palette.full
        text.append_text(half_blocks(grid, palette.surface, hue))
        return text


def fit_to(weights: np.ndarray, width: int, half_rows: int) -> np.ndarray:
    """The (T, T) map at the size it is drawn: each token repeated to fill the room when it is
    small (keys as wide as queries are tall), pooled by maximum when it is large."""
    tokens = weights.shape[0]
    room = min(width, half_rows)
    if tokens <= room:
        scale = room // tokens
        return np.repeat(np.repeat(weights, scale, axis=0), scale, axis=1)
    starts = (np.arange(room) * tokens) // room  # ``room`` bins, their first tokens
    return np.maximum.reduceat(np.maximum.reduceat(weights, starts, axis=0), starts, axis=1)


def half_blocks(grid: np.ndarray, surface: Color, hue: Color) -> Text:
    """Two map rows per text line: ▀ with the top cell's shade as the foreground and the bottom
    one's as the background; a pair that is all unseen is a blank."""
    levels = [surface.blend(hue, FAINTEST + (1 - FAINTEST) * (level / SHADES)) for level in range(SHADES + 1)]
    styles: dict[tuple[int, int], Style] = {}

    def level(weight: float) -> int:  # -1: unseen
        return round(float(np.sqrt(weight)) * SHADES) if weight > 0 else -1

    def style(upper: int, lower: int) -> Style:
        if (upper, lower) not in styles:
            fg = levels[upper] if upper >= 0 else surface
            bg = levels[lower] if lower >= 0 else surface
            styles[upper, lower] = Style(color=fg.rich_color, bgcolor=bg.rich_color)
        return styles[upper, lower]

    text = Text(no_wrap=True)
    rows, cols = grid.shape
    for top in range(0, rows, 2):
        for col in range(cols):
            upper = level(grid[top, col])
            lower = level(grid[top + 1, col]) if top + 1 < rows else -1
            if upper < 0 and lower < 0:
                text.append(" ")
            else:
                text.append("▀", style=style(upper, lower))
        text.append("\n")
    return text
