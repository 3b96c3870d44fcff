"""Runs compared as a table, and the loss chart exported.

`gemma-tui compare` shows the runs as a table too (``v``; both at once in a large terminal):
one row per run with its preset, the settings that differ between the runs, its best and
final validation loss and bits per byte, steps, tokens and training time; sortable by any
column (``s`` the next column, ``r`` the other way, or a click on a header); Enter on a row
shows that run's curves alone on the chart, in its own colour, and Esc brings every run back.

``o`` (and the palette) export the chart as shown (its runs, axis, smoothing, scale) to PNG
and SVG, and its series to CSV: the studio's into the run folder's ``exports/``, a
comparison's into the current folder; a toast names the files.
"""

from __future__ import annotations

import csv
import json
import math
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gemma_core.run.chart_files import chart_figure
from gemma_core.run.run_summary import RunSummary, RunSummaryFollower, differing_settings, read_run_settings
from gemma_tui.app import create_app
from gemma_tui.chart_export import compared_chart
from gemma_tui.compare import CompareApp
from studio_preview import PreviewEngine, preview_snapshot
from studio_screens import screen_text
from gemma_tui.series import ema
from gemma_tui.widgets.compare_chart import CompareChart
from gemma_tui.widgets.compare_table import CompareTable
from gemma_tui.widgets.loss_chart import LossChart
from tests.tui.test_panes import NO_GPU, FixedTelemetry, check_snapshot

