"""The studio fits whatever terminal it gets (issue 27): every pane shown whole, borders and
all, or hidden whole and reachable with m; legends beside the plots, never over a curve;
the tokens axis carries its unit; the help scrolls at once and says how to close it; the
machine pane never announces a graph it has no room for; the best validation loss keeps its
digits on a line of its own. Text snapshots of each size are in test_layouts.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from gemma_core.run.events import EvalResult, LogMessage
from gemma_tui.app import create_app
from gemma_tui.compare import CompareApp
from studio_preview import PreviewEngine, preview_snapshot
from gemma_tui.screens.help import HelpScreen
from studio_screens import screen_text
from gemma_tui.widgets.chat_panel import ChatPanel
from gemma_tui.widgets.gpu_panel import GpuPanel
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart
from gemma_tui.widgets.run_stats import RunStats
from tests.tui.test_panes import H100, NO_GPU, FixedTelemetry, _utc_clock  # noqa: F401

PANES = (LossChart, ChatPanel, RunStats, LayerMap, GpuPanel)
SIZES = [(80, 24), (100, 30), (120, 35), (142, 38), (160, 45), (178, 45), (240, 60),
         (80, 20), (100, 18), (70, 14), (60, 30)]


def busy_run() -> PreviewEngine:
    """A run whose Run pane has every line it can have: MFU, skipped steps, three messages."""
    snap = preview_snapshot()
    latest = replace(snap.latest, mfu=0.41)
    messages = tuple(LogMessage("info", text) for text in ("resumed from step 500", "evaluating every 100 steps",
                                                            "training on cpu in float32"))
    return PreviewEngine(replace(snap, latest=latest, skipped_steps=2, messages=messages), alive=True)


def studio(engine=None, sample=NO_GPU):
    return create_app(engine or busy_run(), telemetry=FixedTelemetry(sample, sample, sample),
                      telemetry_hz=20, poll_hz=20)


async def until(pilot, condition, timeout: float = 20.0) -> bool:
    """Wait for ``condition`` (a busy machine redraws late); its last value."""
    import time

    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await pilot.pause(0.05)
    return condition()


def pane_is_whole(lines: list[str], region) -> bool:
    """Its four corners drawn where its region says, inside the screen above the footer."""
    top, bottom = region.y, region.y + region.height - 1
    left, right = region.x, region.x + region.width - 1
    if bottom >= len(lines) - 1:  # the last row is the footer
        return False
    return (lines[top][left] == "╭" and lines[top][right] == "╮"
            and lines[bottom][left] == "╰" and lines[bottom][right] == "╯")


@pytest.mark.parametrize("sample", [NO_GPU, H100], ids=["cpu", "gpu"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_pane_is_whole_or_hidden_and_m_shows_each_hidden_one(size, sample):
    app = studio(sample=sample)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        lines = screen_text(app).splitlines()
        hidden = []
        for kind in PANES:
            pane = app.query_one(kind)
            if pane.display and pane.parent.display:
                assert pane_is_whole(lines, pane.region), f"{kind.__name__} is cut at {size}"
            else:
                hidden.append(pane)
        assert app.query_one(LossChart).display  # the chart always shows
        if size[0] >= 80 and size[1] >= 24:
            assert not any(isinstance(p, (RunStats, LayerMap)) for p in hidden)
        if not hidden:
            assert "More panes" not in lines[-1]
            return
        assert await until(pilot, lambda: "m More panes" in screen_text(app).splitlines()[-1])
        for pane in hidden:
            await pilot.press("m")
            assert await until(pilot, lambda: app.screen.maximized is pane and app.focused in (None, pane))
            await pilot.pause(0.2)
            assert pane_is_whole(screen_text(app).splitlines(), pane.region)
        await pilot.press("m")
        assert await until(pilot, lambda: app.screen.maximized is None)


def test_the_side_column_is_shared_exactly_and_what_does_not_fit_goes_whole():
    from gemma_tui.pane_fit import PaneWants, plan_side_column

    run = PaneWants(least=7, full=19)
    for rows in range(0, 60):
        plan = plan_side_column(rows, run, layers_brief=8, layers_full=18, machine_readings=13)
        heights = [h for h in (plan.run, plan.layers, plan.machine) if h is not None]
        assert sum(heights) in (0, rows)  # never more than the column: nothing overflows
        if plan.run is not None:
            assert plan.run >= run.least
        if plan.layers is not None:
            assert plan.layers >= 8
        if plan.machine is not None:
            assert plan.machine >= 13
            assert plan.machine_history == (plan.machine - 13 >= 3)
    assert plan_side_column(36, run, 8, 18, 5).machine is not None  # 1280x760: the machine shows


def plot_canvas(chart_text: str) -> list[str]:
    """The plot's rows: from the frame's top (┌) to its bottom (└)."""
    rows = chart_text.splitlines()
    top = next(i for i, row in enumerate(rows) if "┌" in row)
    bottom = next(i for i, row in enumerate(rows) if "└" in row)
    return rows[top:bottom + 1]


def region_text(lines: list[str], region) -> str:
    return "\n".join(line[region.x:region.x + region.width] for line in lines[region.y:region.y + region.height])


@pytest.mark.parametrize("size", [(80, 24), (160, 45), (240, 60)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("zoomed", [False, True], ids=["studio", "zoomed"])
async def test_the_loss_legend_is_in_the_border_and_the_plot_keeps_every_row(size, zoomed):
    app = studio()
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        if zoomed:
            app.screen.maximize(app.query_one(LossChart))
            await pilot.pause(0.5)
        chart = app.query_one(LossChart)
        lines = screen_text(app).splitlines()
        text = region_text(lines, chart.content_region)
        canvas = plot_canvas(text)
        for word in ("train", "smoothed", "validation", "val", "lr", "⅃"):
            assert not any(word in row for row in canvas), word
        assert len(canvas) >= chart.content_region.height - 3  # only the tick and axis-title rows below
        border = lines[chart.region.y]
        assert "•val" in border and "smoothed" in border  # the legend: in the top border


def write_run(folder: Path, factor: float, steps: int = 235) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "training_log.jsonl", "w", encoding="utf-8") as log:
        for step in range(1, steps + 1):
            log.write(json.dumps({"step": step, "train_loss": 2 + 6 * factor * math.exp(-step / 40),
                                  "learning_rate": 1e-3, "tokens_seen": 512 * step}) + "\n")
    with open(folder / "validation_log.jsonl", "w", encoding="utf-8") as log:
        for step in range(0, steps + 1, 20):
            log.write(json.dumps({"step": step, "val_loss": 2.1 + 6 * factor * math.exp(-step / 40),
                                  "tokens_seen": 512 * step}) + "\n")
    return folder


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    return [write_run(tmp_path / "baseline", 1.0), write_run(tmp_path / "wide-lr", 1.3)]


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_the_comparison_names_its_runs_above_the_plot_never_over_the_curves(two_runs, size):
    app = CompareApp(two_runs)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        lines = screen_text(app).splitlines()
        chart = app.chart.content_region
        canvas = plot_canvas(region_text(lines, chart))
        for word in ("baseline", "wide-lr", "train", "validation"):
            assert not any(word in row for row in canvas), word
        assert len(canvas) >= chart.height - 3
        legend = region_text(lines, app.legend.content_region)
        assert "baseline" in legend and "wide-lr" in legend and "validation" in legend


@pytest.mark.parametrize("size", [(80, 24), (120, 35), (160, 45)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_the_tokens_axis_says_its_unit_on_every_tick_at_every_width(size):
    app = studio()
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        await pilot.press("t")
        await pilot.pause(0.5)
        text = region_text(screen_text(app).splitlines(), app.query_one(LossChart).content_region)
        ticks = text.splitlines()[len(plot_canvas(text)) + text.splitlines().index(plot_canvas(text)[0])]
        assert "1M" in ticks and "2M" in ticks, ticks  # 2.6M tokens seen: never a bare "1 2"


async def test_the_comparison_tokens_axis_says_its_unit(two_runs):
    app = CompareApp(two_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("t")
        await pilot.pause(0.5)
        text = screen_text(app)
        assert "50k" in text and "100k" in text


async def test_help_scrolls_with_the_keys_at_once_and_the_footer_says_how_to_close_it():
    app = studio()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("f1")
        await pilot.pause(0.3)
        assert isinstance(app.screen, HelpScreen)
        dialog = app.screen.query_one("#help-dialog")
        footer = screen_text(app).splitlines()[-1]
        assert "Esc" in footer and "Close help" in footer
        for key in ("pagedown", "down"):
            before = dialog.scroll_y
            await pilot.press(key)
            await pilot.pause(0.3)
            assert dialog.scroll_y > before, key
        await pilot.press("pageup")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, HelpScreen)


@pytest.mark.parametrize("sample", [NO_GPU, H100], ids=["cpu", "gpu"])
@pytest.mark.parametrize("size", [(142, 38), (160, 45), (178, 45), (100, 30)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_the_machine_pane_shows_its_history_label_only_with_a_graph_under_it(size, sample):
    app = studio(sample=sample)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.6)
        panel = app.query_one(GpuPanel)
        if not panel.display:
            return
        label = panel.query_one("#gpu-history-label")
        graph = panel.query_one("#gpu-history")
        lines = screen_text(app).splitlines()
        shown = "latest readings" in region_text(lines, panel.content_region)
        if shown:
            inside = panel.content_region
            assert graph.display and graph.region.height >= 2
            assert graph.region.y + graph.region.height <= inside.y + inside.height
        else:
            assert not label.display or not label.region.height


async def test_the_best_validation_loss_has_a_line_of_its_own_in_full_precision():
    snap = preview_snapshot(step=700)
    snap = replace(snap, eval_history=snap.eval_history[:-1], best_eval=snap.eval_history[-2])  # best: at 600
    later = EvalResult(step=700, tokens_seen=700 * 4096, val_loss=2.31234, perplexity=10.1, bits_per_byte=0.85)
    snap = replace(snap, eval_history=snap.eval_history + (later,))
    best = snap.best_eval
    for size in ((80, 24), (160, 45)):
        app = studio(PreviewEngine(snap, alive=True))
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.5)
            stats = app.query_one(RunStats)
            text = region_text(screen_text(app).splitlines(), stats.content_region)
            assert "val loss   2.3123 @ 700" in text
            assert f"best val   {best.val_loss:.4f} @ {best.step:,}" in text
