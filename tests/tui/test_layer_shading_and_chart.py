"""The layer map shades its cells by grad norm, attention entropy or residual RMS (``a``), and
the Charts screen (``g``, then ``a``) shows each layer's entropy and residual RMS over the run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gemma_core.model.presets import preset
from studio_preview import PreviewEngine, preview_snapshot
from studio_screens import screen_text
from gemma_tui.widgets.layer_heat_chart import LayerHeatChart
from gemma_tui.widgets.layer_map import LayerMap
from tests.tui.test_app import studio, until
from tests.tui.test_panes import PaneHost, _utc_clock, check_snapshot  # noqa: F401 (a fixture)
from tests.tui.test_charts_screen import open_charts, prepared_run


def layer_map_host(snap, presses: int):
    def setup(layer_map: LayerMap) -> None:
        layer_map.set_config(preset("seed-270m"))
        layer_map.show_stats(snap.layer_stats)
        layer_map.show_probe(snap.eval_history)
        for _ in range(presses):
            layer_map.cycle_shading()
    return PaneHost(LayerMap(), setup)


async def test_the_key_a_cycles_the_layer_maps_shading_and_its_legend_says_which():
    app = studio(PreviewEngine(preview_snapshot(step=640)))
    async with app.run_test(size=(160, 45)) as pilot:
        layer_map = app.query_one(LayerMap)
        await until(pilot, lambda: layer_map.config is not None and layer_map.stats is not None)
        assert "shade: grad norm" in screen_text(app)
        await pilot.press("a")
        await pilot.pause()
        text = screen_text(app)
        assert layer_map.shading == "attention entropy"
        assert "shade: entropy (a)" in text  # the pane's title
        assert "nats" in text and "(step 600)" in text  # the scale, and the evaluation it is from
        await pilot.press("a")
        await pilot.pause()
        assert layer_map.shading == "residual RMS" and "shade: residual RMS" in screen_text(app)
        await pilot.press("a")
        await pilot.pause()
        assert layer_map.shading == "grad norm" and "shade: grad norm (darker" in screen_text(app)


async def test_before_the_first_evaluation_the_entropy_shading_says_there_is_none_yet():
    app = layer_map_host(preview_snapshot(step=60), presses=1)  # evaluations come every 100 steps
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.pause()
        text = screen_text(app)
    assert "entropy: no evaluation yet" in text
    assert "attention entropy: none yet" in text


async def test_a_run_logged_before_the_probe_shows_no_entropy_not_a_crash():
    snap = preview_snapshot(step=640)
    old = replace(snap, eval_history=tuple(replace(e, layers=()) for e in snap.eval_history))
    app = layer_map_host(old, presses=2)
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.pause()
        assert "residual RMS: no evaluation yet" in screen_text(app)


async def test_the_entropy_shading_darkens_the_layers_that_attend_most_sharply():
    app = layer_map_host(preview_snapshot(step=640), presses=1)
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.pause()
        layer_map = app.query_one(LayerMap)
        probe = preview_snapshot(step=640).eval_history[-1]
        assert layer_map.shown.values == tuple(layer.entropy_mean for layer in probe.layers)
        assert layer_map.shown.step == probe.step


async def test_layer_map_in_entropy_mode_snapshot():
    app = layer_map_host(preview_snapshot(step=640), presses=1)
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.pause()
        check_snapshot("layer_map_entropy", app)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_studio_with_the_layer_map_in_entropy_mode_snapshot(size):
    app = studio(PreviewEngine(preview_snapshot(step=640)))
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.query_one(LayerMap).stats is not None)
        await pilot.press("a")
        await pilot.pause()
        check_snapshot(f"studio_layer_entropy_{size[0]}x{size[1]}", app)


# ------------------------------------------------------------------ the Charts screen
async def test_the_charts_screen_turns_to_each_layers_entropy_then_residual_rms_and_back(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        heat = screen.query_one(LayerHeatChart)
        assert not heat.display
        await pilot.press("a")
        await until(pilot, lambda: heat.display and "Attention entropy by layer" in screen_text(app))
        text = screen_text(app)
        assert " 5 F" in text and "11 F" in text and " 0 S" in text  # every layer a row, typed
        assert "lowest layer" in text and "sliding mean" in text and "full mean" in text
        await pilot.press("a")
        await until(pilot, lambda: "Residual RMS by layer" in screen_text(app))
        await pilot.press("a")
        await until(pilot, lambda: not heat.display and "grad" in screen_text(app))


async def test_the_layer_chart_shares_the_screens_axis_cursor_and_log_scale(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        await pilot.press("a")
        heat = screen.query_one(LayerHeatChart)
        await until(pilot, lambda: heat.display)
        assert "step 600:" in heat.border_subtitle
        await pilot.press("home")  # the cursor to step 1: before the first evaluation
        await pilot.pause()
        assert heat.border_subtitle == "before the first evaluation"
        await pilot.press("end", "t")
        await until(pilot, lambda: heat.view.x_axis == "tokens")
        assert "tokens" in screen_text(app) and "M" in screen_text(app)
        await pilot.press("l")
        await until(pilot, lambda: heat.view.log_scale)
        assert "log10" in screen_text(app)
        await pilot.press("l", "t")


async def test_a_run_without_any_measured_layer_says_why_its_layer_chart_is_empty(tmp_path):
    snap = prepared_run(tmp_path / "run")
    old = replace(snap, eval_history=tuple(replace(e, layers=()) for e in snap.eval_history))
    app = studio(PreviewEngine(old))
    async with app.run_test(size=(120, 35)) as pilot:
        await open_charts(pilot, app)
        await pilot.press("a")
        await until(pilot, lambda: "no evaluation has measured the layers yet" in screen_text(app))


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_layer_entropy_chart_snapshot(tmp_path, size):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=size) as pilot:
        screen = await open_charts(pilot, app)
        await pilot.press("a", "left", "left")
        await until(pilot, lambda: screen.query_one(LayerHeatChart).display)
        await pilot.pause()
        check_snapshot(f"charts_layer_entropy_{size[0]}x{size[1]}", app)
