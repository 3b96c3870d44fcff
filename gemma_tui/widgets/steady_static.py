"""A Static that asks for a new layout only when its height changes.

``Static.update`` lays the screen out again on every call, and a layout
re-renders every pane: CPU time the training thread on the same cores needs.
Panes whose text changes every poll but whose height rarely does use this.
"""

from __future__ import annotations

from textual.visual import VisualType
from textual.widgets import Static


class SteadyStatic(Static):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._height: int | None = None

    def update(self, content: VisualType = "", *, layout: bool = True) -> None:
        super().update(content, layout=False)
        height = self.visual.get_height(self.styles, max(1, self.size.width))
        if layout and height != self._height:
            self.refresh(layout=True)
        self._height = height
