"""The studio driving a real training engine (nano preset, tiny corpus, CPU).

These are the end-to-end checks: steps advance on screen, pause really stops
the step counter, save really writes a checkpoint, chat streams while training
runs, and quitting leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gemma_core.cli.train import settings_from_args
from gemma_core.run.viewer import RunViewer
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState
from gemma_core.train.settings import TrainSettings
from gemma_tui.app import create_app
from gemma_tui.cli import build_parser, with_default_command
from gemma_tui.screens.confirm import ConfirmScreen
from gemma_tui.screens.quit_choice import QuitChoiceScreen
from studio_screens import screen_text
from gemma_tui.widgets.chat_exchange import ChatExchange
from gemma_tui.widgets.chat_panel import ChatPanel
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart

SIZE = (160, 48)


@pytest.fixture(scope="module")
def corpus(corpus, tmp_path_factory):
    """The shared test corpus (conftest) and a token cache folder for this module."""
    train, val = corpus
    return train, val, tmp_path_factory.mktemp("cache")


def nano_flags(output_dir, corpus, **overrides) -> dict:
    train, val, cache = corpus
    flags = dict(preset="nano", output_dir=str(output_dir), train_dataset_path=str(train),
                 val_dataset_path=str(val), cache_dir=str(cache), device="cpu", dtype="fp32",
                 max_steps=100_000, eval_iters=20, save_steps=100_000, seed=3)
    flags.update(overrides)
    return flags


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus):
    """A nano run trained to its end (30 steps), for `open` and `--resume`."""
    out = tmp_path_factory.mktemp("finished") / "run"
    engine = TrainingEngine(TrainSettings.for_preset(**nano_flags(out, corpus, max_steps=30, eval_iters=10)))
    engine.start()
    assert engine.join(timeout=240)
    assert engine.snapshot().state is RunState.FINISHED, engine.snapshot().error
    return out


async def wait_for(pilot, condition, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


async def threads_left(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` that are still alive once the app has exited.

    Textual runs thread workers (the chat request) in the event loop's default
    executor; ``asyncio.run`` (what ``App.run`` uses) shuts that executor down
    when the loop ends. Inside a test the loop outlives the app, so do that here.
    """
    await asyncio.get_running_loop().shutdown_default_executor()
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


async def test_studio_trains_pauses_saves_chats_switches_theme_and_quits(tmp_path, corpus):
    before = set(threading.enumerate())
    engine = TrainingEngine(TrainSettings.for_preset(**nano_flags(tmp_path / "run", corpus)))
    engine.start()
    app = create_app(engine, poll_hz=10)
    async with app.run_test(size=SIZE) as pilot:
        # Starts, and steps advance on screen: chart, stats and layer map all fed.
        await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.step >= 3,
                       what="three steps on screen")
        assert app.query_one(LossChart).snapshot.train_history
        assert app.query_one(LayerMap).config.n_layers == 2
        text = screen_text(app)
        assert "/ 100,000" in text and "RUNNING" in text and "nano preset" in text
        first_seen = app.snapshot.step
        await wait_for(pilot, lambda: app.snapshot.step > first_seen, what="the stats to update")

        # Pause stops the step counter; resume restarts it.
        await pilot.press("p")
        await wait_for(pilot, lambda: engine.snapshot().state is RunState.PAUSED, what="pause")
        paused_at = engine.snapshot().step
        await pilot.pause(1.0)
        assert engine.snapshot().step == paused_at
        await wait_for(pilot, lambda: "PAUSED" in screen_text(app), what="PAUSED on screen")
        await pilot.press("p")
        await wait_for(pilot, lambda: engine.snapshot().step >= paused_at + 2, what="resume")

        # Save writes a resumable checkpoint.
        await pilot.press("s")
        await wait_for(pilot, lambda: engine.snapshot().last_checkpoint is not None, what="save")
        assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
        await wait_for(pilot, lambda: "checkpoint step" in screen_text(app), what="save shown")

        # A prompt streams a reply while training keeps running.
        step_before = engine.snapshot().step
        # Greedy, so a sampled end-of-text cannot cut the reply to one piece.
        app.query_one("#chat-temperature").value = "0"
        app.query_one("#chat-max-tokens").value = "64"
        await pilot.press("slash", *"To be", "enter")
        panel = app.query_one(ChatPanel)
        await wait_for(pilot, lambda: app.query(ChatExchange) and app.query_one(ChatExchange).reply,
                       what="the first reply text")
        exchange = app.query_one(ChatExchange)
        await wait_for(pilot, lambda: not panel.busy, what="the reply to end")
        # Ended by the model (no note), or by the 64 tokens asked for, and then marked as cut.
        assert exchange.status in ("", "cut at max tokens (64)"), exchange.status
        assert exchange.cut == (exchange.status != "")
        # Between two steps a reply decodes for as long as its share of the time allows, so a
        # short one may come in one burst (tests/core/test_chat.py holds the turns' sizes).
        assert exchange.pieces >= 1 and exchange.reply
        assert exchange.job.step >= step_before
        assert engine.snapshot().step > step_before  # training went on meanwhile
        assert engine.snapshot().state is not RunState.PAUSED
        assert f"model @ step {exchange.job.step:,}" in exchange.as_text().plain

        # The theme switches at run time, and the chart redraws in its colours.
        app.theme = "gemma-light"
        await pilot.pause(0.3)
        assert "#1a56db" in app.export_screenshot().lower()

        # Quit asks; stopping saves a checkpoint and waits for the trainer.
        await pilot.press("escape", "q")
        assert isinstance(app.screen, QuitChoiceScreen)
        await pilot.press("s")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert not engine.is_alive()
    snap = engine.snapshot()
    # Stopped long before its last step: said as stopped, not finished, with a checkpoint.
    assert snap.state is RunState.STOPPED and snap.last_checkpoint.step == snap.step
    assert await threads_left(before) == []


