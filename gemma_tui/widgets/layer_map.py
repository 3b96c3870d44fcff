"""Attention layer map: one cell per decoder layer, and the selected layer's details.

Each cell is coloured by the layer's attention type (sliding window or full)
and shaded by one per-layer statistic, darker cells having smaller values: the
gradient norm of the latest step (``RunSnapshot.layer_stats``), or the attention
entropy or residual RMS measured on the fixed probe prompt at the latest evaluation
(``EvalResult.layers``); ``cycle_shading`` (the studio's ``a``) goes from one to the
next. Arrow keys, Home/End or a click select a layer; its window, RoPE base, shapes
and parameter count are listed below.
"""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from gemma_core.model.config import SLIDING, GemmaConfig
from gemma_core.run.events import EvalResult, LayerStats
from gemma_tui.formatting import count, number
from gemma_tui.palette import StudioPalette, studio_palette
from gemma_tui.widgets.redraw_pacer import RedrawPacer

CELL_WIDTH = 6  # " 12 S " : layer number and type letter
SMALL_CELL_WIDTH = 2  # "▸S" : where six numbered cells do not fit in a row, side by side
GAP = 1  # between numbered cells
BRIEF_DETAILS = 2  # the selected layer's lines a short terminal shows
# What the cells can be shaded by, in the order ``cycle_shading`` goes through them.
GRAD_NORM, ENTROPY, RESIDUAL_RMS = "grad norm", "attention entropy", "residual RMS"
SHADINGS = (GRAD_NORM, ENTROPY, RESIDUAL_RMS)
SHORT_NAMES = {GRAD_NORM: "grad norm", ENTROPY: "entropy", RESIDUAL_RMS: "residual RMS"}
UNITS = {ENTROPY: " nats"}


def latest_probe(evals: tuple[EvalResult, ...]) -> EvalResult | None:
    """The newest evaluation that measured the layers (an older log's have none)."""
    return next((result for result in reversed(evals) if result.layers), None)


def probe_values(shading: str, probe: EvalResult | None) -> LayerStats | None:
    """The probe's per-layer values for ``shading`` (entropy: the mean over heads)."""
    if probe is None:
        return None
    values = tuple(layer.entropy_mean if shading == ENTROPY else layer.residual_rms for layer in probe.layers)
    return LayerStats(probe.step, shading, values, probe.run_id)


def layer_parameters(cfg: GemmaConfig) -> int:
    """Weights in one decoder layer (the same for both attention types)."""
    attention = cfg.emb_dim * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    mlp = 3 * cfg.emb_dim * cfg.hidden_dim
    norms = 4 * cfg.emb_dim + (2 * cfg.head_dim if cfg.qk_norm else 0)
    return attention + mlp + norms


def layer_details(cfg: GemmaConfig, index: int, stats: LayerStats | None) -> list[str]:
    """The selected layer, most telling first, in short lines that fit a side column."""
    kind = cfg.layer_types[index]
    e, h, kv, d = cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if kind == SLIDING:
        lines = [f"Layer {index} of {cfg.n_layers}: sliding window",
                 f"attends to the last {cfg.sliding_window:,} tokens"]
    else:
        lines = [f"Layer {index} of {cfg.n_layers}: full attention",
                 f"attends to the whole context ({cfg.context_length:,} tokens)"]
    if stats is not None and index < len(stats.values):
        unit = UNITS.get(stats.name, "")
        lines.insert(1, f"{stats.name}: {number(stats.values[index])}{unit} (step {stats.step:,})")
    elif stats is not None and not stats.values:  # a mode whose values come at evaluations
        lines.insert(1, f"{stats.name}: none yet")
    lines += [
        f"RoPE base {cfg.rope_base_for(kind):,.0f} · heads of {d} dims",
        f"{h} query head{'s' if h != 1 else ''}, {kv} key/value head{'s' if kv != 1 else ''}",
        f"q_proj {e}→{h * d} · o_proj {h * d}→{e}",
        f"k_proj, v_proj {e}→{kv * d}" + (f" · q/k norm {d}" if cfg.qk_norm else ""),
        f"MLP {e}→{cfg.hidden_dim:,}→{e} (gate, up, down)",
        f"4 RMSNorms · {count(layer_parameters(cfg))} parameters",
    ]
    return lines


