"""The key to the chat's token shading: which shade stands for which probability.

Shown under the chat's transcript while the shading is on (``u``); drawn once, and again
when the theme changes.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Static

from gemma_tui.palette import studio_palette
from gemma_tui.token_shading import legend_text

COMPACT_BELOW = 72  # columns under which the legend keeps to one row, without its hint


class ProbabilityLegend(Static):
    DEFAULT_CSS = """
    ProbabilityLegend { height: auto; }
    """

    def on_mount(self) -> None:
        self._draw()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._draw())

    def on_resize(self, event: events.Resize) -> None:
        self._draw()

    def _draw(self) -> None:
        width = self.content_size.width
        self.update(legend_text(studio_palette(self.app), compact=0 < width < COMPACT_BELOW))