MODEL = {"vocab_size": 4096, "context_length": 256, "emb_dim": 64, "n_layers": 2, "n_heads": 4}
TRAINING = {"output_dir": "runs/x", "learning_rate": 0.003, "max_steps": 20, "warmup_steps": 1,
            "min_lr": 0.0003, "eval_iters": 5, "train_batch_size": 8, "betas": [0.9, 0.95], "seed": 42,
            "preset": "nano", "optimizer": "adamw", "device": "cpu", "cache_dir": None, "serve": True,
            "serve_port": 0, "model_overrides": {}}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def prepare_run(folder: Path, *, scale: float, training: dict, seconds_per_step: float,
                steps: int = 20, checkpoint_settings: dict | None = None) -> Path:
    """A finished-looking run folder: config.json, both logs (an evaluation every 5 steps, with
    bits per byte) and, if asked, a checkpoint whose settings a resume changed."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**MODEL, "training": {**training, "output_dir": str(folder)}}),
                                        encoding="utf-8")
    with open(folder / "training_log.jsonl", "w", encoding="utf-8") as log:
        for step in range(1, steps + 1):
            loss = 2.0 + scale * 6.0 * math.exp(-step / 6) + 0.05 * math.sin(step)
            log.write(json.dumps({"step": step, "train_loss": loss, "learning_rate": 1e-3, "tokens_seen": 512 * step,
                                  "elapsed_s": seconds_per_step * step}) + "\n")
    with open(folder / "validation_log.jsonl", "w", encoding="utf-8") as log:
        for step in range(5, steps + 1, 5):
            # The last evaluation is a little worse than the best: best and final differ.
            val = 2.3 + scale * 5.0 * math.exp(-step / 6) + (0.5 if step == steps else 0.0)
            log.write(json.dumps({"step": step, "tokens_seen": 512 * step, "val_loss": val,
                                  "perplexity": math.exp(val), "bits_per_byte": val / math.log(2) / 3.5}) + "\n")
    if checkpoint_settings is not None:
        checkpoint = folder / "checkpoint"
        checkpoint.mkdir()
        state = {"step": steps, "tokens_seen": 512 * steps, "data": {"epoch": 0, "position": 0},
                 "rng": {"torch": [0, 1, 2], "python": [3, [0], None]}, "model": {}, "tokenizer": {},
                 "settings": {**training, **checkpoint_settings}}
        (checkpoint / "state.json").write_text(json.dumps(state), encoding="utf-8")
    return folder


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, Path]:
    """`baseline` (lr 3e-3) and `lr-high` (lr 1e-2, resumed to 30 planned steps): the second
    reaches the lower validation loss."""
    baseline = prepare_run(tmp_path / "runs" / "baseline", scale=1.0, training=TRAINING, seconds_per_step=1.5)
    high = prepare_run(tmp_path / "runs" / "lr-high", scale=0.6, training={**TRAINING, "learning_rate": 0.01},
                       seconds_per_step=2.0, checkpoint_settings={"max_steps": 30})
    return baseline, high


async def until(pilot, condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def compare_shown(pilot, app: CompareApp) -> CompareTable:
    table = app.query_one(CompareTable)
    await until(pilot, lambda: table.row_count == 2, "the table's rows")
    await pilot.pause()
    return table


def table_rows(table: CompareTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def table_columns(table: CompareTable) -> list[str]:
    return [str(column.label).rstrip(" ▲▼") for column in table.columns.values()]


# ------------------------------------------------------------------- the summary
def test_only_settings_whose_values_differ_between_runs_are_compared(two_runs):
    baseline, high = two_runs
    settings = [read_run_settings(folder)[1] for folder in two_runs]
    summaries = [RunSummary("nano", s) for s in settings]
    # output_dir differs too, but says where a run is, not what it trained; max_steps comes from
    # the checkpoint, which a resume changed.
    assert differing_settings(summaries) == ["learning_rate", "max_steps"]
    assert differing_settings([RunSummary("nano", {"a": 1}), RunSummary("nano", {"a": 1, "b": 2})]) == ["b"]
    assert differing_settings([RunSummary("nano", {"betas": (0.9, 0.95)})] * 2) == []
    nested = [RunSummary("nano", read_run_settings(baseline)[1] | {"model_overrides.emb_dim": 96}),
              RunSummary("nano", read_run_settings(baseline)[1])]
    assert differing_settings(nested) == ["model_overrides.emb_dim"]


def test_a_summary_keeps_the_best_and_the_final_evaluation_and_starts_over_with_a_replaced_log(two_runs):
    baseline, _ = two_runs
    summary = RunSummaryFollower(baseline)
    entries = [json.loads(line) for line in (baseline / "validation_log.jsonl").read_text().splitlines()]
    for line, entry in enumerate(entries, start=1):
        summary.take(line, entry)
    summary.take(99, {"step": "five", "val_loss": 1.0})  # damaged: left out
    result = summary.refresh()
    assert result.best.step == 15 and result.final.step == 20 and result.final.val_loss > result.best.val_loss
    assert result.best.bits_per_byte == pytest.approx(result.best.val_loss / math.log(2) / 3.5)
    assert (result.steps, result.tokens, result.elapsed_s, result.preset) == (20, 10_240, 30.0, "nano")
    summary.start_over()
    assert summary.refresh().best is None


# ---------------------------------------------------------------------- the table
async def test_the_table_has_a_row_per_run_with_its_preset_differing_settings_and_results(two_runs):
    app = CompareApp(list(two_runs))
    async with app.run_test(size=(160, 45)) as pilot:
        table = await compare_shown(pilot, app)
        assert table_columns(table) == ["run", "preset", "learning_rate", "max_steps", "best val", "best bpb",
                                        "final val", "final bpb", "steps", "tokens", "wall clock"]
        baseline, high = table_rows(table)
        best = 2.3 + 5.0 * math.exp(-15 / 6)
        final = 2.3 + 5.0 * math.exp(-20 / 6) + 0.5
        assert baseline == ["baseline", "nano", "0.003", "20", f"{best:.4f}", f"{best / math.log(2) / 3.5:.3f}",
                            f"{final:.4f}", f"{final / math.log(2) / 3.5:.3f}", "20", "10,240", "30s"]
        assert high[:4] == ["lr-high", "nano", "0.01", "30"] and high[-1] == "40s"
        assert app.query_one(CompareChart).display and table.display  # a large terminal shows both


@pytest.mark.parametrize("how", ["keys", "header click"])
async def test_sorting_by_a_column_reorders_the_rows_and_again_reverses_them(two_runs, how):
    app = CompareApp(list(two_runs))
    async with app.run_test(size=(160, 45)) as pilot:
        table = await compare_shown(pilot, app)
        assert [row[0] for row in table_rows(table)] == ["baseline", "lr-high"]  # by name at first
        if how == "keys":
            table.focus()
            for _ in range(table_columns(table).index("best val")):
                await pilot.press("s")
        else:
            x = sum(column.get_render_width(table) for column in list(table.columns.values())[:4]) + 2
            await pilot.click(table, offset=(x, 1))
        await pilot.pause()
        assert table.sort_column == "best_val"
        assert [row[0] for row in table_rows(table)] == ["lr-high", "baseline"]  # the lower best loss first
        assert "sorted by best val ▲" in screen_text(app)
        if how == "keys":
            await pilot.press("r")
        else:
            await pilot.click(table, offset=(x, 1))
        await pilot.pause()
        assert [row[0] for row in table_rows(table)] == ["baseline", "lr-high"]
        assert "sorted by best val ▼" in screen_text(app)


async def test_a_run_without_a_value_sorts_last_either_way(two_runs):
    baseline, high = two_runs
    (high / "validation_log.jsonl").write_text("", encoding="utf-8")  # no evaluation yet
    app = CompareApp(list(two_runs))
    async with app.run_test(size=(160, 45)) as pilot:
        table = await compare_shown(pilot, app)
        for reverse in (False, True):
            table.sort_by("best_val", reverse=reverse)
            assert [row[0] for row in table_rows(table)] == ["baseline", "lr-high"]
        assert table_rows(table)[1][4] == "-"


async def test_v_switches_between_chart_and_table_where_the_terminal_is_small(two_runs):
    app = CompareApp(list(two_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        table = await compare_shown(pilot, app)
        chart_pane = app.query_one("#compare-pane")
        assert chart_pane.display and not table.display
        await pilot.press("v")
        assert table.display and not chart_pane.display and app.focused is table
        await pilot.press("v")
        assert chart_pane.display and not table.display


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_enter_on_a_row_shows_that_runs_curves_alone_and_esc_brings_every_run_back(two_runs, size):
    app = CompareApp(list(two_runs))
    async with app.run_test(size=size) as pilot:
        table = await compare_shown(pilot, app)
        chart = app.query_one(CompareChart)
        colors = {run.name: color.hex for run, color in zip(chart.runs, chart.colors())}
        if not table.display:
            await pilot.press("v")
        await pilot.press("down", "enter")
        await pilot.pause()
        assert chart.isolated == "lr-high" and app.query_one("#compare-pane").display
        text = screen_text(app)
        assert "■ lr-high" in text and "■ baseline" not in text and "lr-high alone" in text
        assert [color.hex for _, color in chart._shown_with_colors()] == [colors["lr-high"]]  # its own colour
        await pilot.press("escape")
        await pilot.pause()
        assert chart.isolated is None and app.is_running
        assert [run.name for run in chart.shown_runs()] == ["baseline", "lr-high"]
        assert table.display  # back where Enter was pressed


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_compare_table_snapshot(two_runs, size):
    app = CompareApp(list(two_runs))
    async with app.run_test(size=size) as pilot:
        table = await compare_shown(pilot, app)
        if not app.query_one("#compare-pane").display or size == (80, 24):
            await pilot.press("v")  # a small terminal shows the table in place of the chart
        await pilot.pause()
        assert table.display
        check_snapshot(f"compare_table_{size[0]}x{size[1]}", app)


# ---------------------------------------------------------------------- export
def read_export(paths: list[Path]) -> tuple[bytes, ElementTree.Element, list[dict[str, str]]]:
    png, svg, table = sorted(paths, key=lambda p: ["png", "svg", "csv"].index(p.suffix[1:]))
    with open(table, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return png.read_bytes(), ElementTree.parse(svg).getroot(), rows


async def exported(pilot, app, folder: Path, press) -> list[Path]:
    """Export with ``press`` (a key, or the palette) and wait for the toast and the three files."""
    before = set(folder.glob("*")) if folder.exists() else set()
    await press()
    await until(pilot, lambda: any(n.title == "Chart exported" or n.title == "Export failed"
                                   for n in app._notifications), "the export's toast")
    toast = next(n for n in app._notifications if n.title in ("Chart exported", "Export failed"))
    assert toast.title == "Chart exported", toast.message
    paths = sorted(set(folder.glob("*")) - before)
    assert sorted(p.suffix for p in paths) == [".csv", ".png", ".svg"]
    for path in paths:
        assert path.name in toast.message  # the toast names every file
        assert not list(folder.glob(".*.tmp-*"))  # written whole (atomically), nothing left over
    return paths


def key(pilot, name: str):
    async def press() -> None:
        await pilot.press(name)
    return press


def palette(pilot, title: str):
    async def run() -> None:
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*title)
        await pilot.pause(0.5)
        await pilot.press("enter")
    return run


def assert_valid_pictures(png: bytes, svg_root: ElementTree.Element) -> None:
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert svg_root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")


def numbers(rows: list[dict[str, str]], column: str, run: str | None = None) -> list[float]:
    return [float(row[column]) for row in rows if row[column] != "" and (run is None or row["run"] == run)]


@pytest.mark.parametrize("how", ["o", "palette"])
async def test_the_comparison_exports_the_chart_as_shown_and_rows_equal_its_series(two_runs, tmp_path,
                                                                                 monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    app = CompareApp(list(two_runs))
    async with app.run_test(size=(120, 36)) as pilot:
        await compare_shown(pilot, app)
        chart = app.query_one(CompareChart)
        await pilot.press("t", "l", "right_square_bracket")  # tokens axis, log scale, smoother
        press = key(pilot, "o") if how == "o" else palette(pilot, "Export chart")
        paths = await exported(pilot, app, tmp_path, press)
        assert all(path.name.startswith("compare-") for path in paths)
        png, svg, rows = read_export(paths)
        assert_valid_pictures(png, svg)
        assert list(rows[0]) == ["run", "step", "tokens", "train_loss", "train_loss_smoothed", "val_loss"]
        for run in chart.runs:
            assert numbers(rows, "step", run.name) == run.steps.tolist()  # every evaluation is at a logged step
            assert numbers(rows, "tokens", run.name) == run.tokens.tolist()
            assert numbers(rows, "train_loss", run.name) == run.loss.tolist()
            assert numbers(rows, "train_loss_smoothed", run.name) == ema(run.loss, chart.smoothing).tolist()
            assert numbers(rows, "val_loss", run.name) == run.val_loss.tolist()
        # The pictures are drawn as the chart is shown: against tokens, on a log scale.
        figure = chart_figure(*compared_chart(chart))
        axes = figure.axes[0]
        assert axes.get_yscale() == "log" and axes.get_xlabel() == "tokens seen"
        assert "smoothed 0.95" in " ".join(axes.get_legend_handles_labels()[1])


async def test_an_export_holds_only_what_the_chart_shows_one_run_alone_without_training_curves(two_runs,
                                                                                              tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = CompareApp(list(two_runs))
    async with app.run_test(size=(160, 45)) as pilot:
        table = await compare_shown(pilot, app)
        table.focus()
        await pilot.press("down", "enter", "g")  # lr-high alone, validation only
        paths = await exported(pilot, app, tmp_path, key(pilot, "o"))
        _, _, rows = read_export(paths)
        high = app.query_one(CompareChart).runs[1]
        assert list(rows[0]) == ["run", "step", "tokens", "val_loss"]
        assert {row["run"] for row in rows} == {"lr-high"}
        assert numbers(rows, "val_loss") == high.val_loss.tolist()


@pytest.mark.parametrize("how", ["o", "palette"])
async def test_the_studio_exports_its_loss_chart_into_the_run_folders_exports(tmp_path, how):
    folder = tmp_path / "run"
    folder.mkdir()
    engine = PreviewEngine(snapshot=replace(preview_snapshot(step=300), output_dir=str(folder)))
    app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        chart = app.query_one(LossChart)
        await pilot.press("t")  # against tokens
        press = key(pilot, "o") if how == "o" else palette(pilot, "Export the loss chart")
        paths = await exported(pilot, app, folder / "exports", press)
        png, svg, rows = read_export(paths)
        assert_valid_pictures(png, svg)
        snap = engine.snapshot()
        loss = np.array([row[2] for row in snap.train_history])
        assert list(rows[0]) == ["run", "step", "tokens", "train_loss", "train_loss_smoothed", "val_loss",
                                 "learning_rate"]
        assert numbers(rows, "step") == [float(row[0]) for row in snap.train_history]
        assert numbers(rows, "tokens") == [float(row[1]) for row in snap.train_history]
        assert numbers(rows, "train_loss") == loss.tolist()
        assert numbers(rows, "train_loss_smoothed") == ema(loss, chart.smoothing).tolist()
        assert numbers(rows, "val_loss") == [e.val_loss for e in snap.eval_history]
        assert numbers(rows, "learning_rate") == [lr for _, lr in snap.lr_history]


async def test_an_export_that_cannot_be_written_says_why_and_the_studio_goes_on(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "exports").write_text("a file where the folder goes", encoding="utf-8")
    engine = PreviewEngine(snapshot=replace(preview_snapshot(step=300), output_dir=str(folder)))
    app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("o")
        await until(pilot, lambda: any(n.title == "Export failed" for n in app._notifications), "the refusal")
        failed = next(n for n in app._notifications if n.title == "Export failed")
        assert str(folder / "exports") in failed.message and app.is_running