def shade(values: tuple[float, ...]) -> list[float]:
    """Each value's place between the smallest and largest, 0..1 (0.5 if all equal)."""
    good = [v for v in values if math.isfinite(v)]
    if not good:
        return [0.5] * len(values)
    low, high = min(good), max(good)
    span = high - low
    return [0.5 if not math.isfinite(v) or span == 0 else (v - low) / span for v in values]


class LayerMap(Widget, can_focus=True):
    """The grid of layers; posts ``LayerMap.Selected`` when the selection moves."""

    ALLOW_MAXIMIZE = True  # z zooms it to the whole screen

    BINDINGS = [
        Binding("left", "move(-1)", "Prev layer", show=False),
        Binding("right", "move(1)", "Next layer", show=False),
        Binding("up", "move_row(-1)", "Layer above", show=False),
        Binding("down", "move_row(1)", "Layer below", show=False),
        Binding("home", "select_layer(0)", "First layer", show=False),
        Binding("end", "select_layer(-1)", "Last layer", show=False),
    ]

    class Selected(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.config: GemmaConfig | None = None
        self.stats: LayerStats | None = None
        self._new_stats: LayerStats | None = None
        self.shading = GRAD_NORM
        self.probe: EvalResult | None = None  # the latest evaluation's per-layer probe
        self.pacer = RedrawPacer(self, self._draw_new_stats, max_hz=4.0)  # the app slows it on a CPU
        self.selected = 0
        self._brief = False

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    # --------------------------------------------------------------- data in
    def set_config(self, config: GemmaConfig) -> None:
        self.config = config
        self.selected = min(self.selected, config.n_layers - 1)
        self.refresh(layout=True)

    def show_stats(self, stats: LayerStats | None) -> None:
        """Take new per-layer values (every step); redraw at most ``pacer.max_hz`` times a second."""
        self._new_stats = stats
        if stats != self.stats:
            self.pacer.data_changed()

    def show_probe(self, evals: tuple[EvalResult, ...]) -> None:
        """Take the run's evaluations: the newest that measured the layers shades the cells in
        the entropy and residual RMS modes (it changes once per evaluation: drawn at once)."""
        probe = latest_probe(evals)
        if probe != self.probe:
            self.probe = probe
            if self.shading != GRAD_NORM:
                self.refresh(layout=True)

    def cycle_shading(self) -> str:
        """Shade by the next statistic (grad norm, attention entropy, residual RMS); returns it."""
        self.shading = SHADINGS[(SHADINGS.index(self.shading) + 1) % len(SHADINGS)]
        self.border_subtitle = "" if self.shading == GRAD_NORM else f"shade: {SHORT_NAMES[self.shading]} (a)"
        self.refresh(layout=True)
        return self.shading

    @property
    def shown(self) -> LayerStats | None:
        """The values the cells are shaded by now, if there are any yet."""
        return self.stats if self.shading == GRAD_NORM else probe_values(self.shading, self.probe)

    @property
    def brief(self) -> bool:
        """A short terminal: only the first lines of the selected layer's details."""
        return self._brief

    @brief.setter
    def brief(self, value: bool) -> None:
        if value != self._brief:
            self._brief = value
            self.refresh(layout=True)

    def _draw_new_stats(self) -> None:
        if self._new_stats != self.stats:
            self.stats = self._new_stats
            self.refresh()

    # ----------------------------------------------------------------- layout
    @staticmethod
    def cell_width_at(width: int) -> int:
        """Numbered cells where six fit in a row, else small ones (the details name the layer)."""
        return CELL_WIDTH if width + GAP >= 6 * (CELL_WIDTH + GAP) else SMALL_CELL_WIDTH

    @classmethod
    def columns_at(cls, width: int) -> int:
        """Cells per row ``width`` columns wide; a multiple of 6 when possible, so Gemma's
        every-sixth full-attention layers line up in one column."""
        cell = cls.cell_width_at(width)
        gap = GAP if cell == CELL_WIDTH else 0
        fit = max(1, (width + gap) // (cell + gap))
        return fit - fit % 6 if fit >= 6 else fit

    @property
    def cell_width(self) -> int:
        return self.cell_width_at(self.size.width)

    @property
    def gap(self) -> int:
        return GAP if self.cell_width == CELL_WIDTH else 0

    @property
    def columns(self) -> int:
        return self.columns_at(self.size.width)

    def cell_at(self, x: int, y: int) -> int | None:
        """The layer drawn at content offset (x, y), if any."""
        pitch = self.cell_width + self.gap
        if self.config is None or x % pitch >= self.cell_width:
            return None
        index = (y - 1) * self.columns + x // pitch  # row 0 is the legend
        if y < 1 or x // pitch >= self.columns or index >= self.config.n_layers:
            return None
        return index

    def rows_wanted(self, brief: bool, width: int) -> int:
        """Rows its content takes, short or full, ``width`` columns wide."""
        cfg = self.config
        if cfg is None:
            return 1
        legend = 2 if (self.stats is not None or self.shading != GRAD_NORM) and not brief else 1
        cells = math.ceil(cfg.n_layers / self.columns_at(width))
        details = len(layer_details(cfg, self.selected, self._details_stats()))
        return legend + cells + (min(BRIEF_DETAILS, details) if brief else 1 + details)

    # ---------------------------------------------------------------- actions
    def select(self, index: int) -> None:
        if self.config is None:
            return
        index = index % self.config.n_layers
        if index != self.selected:
            self.selected = index
            self.post_message(self.Selected(index))
            self.refresh()

    def action_move(self, delta: int) -> None:
        if self.config is not None:
            self.select(max(0, min(self.config.n_layers - 1, self.selected + delta)))

    def action_move_row(self, delta: int) -> None:
        if self.config is not None:
            target = self.selected + delta * self.columns
            if 0 <= target < self.config.n_layers:
                self.select(target)

    def action_select_layer(self, index: int) -> None:
        self.select(index)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = self.cell_at(offset.x, offset.y)
        if index is not None:
            self.select(index)

    # ----------------------------------------------------------------- render
    def render(self) -> Text:
        cfg = self.config
        if cfg is None:
            return Text("preparing the model…", style="italic")
        palette = studio_palette(self.app)
        text = Text()
        text.append_text(self._legend(cfg, palette))
        shown = self.shown
        values = shade(shown.values) if shown and len(shown.values) == cfg.n_layers else None
        columns, numbered, gap = self.columns, self.cell_width == CELL_WIDTH, self.gap
        for index, kind in enumerate(cfg.layer_types):
            if index % columns == 0:
                text.append("\n")
            elif gap:
                text.append(" " * gap)
            base = palette.sliding if kind == SLIDING else palette.full
            weight = 0.35 + 0.65 * values[index] if values else 0.7
            background = palette.surface.blend(base, weight)
            chosen = index == self.selected
            # The selected cell keeps its shade (it is data) and gains a marker instead.
            style = Style(bgcolor=background.hex, color=background.get_contrast_text(1.0).hex,
                          bold=chosen, underline=chosen)
            letter = "S" if kind == SLIDING else "F"
            marker = "▸" if chosen else " "
            text.append(f"{marker}{index:>2} {letter} " if numbered else f"{marker}{letter}", style=style)
        details = layer_details(cfg, self.selected, self._details_stats())
        if not self.brief:
            text.append("\n")  # a blank line where there is room
        for line in details[:BRIEF_DETAILS] if self.brief else details:
            text.append("\n" + line)
        return text

    def _legend(self, cfg: GemmaConfig, palette: StudioPalette) -> Text:
        sliding = cfg.layer_types.count(SLIDING)
        legend = Text()
        legend.append("■ ", Style(color=palette.sliding.hex))
        legend.append(f"S sliding ×{sliding}  ")
        legend.append("■ ", Style(color=palette.full.hex))
        legend.append(f"F full ×{cfg.n_layers - sliding}")
        if self.brief:
            return legend
        shown = self.shown
        if self.shading == GRAD_NORM:
            if shown is not None:
                legend.append(f"\nshade: {shown.name} (darker: smaller)", Style(dim=True))
        elif shown is None or len(shown.values) != cfg.n_layers:
            legend.append(f"\nshade: {SHORT_NAMES[self.shading]}: no evaluation yet", Style(dim=True))
        else:
            good = [v for v in shown.values if math.isfinite(v)] or [math.nan]
            legend.append(f"\nshade: {SHORT_NAMES[self.shading]} {number(min(good))}–{number(max(good))}"
                          f"{UNITS.get(self.shading, '')}", Style(dim=True))
        return legend

    def _details_stats(self) -> LayerStats | None:
        """What the selected layer's details say of the shading: its value, or that there is
        none yet (an entropy or RMS mode before the first evaluation)."""
        shown = self.shown
        if shown is None and self.shading != GRAD_NORM:
            return LayerStats(0, self.shading, ())
        return shown
