"""The Charts screen (g): a chart for every number the run logs, a cursor that reads them all
at one step, zoom to a step range and back, on the studio's own axis, scale and smoothing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from studio_preview import PreviewEngine, preview_snapshot
from gemma_tui.screens.charts import ChartsScreen
from studio_screens import screen_text
from gemma_tui.widgets.loss_chart import LossChart
from gemma_tui.widgets.metric_chart import MetricChart
from tests.tui.test_app import studio, until
from tests.tui.test_panes import check_snapshot

STEPS = 640
TOKENS_PER_STEP = 16 * 256  # the preview snapshot's


def grad_norm_at(step: int) -> float:
    return round(0.3 + 2.0 / math.sqrt(step), 6)


def speed_at(step: int) -> float:
    return round(3000 + 40 * math.sin(step / 7), 3)


def mfu_at(step: int) -> float:
    return round(0.31 + 0.02 * math.cos(step / 50), 6)


def prepared_run(folder: Path, device: str = "cuda:0", mfu: bool = True):
    """A run folder whose training log carries every scalar a GPU run with Muon logs, and the
    studio's snapshot of it."""
    snap = preview_snapshot(step=STEPS, optimizer="muon")
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for (step, tokens, loss), (_, lr) in zip(snap.train_history, snap.lr_history):
        entry = {"step": step, "tokens_seen": tokens, "train_loss": loss, "learning_rate": lr,
                 "learning_rates": {"adamw": lr, "muon": 10 * lr}, "grad_norm": grad_norm_at(step),
                 "tokens_per_s": speed_at(step), "elapsed_s": step * 1.33}
        if mfu:
            entry["mfu"] = mfu_at(step)
        lines.append(json.dumps(entry) + "\n")
    (folder / "training_log.jsonl").write_text("".join(lines), encoding="utf-8")
    return replace(snap, output_dir=str(folder), device=device)


async def open_charts(pilot, app) -> ChartsScreen:
    await pilot.pause()
    await pilot.press("g")
    await until(pilot, lambda: isinstance(app.screen, ChartsScreen)
                and "grad" in app.screen.query_one("#charts-readout").render().plain)
    return app.screen


def readout(screen: ChartsScreen) -> str:
    return str(screen.query_one("#charts-readout").render())


def chart_text(chart: MetricChart) -> str:
    return " ".join(chart.render_line(y).text.strip() for y in range(chart.size.height))


def shown_steps(screen: ChartsScreen, key: str) -> tuple[float, float]:
    """The first and last step the chart of ``key`` draws (on the step axis)."""
    chart = screen.query_one(f"#chart-{key}", MetricChart)
    xs = [x for series in chart.metric.series for x in chart._visible(series)[0].tolist()]
    return min(xs), max(xs)


async def test_g_and_the_palette_open_the_charts_and_escape_closes_them(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        await pilot.press("escape")
        assert not isinstance(app.screen, ChartsScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Charts of every")
        await until(pilot, lambda: "Charts of every metric" in screen_text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ChartsScreen))
        assert app.screen is not screen  # a fresh screen: the closed one was let go
        await pilot.press("q")  # q closes the charts, never the studio
        assert not isinstance(app.screen, ChartsScreen) and app.is_running


async def test_every_series_the_run_logs_gets_a_chart_with_its_latest_value(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        text = screen_text(app)
        for title in ("Training loss", "Validation loss", "Perplexity", "Bits per byte", "Grad norm",
                      "Tokens/s", "Learning rate", "MFU"):
            assert title in text, title
        charts = {chart.key: chart for chart in screen.query(MetricChart)}
        assert all(chart.metric.has_points for chart in charts.values())
        assert [s.name for s in charts["learning_rate"].metric.series] == ["adamw", "muon"]
        line = readout(screen)
        assert line.startswith(f"step {STEPS}")
        for reading in (f"grad {grad_norm_at(STEPS):.3g}", f"tok/s {speed_at(STEPS):,.0f}",
                        f"MFU {mfu_at(STEPS):.1%}", "val 2.", "(step 600)", "lr adamw", "lr muon", "ppl ", "bpb "):
            assert reading in line, reading


@pytest.mark.parametrize("device, why", [("cpu", "no MFU on a CPU"),
                                         ("cuda:0", "no MFU: this GPU's peak is unknown")])
async def test_a_run_without_mfu_says_why_instead_of_an_empty_chart(tmp_path, device, why):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run", device=device, mfu=False)))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        assert why in chart_text(screen.query_one("#chart-mfu", MetricChart))
        assert not screen.query_one("#chart-mfu", MetricChart).metric.has_points
        assert "MFU" not in readout(screen)


async def test_a_run_without_a_training_log_still_charts_what_its_snapshot_carries():
    app = studio(PreviewEngine(preview_snapshot(step=STEPS)))  # its folder does not exist
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, ChartsScreen) and "loss" in readout(app.screen))
        screen = app.screen
        charts = {chart.key: chart for chart in screen.query(MetricChart)}
        assert all(charts[key].metric.has_points for key in ("loss", "val_loss", "perplexity",
                                                            "bits_per_byte", "learning_rate"))
        for key in ("grad_norm", "tokens_per_s"):  # said, never a blank frame
            assert "no training_log.jsonl to read it from" in chart_text(charts[key])


