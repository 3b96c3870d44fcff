"""A reply's tokens shaded by how sure the model was of each, and what it weighed at one.

The probability is the model's own (``gemma_core/model/token_choices.py``): before temperature,
top-k and top-p. Shades come in five bands, so that a band can be named in a legend and told
apart at a glance: a token the model was sure of stays close to the pane's surface, one it
hardly expected takes the theme's strong colour (the one the Inspect screen shades surprisal
with). Text on a shade is the theme's, or black or white where that would not read.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.color import Color

from gemma_core.model.token_choices import TokenChoice
from gemma_core.safe_text import printable
from gemma_tui.palette import StudioPalette

# (lowest probability of the band, its label, how far from the surface toward the strong colour)
BANDS = ((0.8, "≥80%", 0.12), (0.5, "≥50%", 0.35), (0.2, "≥20%", 0.58), (0.05, "≥5%", 0.8), (0.0, "<5%", 1.0))
MIN_INK_CONTRAST = 0.45  # brightness apart that text keeps from its shade


@dataclass(frozen=True)
class Span:
    """Where a token shows in the reply as displayed: characters ``start`` to ``end``."""

    token: int
    start: int
    end: int


def band_of(probability: float) -> int:
    return next(i for i, (low, _, _) in enumerate(BANDS) if probability >= low)


def shade_of(band: int, palette: StudioPalette) -> Color:
    # An ANSI theme's colours are the terminal's own and do not blend: their usual RGB values do.
    surface, strong = (Color(c.r, c.g, c.b) for c in (palette.surface, palette.val))
    return surface.blend(strong, BANDS[band][2])


def ink_on(shade: Color, palette: StudioPalette) -> Color:
    """The theme's text colour where it reads on ``shade``, else black or white."""
    if abs(palette.foreground.brightness - shade.brightness) >= MIN_INK_CONTRAST:
        return palette.foreground
    return Color(16, 16, 16) if shade.brightness > 0.5 else Color(240, 240, 240)


def band_style(band: int, palette: StudioPalette) -> Style:
    shade = shade_of(band, palette)
    return Style(bgcolor=shade.rich_color, color=ink_on(shade, palette).rich_color)


def spans(reply: str, tokens: list[TokenChoice]) -> list[Span]:
    """Each token's place in ``reply`` (the reply as shown: control characters removed, as
    ``printable`` removes them piece by piece). Tokens past the reply's end (cut by a stop
    string, or ahead of the text still held back) and those that complete no character are
    left out."""
    found, position = [], 0
    for index, token in enumerate(tokens):
        if position >= len(reply):
            break
        shown = len(printable(token.text))
        end = min(position + shown, len(reply))
        if end > position:
            found.append(Span(index, position, end))
        position += shown
    return found


def append_shaded(text: Text, reply: str, tokens: list[TokenChoice], selected: int | None,
                  palette: StudioPalette) -> None:
    """``reply`` onto ``text``, each token on its band's shade and marked with its index (a
    click finds it by the style's meta); the selected token reversed."""
    shown_to = 0
    for span in spans(reply, tokens):
        style = band_style(band_of(tokens[span.token].probability), palette) + Style.from_meta({"token": span.token})
        if span.token == selected:
            style += Style(reverse=True, bold=True)
        text.append(reply[span.start:span.end], style=style)
        shown_to = span.end
    text.append(reply[shown_to:])


def percent(probability: float) -> str:
    if probability >= 0.095:
        return f"{probability:.0%}"
    if probability >= 0.001:
        return f"{probability:.1%}"
    return "<0.1%"


def visible(name: str) -> str:
    """A token as it can be read in one row: a newline as ⏎, a space as ·, a tab as →."""
    return printable(name).replace("\n", "⏎").replace("\t", "→").replace(" ", "·") or "∅"


def alternatives_text(choice: TokenChoice, position: int, count: int, palette: StudioPalette) -> Text:
    """What the model weighed at one token: every alternative with its probability, likeliest
    first, the one it wrote marked ▸."""
    text = Text(no_wrap=False)
    text.append(f"token {position + 1} of {count}: ", style="dim")
    for n, alternative in enumerate(choice.alternatives):
        if n:
            text.append(" · ", style="dim")
        chosen = alternative.token_bytes == choice.token_bytes
        style = band_style(band_of(alternative.probability), palette)
        text.append(("▸" if chosen else "") + visible(alternative.name), style=style + Style(bold=chosen))
        text.append(f" {percent(alternative.probability)}", style="bold" if chosen else "")
    return text


def legend_text(palette: StudioPalette, compact: bool = False) -> Text:
    """The bands' shades with their probabilities, then what they mean; ``compact``: in one
    narrow row (the footer then names the keys)."""
    text = Text(no_wrap=False)
    for band, (_, label, _) in enumerate(BANDS):
        text.append(f" {label}" + (" " if band == len(BANDS) - 1 else ""), style=band_style(band, palette))
    if compact:
        text.append(" probability", style="dim")
    else:
        text.append(" the model's probability · ← → or a click on a token: what else it weighed",
                    style="dim")
    return text
