"""The loss chart's drawing cost depends on its width, not on the length of the run."""

from __future__ import annotations

import math
import time
from dataclasses import replace

from textual.app import App, ComposeResult

from gemma_core.run.history import BoundedSeries
from gemma_core.run.events import EvalResult
from studio_preview import preview_snapshot
from gemma_tui.widgets.loss_chart import LossChart


def run_of(steps: int, bounded: bool = False):
    """A snapshot of a ``steps``-step run; ``bounded`` thins it as the engine does."""
    train, lrs = (BoundedSeries(), BoundedSeries()) if bounded else ([], [])
    for s in range(1, steps + 1):
        loss = 2 + 6 * math.exp(-5 * s / steps) + 0.2 * math.sin(s)
        train.append((s, s * 4096, loss))
        lrs.append((s, 1e-3 * min(1.0, s / 100)))
    evals = tuple(EvalResult(s, s * 4096, 2.5, 12.2, 1.0) for s in range(500, steps + 1, 500))
    history = train.snapshot() if bounded else tuple(train)
    lr_history = lrs.snapshot() if bounded else tuple(lrs)
    return replace(preview_snapshot(step=0), train_history=history, lr_history=lr_history,
                   eval_history=evals, version=steps)


class ChartHost(App):
    def compose(self) -> ComposeResult:
        yield LossChart()


def best_render_seconds(chart: LossChart, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        chart._drawn_key = None  # force a rebuild, as new data would
        start = time.perf_counter()
        chart.render()
        best = min(best, time.perf_counter() - start)
    return best


async def test_series_never_exceed_a_few_points_per_column():
    app = ChartHost()
    async with app.run_test(size=(120, 30)):
        chart = app.query_one(LossChart)
        chart.show(run_of(100_000))
        for view in ((), ("log",), ("log", "tokens")):
            if "log" in view:
                chart.log_scale = True
            if "tokens" in view:
                chart.x_axis = "tokens"
            series = chart.series(100)
            assert all(len(points) <= 200 for points in series.values()), view
            assert series["train"] and series["smoothed"] and series["val"] and series["lr"]


async def test_a_100k_step_run_draws_about_as_fast_as_a_100_step_run():
    app = ChartHost()
    async with app.run_test(size=(120, 30)):
        chart = app.query_one(LossChart)
        chart.show(run_of(100))
        short = best_render_seconds(chart)
        chart.show(run_of(100_000))
        chart.render()  # the first sight of a history converts it once
        long = best_render_seconds(chart)
        # Loose on purpose (shared CPUs); undownsampled, 100k points took over a second.
        assert long < 4 * short + 0.1, (short, long)
        chart.show(run_of(100_000, bounded=True))  # what the engine really sends
        assert len(chart.snapshot.train_history) <= 2048
        assert best_render_seconds(chart) < 4 * short + 0.1


async def test_new_data_redraws_at_most_once_a_second_and_the_last_always_shows():
    app = ChartHost()
    async with app.run_test(size=(120, 30)) as pilot:
        chart = app.query_one(LossChart)
        chart.max_data_hz = 5.0  # keep the test short; the studio uses 1 Hz
        chart.show(run_of(100))
        first_key = chart._data_key
        chart.show(run_of(101))  # within the interval: not drawn yet...
        assert chart._data_key == first_key
        for _ in range(30):  # ...but drawn once the interval is up, with no new snapshot
            await pilot.pause(0.1)
            if chart._data_key[0] == 101:
                break
        assert chart._data_key[0] == 101
