"""Each pane drawn from fixed data, compared with the text snapshot in tests/tui/snapshots/.

Why text, not pytest-textual-snapshot: that plugin pins pytest<9 (we run 9).
Why text, not SVG: a text snapshot shows in a review diff exactly which cells
changed. Colour is checked separately, by asserting on the SVG export.

The data is deterministic (``tests/studio_preview.py``; a fixed telemetry sample; UTC
clock), so a snapshot only changes when drawing changes. After a deliberate
change, or a Textual upgrade (textual is pinned exactly for this), regenerate:

    GEMMA_TUI_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_tui_panes.py

which rewrites tests/tui/snapshots/*.txt (review the diff before committing it).
"""

from __future__ import annotations

import difflib
import os
import re
import time
from pathlib import Path
from typing import Callable

import pytest
from textual.app import App, ComposeResult
from textual.widget import Widget

from gemma_core.model.presets import preset
from gemma_core.telemetry import GpuReading, HostReading, TelemetrySample, TorchMemory
from gemma_core.run.events import LayerStats, RunState
from gemma_tui.app import create_app
from studio_preview import PreviewEngine, preview_snapshot
from studio_screens import screen_text
from gemma_tui.themes import discover_themes
from gemma_tui.widgets.chat_panel import ChatPanel
from gemma_tui.widgets.gpu_panel import GpuPanel
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart
from gemma_tui.widgets.run_stats import RunStats

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("GEMMA_TUI_UPDATE_SNAPSHOTS") == "1"

NO_GPU = TelemetrySample(
    time=0.0, gpu=None, torch_memory=None,
    host=HostReading(cpu_percent=187.0, cpu_count=2, rss=1_300_000_000, ram_total=25 * 2**30),
    gpu_unavailable="no NVIDIA GPU")
H100 = TelemetrySample(
    time=0.0,
    gpu=GpuReading(index=0, name="NVIDIA H100 80GB HBM3", memory_used=41 * 2**30,
                   memory_total=80 * 2**30, utilization=87.0, temperature_c=64.0, power_w=412.0,
                   power_limit_w=700.0, process_memory=38 * 2**30),
    torch_memory=TorchMemory(allocated=30 * 2**30, reserved=36 * 2**30, peak=34 * 2**30),
    host=HostReading(cpu_percent=101.0, cpu_count=16, rss=6 * 2**30, ram_total=128 * 2**30),
    gpu_unavailable=None)


class FixedTelemetry:
    def __init__(self, *samples: TelemetrySample) -> None:
        self.samples = list(samples) or [NO_GPU]
        self.calls = 0

    def sample(self) -> TelemetrySample:
        sample = self.samples[min(self.calls, len(self.samples) - 1)]
        self.calls += 1
        return sample


@pytest.fixture(autouse=True)
def _utc_clock(monkeypatch):
    """Checkpoint times are shown in local time: pin the zone so snapshots match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class PaneHost(App):
    """One pane alone on a screen, in the studio's theme and stylesheet."""

    CSS_PATH = str(Path(__file__).parents[2] / "gemma_tui" / "studio.tcss")

    def __init__(self, pane: Widget, setup: Callable[[Widget], None]) -> None:
        super().__init__()
        self.pane, self.setup = pane, setup
        for theme in discover_themes().themes:
            self.register_theme(theme)
        self.theme = "gemma-dark"

    def compose(self) -> ComposeResult:
        yield self.pane

    def on_mount(self) -> None:
        self.pane.add_class("pane")
        self.pane.styles.height = "1fr"
        self.pane.styles.width = "1fr"
        self.setup(self.pane)


