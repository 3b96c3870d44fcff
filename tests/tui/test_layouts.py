"""The studio at the terminal sizes people have, from a default 80x24 to a large
240x60, live and for a finished run. At each, every pane is on screen with what makes it
useful (not a bare border), and the footer starts with q Quit.

Each size is also kept as a text snapshot in tests/tui/snapshots/ (see test_panes.py for how
to regenerate them after a deliberate change).
"""

from __future__ import annotations

import pytest

from gemma_core.run.events import RunState
from gemma_tui.app import create_app
from studio_preview import PreviewEngine, preview_snapshot
from studio_screens import screen_text
from gemma_tui.widgets.chat_panel import ChatPanel
from gemma_tui.widgets.gpu_panel import GpuPanel
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart
from gemma_tui.widgets.run_stats import RunStats
from tests.tui.test_panes import NO_GPU, FixedTelemetry, _utc_clock, check_snapshot  # noqa: F401

# The sizes people have: 80x24 and 100x30 terminals, 120x35, a 1280x760 desktop window (142x38),
# 160x45, a 1600x900 browser page (178x45) and a large 240x60.
SIZES = [(80, 24), (100, 30), (120, 35), (142, 38), (160, 45), (178, 45), (240, 60)]


def live_run() -> PreviewEngine:
    return PreviewEngine(alive=True)


def finished_run() -> PreviewEngine:
    return PreviewEngine(snapshot=preview_snapshot(step=1500, max_steps=1500, state=RunState.FINISHED))


async def studio_at(size: tuple[int, int], engine: PreviewEngine, pilot_work=None) -> tuple[str, object]:
    app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)
    async with app.run_test(size=size) as pilot:
        app.chat_panel.send("ROMEO:")
        for _ in range(50):
            await pilot.pause(0.05)
            if not app.chat_panel.busy:
                break
        await pilot.pause(0.2)
        regions = {pane: app.query_one(pane).content_region for pane in
                   (LossChart, RunStats, LayerMap, ChatPanel, GpuPanel)}
        text = screen_text(app)
        name = f"studio_{'live' if engine.owns_run and engine.is_alive() else 'finished'}_{size[0]}x{size[1]}"
        check_snapshot(name, app)
    return text, regions


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("engine", [live_run, finished_run], ids=["live", "finished"])
async def test_every_pane_is_legible_and_the_footer_starts_with_quit(size, engine):
    text, regions = await studio_at(size, engine())
    lines = text.splitlines()
    assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines)
    assert lines[-1].lstrip().startswith("q Quit")
    for title in ("Loss", "Run", "Layers", "Chat", "Machine"):
        assert f"─ {title} " in text, title

    # What each pane is for is readable at every size:
    state = "RUNNING" if engine is live_run else "FINISHED"
    for words in (state, "step", "train loss", "val loss",  # the run
                  "Layer 0 of 18",  # the selected layer
                  "you › ROMEO:", "model @ step", "temp", "top-k", "top-p", "max",  # chat and its settings
                  "CPU", "RAM"):  # the machine
        assert words in text, words
    assert text.count("┤") >= 3  # the chart's y-axis ticks: a plot, not a legend over an empty box
    chart, stats, layers, chat, machine = (regions[p] for p in (LossChart, RunStats, LayerMap, ChatPanel, GpuPanel))
    assert chart.height >= 8 and chart.width >= 36
    assert chat.height >= 6 and chat.width >= 36
    assert min(stats.height, layers.height, machine.height) >= 3


async def test_a_large_terminal_gives_the_room_to_the_chart_the_chat_and_the_machine_history():
    _, small = await studio_at((160, 45), live_run())
    _, large = await studio_at((240, 60), live_run())
    for pane in (LossChart, ChatPanel):
        assert large[pane].height > small[pane].height and large[pane].width > small[pane].width
    assert large[GpuPanel].height > small[GpuPanel].height  # its history chart grows, not blank rows
    assert large[RunStats].width > small[RunStats].width


async def test_a_short_terminal_keeps_the_run_lines_that_matter_most():
    text, _ = await studio_at((80, 24), live_run())
    for words in ("RUNNING", "step", "train loss", "val loss", "ETA"):
        assert words in text, words
    assert "parameters" not in text  # the least needed line gives way first
