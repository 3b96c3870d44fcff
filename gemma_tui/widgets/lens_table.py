"""The logit lens as a table, layers down: what each layer's output would predict if the
model stopped there (its final norm and output head applied to that layer's residual).

Two views: ``LAST``, the last position's top candidates per layer (what the model is about
to say, narrow enough for 80 columns), and ``POSITIONS``, every position's top candidate
per layer (the prompt across, for a wide terminal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import DataTable

from gemma_tui.widgets.token_strip import visible_token

if TYPE_CHECKING:
    from gemma_core.inspect import Inspection, Prediction

LAST, POSITIONS = "last", "positions"
TOKEN_CHARS = 10  # a candidate's text is cut to this many characters


def candidate(prediction: Prediction, with_prob: bool = True) -> str:
    token = visible_token(prediction.token)
    token = token if len(token) <= TOKEN_CHARS else token[:TOKEN_CHARS - 1] + "…"
    return f"{token} {prediction.prob:.2f}" if with_prob else token


class LensTable(DataTable):
    """``show(inspection, view)``; arrow keys stay the screen's (the table takes no focus)."""

    can_focus = False

    def __init__(self, **kwargs) -> None:
        super().__init__(zebra_stripes=True, cursor_type="none", **kwargs)
        self.view = LAST

    def show(self, found: Inspection | None, view: str) -> None:
        self.view = view
        self.clear(columns=True)
        if found is None:
            return
        if view == LAST:
            self.add_columns("layer", "type", *(f"#{i + 1}" for i in range(found.top_k)))
            for layer in found.layers:
                self.add_row(str(layer.index), layer.type, *(candidate(p) for p in layer.lens[-1]))
        else:
            self.add_columns("layer", *(f"{i}:{visible_token(t)[:TOKEN_CHARS]}" for i, t in enumerate(found.tokens)))
            for layer in found.layers:
                self.add_row(str(layer.index), *(candidate(position[0], with_prob=False) for position in layer.lens))