def check_snapshot(name: str, app: App) -> str:
    """Compare the screen with tests/tui/snapshots/NAME.txt (or rewrite it); returns the SVG
    export, on which callers check colours."""
    text = screen_text(app)
    svg = app.export_screenshot(title=name)
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return svg
    if not path.exists():
        pytest.fail(f"no snapshot {path.name}; create it with GEMMA_TUI_UPDATE_SNAPSHOTS=1")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(),
                                              "snapshot", "now", lineterm=""))
        pytest.fail(f"{name} drew differently from {path.name} (regenerate with "
                    f"GEMMA_TUI_UPDATE_SNAPSHOTS=1 if intended):\n{diff}")
    return svg


# ----------------------------------------------------------------- loss chart
async def test_loss_chart_snapshot():
    app = PaneHost(LossChart(), lambda chart: chart.show(preview_snapshot()))
    async with app.run_test(size=(100, 28)) as pilot:
        await pilot.pause()
        svg = check_snapshot("loss_chart", app)
        text = screen_text(app)
    assert "optimizer step" in text and "learning rate" in text and "•val" in text  # the legend, in the border
    assert "#6e9eff" in svg.lower()  # gemma-dark's smoothed-loss colour


async def test_loss_chart_log_view_against_tokens_snapshot():
    def setup(chart: LossChart) -> None:
        chart.show(preview_snapshot())
        chart.toggle_log_scale()
        chart.toggle_x_axis()
        chart.adjust_smoothing(+1)

    app = PaneHost(LossChart(), setup)
    async with app.run_test(size=(100, 28)) as pilot:
        await pilot.pause()
        check_snapshot("loss_chart_log_tokens", app)
        text = screen_text(app)
    assert "loss (log scale)" in text and "tokens seen" in text and "2M" in text and "smoothing 0.90" in text
    assert "log10" not in text and re.search(r"^│ *(10|5|4|3|2)┤", text, re.M)  # axis in loss values


async def test_loss_chart_before_the_first_step():
    empty = preview_snapshot(step=0)
    app = PaneHost(LossChart(), lambda chart: chart.show(empty))
    async with app.run_test(size=(80, 20)) as pilot:
        await pilot.pause()
        assert "waiting for the first optimizer step" in screen_text(app)


# ------------------------------------------------------------------ run stats
async def test_run_stats_snapshot():
    app = PaneHost(RunStats(), lambda stats: stats.show(preview_snapshot()))
    async with app.run_test(size=(48, 24)) as pilot:
        await pilot.pause()
        check_snapshot("run_stats", app)
        text = screen_text(app)
    for expected in ("RUNNING", "640 / 1,500", "42.7%", "ETA", "3,069/s", "2.62M",
                     "perplexity", "bits/byte", "step 500 at 22:21:40", "2.2520 @ 600  best"):
        assert expected in text, expected
    assert "MFU" not in text  # None on a CPU: not shown
    assert "adamw 1.36e-03" in text and "muon" not in text


