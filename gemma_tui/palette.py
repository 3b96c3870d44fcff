"""The colours the studio draws with itself (plots, layer map), from the app's theme.

A studio theme names them in its ``[variables]`` table (``gemma-train`` ...);
any other theme (Textual's built-ins) gets them from its own semantic colours,
so every theme draws a readable chart. Widgets call ``studio_palette(app)``
when they draw and redraw on ``app.theme_changed_signal``.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import App
from textual.color import Color, ColorParseError

# studio variable -> the theme colour used when a theme does not define it
FALLBACKS = {
    "gemma-train": "foreground-darken-3",
    "gemma-smooth": "primary",
    "gemma-val": "warning",
    "gemma-lr": "success",
    "gemma-sliding": "primary",
    "gemma-full": "accent",
}


@dataclass(frozen=True)
class StudioPalette:
    train: Color  # raw training loss
    smooth: Color  # smoothed training loss
    val: Color  # validation loss
    lr: Color  # learning rate
    sliding: Color  # sliding-window attention layers
    full: Color  # full (global) attention layers
    surface: Color  # what a pane is drawn on
    foreground: Color
    error: Color


def _parse(value: str | None) -> Color | None:
    if not value:
        return None
    try:
        color = Color.parse(value)
    except ColorParseError:
        return None  # e.g. "auto 87%"
    # The studio blends colours and hands them to Rich and plotext as opaque RGB. An ANSI
    # theme's named colour ("ansi_blue") is not RGB: its RGB stands in. The terminal's own
    # default colour ("ansi_default") and "transparent" have none: the fallbacks apply.
    if (color.ansi is not None and color.ansi < 0) or color.a == 0:
        return None
    return Color(color.r, color.g, color.b)


def studio_palette(app: App) -> StudioPalette:
    variables = app.theme_variables
    dark = app.current_theme.dark
    foreground = _parse(variables.get("foreground")) or (Color(224, 224, 224) if dark else Color(30, 30, 30))
    surface = _parse(variables.get("surface")) or (Color(30, 30, 30) if dark else Color(250, 250, 250))

    def pick(name: str) -> Color:
        return (_parse(variables.get(name)) or _parse(variables.get(FALLBACKS[name]))
                or foreground)

    return StudioPalette(
        train=pick("gemma-train"), smooth=pick("gemma-smooth"), val=pick("gemma-val"),
        lr=pick("gemma-lr"), sliding=pick("gemma-sliding"), full=pick("gemma-full"),
        surface=surface, foreground=foreground,
        error=_parse(variables.get("error")) or Color(220, 60, 60))