async def test_engine_failure_is_shown_and_quit_needs_no_confirmation(tmp_path, corpus):
    before = set(threading.enumerate())
    flags = nano_flags(tmp_path / "run", corpus, train_dataset_path=str(tmp_path / "missing.jsonl"))
    engine = TrainingEngine(TrainSettings.for_preset(**flags))
    engine.start()
    app = create_app(engine, poll_hz=10)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.snapshot and app.snapshot.state is RunState.FAILED,
                       what="the failure")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "FAILED" in text and "missing.jsonl" in text and "Traceback" not in text
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, timeout=10, what="exit")
    assert await threads_left(before) == []


async def test_open_a_finished_run_shows_its_curves_and_chats(finished_run):
    before = set(threading.enumerate())
    viewer = RunViewer(finished_run, device="cpu")
    app = create_app(viewer, poll_hz=10)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "VIEWING" in text and "30 / 30" in text
        assert len(app.query_one(LossChart).snapshot.train_history) == 30
        assert app.check_action("toggle_pause", ()) is None  # nothing to pause
        await pilot.press("slash", *"Hi", "enter")
        panel = app.query_one(ChatPanel)
        await wait_for(pilot, lambda: not panel.busy, what="the reply")
        assert app.query_one(ChatExchange).reply
        await pilot.press("escape", "q")
        await wait_for(pilot, lambda: not app.is_running, timeout=10, what="exit")
    assert await threads_left(before) == []


async def test_launch_resume_shows_the_history_from_the_logs(finished_run):
    before = set(threading.enumerate())
    args = build_parser().parse_args(with_default_command(
        ["--resume", "--output_dir", str(finished_run), "--max_steps", "36"]))
    assert args.command == "launch"
    engine = TrainingEngine(settings_from_args(args))
    engine.start()
    app = create_app(engine, poll_hz=10)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.step >= 30,
                       what="the resumed history")
        history = app.query_one(LossChart).snapshot.train_history
        assert history[0][0] == 1  # the whole run, from the logs, not only the new steps
        await wait_for(pilot, lambda: engine.snapshot().state is RunState.FINISHED,
                       what="the resumed run to end")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, timeout=30, what="exit")
    assert engine.snapshot().step == 36
    assert await threads_left(before) == []


async def test_attach_detach_and_reattach_to_a_run_in_another_process(tmp_path, corpus):
    import os
    import signal
    import subprocess
    import sys

    from gemma_core.serve.client import RemoteEngine, RemoteTelemetry, connect

    train, val, cache = corpus
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "gemma_core", "train", "--preset", "nano", "--output_dir", str(out),
         "--train_dataset_path", str(train), "--val_dataset_path", str(val), "--device", "cpu",
         "--max_steps", "100000", "--eval_iters", "20", "--save_steps", "100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, GEMMA_STUDIO_CACHE=str(cache)))
    try:
        deadline = time.monotonic() + 120
        while not (out / "server.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        engine = RemoteEngine(out)
        app = create_app(engine, telemetry=RemoteTelemetry(engine.client), poll_hz=10)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.step >= 3,
                           what="the attached run's steps")
            await wait_for(pilot, lambda: app.query_one(LayerMap).config is not None, what="the layer map")
            await wait_for(pilot, lambda: "RUNNING" in screen_text(app) and app.snapshot.eval_history,
                           what="the run's history")
            await pilot.press("p")
            await wait_for(pilot, lambda: connect(out).snapshot().state is RunState.PAUSED, what="pause")
            await pilot.press("q")  # detach: no question, the run is not this studio's
            await wait_for(pilot, lambda: not app.is_running, what="detaching")
        assert process.poll() is None and connect(out).snapshot().state is RunState.PAUSED

        again = RemoteEngine(out)
        app = create_app(again, telemetry=RemoteTelemetry(again.client), poll_hz=10)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.snapshot is not None and "PAUSED" in screen_text(app),
                           what="the paused run on reattaching")
            await pilot.press("p")
            await wait_for(pilot, lambda: again.snapshot().state is RunState.RUNNING, what="resume")
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("enter")  # stop is its own action, confirmed
            await wait_for(pilot, lambda: again.snapshot().state is RunState.STOPPED, what="the stop")
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, what="quitting")
        assert process.wait(60) == 0
        assert (out / "checkpoint" / "state.json").is_file() and not (out / "server.json").exists()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