async def test_run_stats_name_each_optimizer_with_its_learning_rate():
    app = PaneHost(RunStats(), lambda stats: stats.show(preview_snapshot(optimizer="muon")))
    async with app.run_test(size=(48, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
    assert "lr         muon 1.36e-02  adamw 1.36e-03" in text


async def test_run_stats_shows_a_failure_as_a_message():
    failed = preview_snapshot(state=RunState.FAILED,
                              error="out of memory at batch 16 x length 256: lower --train_batch_size")
    app = PaneHost(RunStats(), lambda stats: stats.show(failed))
    async with app.run_test(size=(60, 24)) as pilot:
        await pilot.pause()
        check_snapshot("run_stats_failed", app)
        text = screen_text(app)
    assert "FAILED" in text and "out of memory" in text and "Traceback" not in text


# --------------------------------------------------------------------- GPU
async def test_gpu_panel_with_a_gpu_snapshot():
    app = PaneHost(GpuPanel(), lambda panel: [panel.show(H100) for _ in range(3)])
    async with app.run_test(size=(48, 14)) as pilot:
        await pilot.pause()
        check_snapshot("gpu_panel_h100", app)
        text = screen_text(app)
    for expected in ("NVIDIA H100", "41.0 GiB / 80.0 GiB", "87%", "64°C", "412 / 700 W",
                     "38.0 GiB", "reserved 36.0 GiB", "peak 34.0 GiB", "GPU utilisation"):
        assert expected in text, expected


async def test_gpu_panel_without_a_gpu_snapshot():
    app = PaneHost(GpuPanel(), lambda panel: panel.show(NO_GPU))
    async with app.run_test(size=(48, 12)) as pilot:
        await pilot.pause()
        check_snapshot("gpu_panel_no_gpu", app)
        text = screen_text(app)
    assert text.count("No NVIDIA GPU") == 1
    assert "187% (this process, 2 cores)" in text and "1.2 GiB of 25.0 GiB" in text


# ---------------------------------------------------------------- layer map
async def test_layer_map_snapshot_with_a_full_attention_layer_selected():
    def setup(layer_map: LayerMap) -> None:
        layer_map.set_config(preset("seed-270m"))
        layer_map.show_stats(preview_snapshot().layer_stats)

    app = PaneHost(LayerMap(), setup)
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.press("end", "left", "left", "left", "left", "left", "left")  # layer 11
        await pilot.pause()
        svg = check_snapshot("layer_map", app)
        text = screen_text(app)
    assert "Layer 11 of 18: full attention" in text
    assert "RoPE base 1,000,000" in text and "k_proj, v_proj 640→256" in text
    cells = re.findall(r"\b\d{1,2} ([SF]) ", text)
    assert cells == ["S"] * 5 + ["F"] + ["S"] * 5 + ["F"] + ["S"] * 5 + ["F"]  # Gemma's 5:1
    assert "#ff8a65" in svg.lower() and "#6e9eff" in svg.lower()  # full / sliding colours


async def test_layer_map_redraws_new_values_at_most_its_rate_and_always_shows_the_last():
    first = LayerStats(1, "grad norm", (1.0,) * 18)
    app = PaneHost(LayerMap(), lambda layer_map: layer_map.set_config(preset("seed-270m")))
    async with app.run_test(size=(50, 20)) as pilot:
        layer_map = app.query_one(LayerMap)
        layer_map.pacer.max_hz = 5.0  # the studio uses 0.25 while a run trains on a CPU
        layer_map.show_stats(first)
        assert layer_map.stats == first  # the first values draw at once
        for step in range(2, 6):  # a step every few milliseconds: one redraw for all of them
            layer_map.show_stats(LayerStats(step, "grad norm", (float(step),) * 18))
        assert layer_map.stats == first
        for _ in range(30):
            await pilot.pause(0.1)
            if layer_map.stats != first:
                break
        assert layer_map.stats.step == 5


# --------------------------------------------------------------------- chat
async def test_chat_panel_snapshot_after_a_streamed_reply():
    engine = PreviewEngine()
    panel = ChatPanel(engine)

    app = PaneHost(panel, lambda _panel: None)
    async with app.run_test(size=(80, 16)) as pilot:
        panel.send("To be")
        for _ in range(50):
            await pilot.pause(0.05)
            if panel.active is None:
                break
        await pilot.pause(0.2)  # let the anchored scroll settle after the last line
        check_snapshot("chat_panel", app)
        text = screen_text(app)
    assert "model @ step 640" in text and "glass of fashion" in text


# ----------------------------------------------------------- the whole studio
async def test_studio_snapshot():
    # One machine sample, however slowly the app starts: the history sparkline is drawn from it.
    app = create_app(PreviewEngine(alive=True), telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        check_snapshot("studio", app)
        text = screen_text(app)
    for title in ("Loss", "Run", "Machine", "Layers", "Chat"):
        assert f"─ {title} " in text, title
    for key in ("Pause/Resume", "Save", "Eval", "Stop", "Quit", "Theme"):
        assert key in text, key