async def test_the_arrows_move_a_cursor_that_reads_every_series_at_its_step(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        snap = app.engine.snapshot()
        # The cursor starts on the latest step; each press moves it a hundredth of the steps shown.
        per_press = round((STEPS - 1) / 100)
        chart = screen.query_one("#chart-grad_norm", MetricChart)
        column = chart._cursor_column()
        await pilot.press("left", "left", "left")
        assert chart._cursor_column() < column  # drawn where it now stands
        step = STEPS - 3 * per_press
        line = readout(screen)
        assert line.startswith(f"step {step} ·")
        loss = snap.train_history[step - 1][2]
        for reading in (f"loss {loss:.4f}", f"grad {grad_norm_at(step):.3g}",
                        f"tok/s {speed_at(step):,.0f}", f"MFU {mfu_at(step):.1%}",
                        f"lr adamw {snap.lr_history[step - 1][1]:.2e}",
                        f"lr muon {10 * snap.lr_history[step - 1][1]:.2e}",
                        f"val {snap.eval_history[5].val_loss:.4f} (step 600)"):
            assert reading in line, reading
        await pilot.press("right")
        assert readout(screen).startswith(f"step {step + per_press} ·")
        await pilot.press("home")
        assert readout(screen).startswith("step 1 ·")
        assert f"grad {grad_norm_at(1):.3g}" in readout(screen)
        first_eval = snap.eval_history[0]  # the nearest evaluation, and where it was
        assert f"val {first_eval.val_loss:.4f} (step 100)" in readout(screen)


async def test_a_click_on_a_chart_puts_the_cursor_at_that_step(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        chart = screen.query_one("#chart-grad_norm", MetricChart)
        left, right = chart._frame
        await pilot.click(chart, offset=(left + (right - left) // 2, chart.size.height // 2))
        step = int(readout(screen).split(" ·")[0].removeprefix("step "))
        assert abs(step - STEPS / 2) < STEPS / 20, step


async def test_zoom_in_narrows_every_chart_to_steps_around_the_cursor_and_zero_shows_them_all(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        assert shown_steps(screen, "grad_norm") == (1, STEPS)
        await pilot.press("home", *["right"] * 50)  # the cursor near the middle
        cursor = 1 + 50 * round((STEPS - 1) / 100)
        await pilot.press("i")
        low, high = shown_steps(screen, "grad_norm")
        assert high - low <= STEPS / 2 and low <= cursor <= high
        assert shown_steps(screen, "tokens_per_s") == (low, high)  # every chart the same range
        assert "zoomed to steps" in readout(screen)
        await pilot.press("i")
        narrower = shown_steps(screen, "loss")
        assert narrower[1] - narrower[0] <= (high - low) / 2 + 1
        await pilot.press("o")
        assert shown_steps(screen, "loss") == (low, high)
        await pilot.press("0")
        assert shown_steps(screen, "mfu") == (1, STEPS)
        assert "zoomed" not in readout(screen)


async def test_log_scale_smoothing_and_the_tokens_axis_are_the_studios_own(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_charts(pilot, app)
        main = app.query_one(LossChart)
        chart = screen.query_one("#chart-grad_norm", MetricChart)
        await pilot.press("l")
        assert main.log_scale and chart.view.log_scale
        drawn = chart._visible(chart.metric.series[0])[1]
        assert max(drawn) == pytest.approx(math.log10(grad_norm_at(1)))  # log10 values drawn
        smoothing = main.smoothing
        await pilot.press("right_square_bracket")
        assert main.smoothing > smoothing and chart.view.smoothing == main.smoothing
        await pilot.press("t")
        assert main.x_axis == "tokens" and chart.view.x_axis == "tokens"
        assert chart.view.cursor == pytest.approx(STEPS * TOKENS_PER_STEP / 1e6)  # in M tokens
        assert "M" in screen_text(app)  # tick labels carry the unit
        assert readout(screen).startswith(f"step {STEPS} ·")  # the readout still says the step
        await pilot.press("escape", "l")  # back in the studio, the same settings
        assert not main.log_scale


async def test_a_small_terminal_shows_one_chart_at_a_time_and_tab_or_a_number_switches(tmp_path):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_charts(pilot, app)
        shown = lambda: [c.key for c in screen.query(MetricChart) if c.display]
        assert shown() == ["loss"]
        await pilot.press("tab")
        assert shown() == ["val_loss"]
        await pilot.press("5")
        assert shown() == ["grad_norm"] and "Grad norm" in screen_text(app)
        await pilot.press("shift+tab")
        assert shown() == ["bits_per_byte"]


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_charts_snapshot(tmp_path, size):
    app = studio(PreviewEngine(prepared_run(tmp_path / "run")))
    async with app.run_test(size=size) as pilot:
        screen = await open_charts(pilot, app)
        await pilot.press("left", "left")
        await pilot.pause()
        check_snapshot(f"charts_{size[0]}x{size[1]}", app)
        assert screen is app.screen
