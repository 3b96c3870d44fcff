"""Redraw a pane for new data at most a few times a second, always ending on the latest.

A pane whose data changes every training step (the loss chart, the layer map's
per-layer gradient norms) would otherwise redraw as often as the run steps, and
on a CPU every redraw is time taken from training. Data that arrives within the
interval is drawn once the interval is up, so the pane never stays behind.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from textual.widget import Widget


class RedrawPacer:
    def __init__(self, widget: Widget, redraw: Callable[[], None], max_hz: float) -> None:
        self.widget = widget
        self.redraw = redraw
        self.max_hz = max_hz
        self._drawn_at = -math.inf
        self._pending = False

    def data_changed(self) -> None:
        """New data is in: redraw now, or once the interval since the last redraw is up."""
        wait = self._drawn_at + 1 / self.max_hz - time.monotonic()
        if wait <= 0:
            self._drawn_at = time.monotonic()
            self.redraw()
        elif not self._pending:
            self._pending = True
            self.widget.set_timer(wait, self._interval_up)

    def _interval_up(self) -> None:
        self._pending = False
        self.data_changed()
