"""The README's pictures of the studio are taken here, from real runs: the studio on a nano
run as it trains and answers a prompt, and its views of a nano model trained for a hundred-odd
steps with samples and evaluations, opened as ``gemma-tui open`` opens it. Each test checks that its view shows what the README says it shows, and saves the
picture as SVG; ``GEMMA_STUDIO_SCREENSHOTS=docs`` saves it into docs/ for the README, otherwise
into the test's temporary folder (so a picture that can no longer be taken fails here first)."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gemma_core.run.viewer import RunViewer
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState
from gemma_core.train.settings import TrainSettings
from gemma_tui.app import create_app
from gemma_tui.screens.charts import ChartsScreen
from gemma_tui.screens.inspect import InspectScreen
from gemma_tui.screens.samples import SamplesScreen
from studio_screens import screen_text, until
from gemma_tui.widgets.chat_exchange import ChatExchange
from tests.tui.test_panes import NO_GPU, FixedTelemetry

DOCS = Path(__file__).resolve().parents[2] / "docs"
SIZE = (140, 40)
STEPS = 120
PROMPT = "ROMEO:"
LONG_PROMPT = "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name."


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus) -> Path:
    """A nano run trained to its end: evaluations and samples every 30 steps."""
    train_path, val_path = corpus
    out = tmp_path_factory.mktemp("readme") / "nano"
    engine = TrainingEngine(TrainSettings.for_preset(
        preset="nano", output_dir=str(out), train_dataset_path=str(train_path),
        val_dataset_path=str(val_path), cache_dir=str(out.parent / "cache"), device="cpu",
        dtype="fp32", max_steps=STEPS, eval_iters=30, eval_batches=2, save_steps=100_000, seed=1,
        sample_prompt=(PROMPT,), sample_every=30, sample_tokens=24, serve=False))
    engine.start()
    assert engine.join(timeout=900)
    assert engine.snapshot().state is RunState.FINISHED, engine.snapshot().error
    return out


def studio(run: Path):
    return create_app(RunViewer(run, device="cpu"), telemetry=FixedTelemetry(NO_GPU), poll_hz=20)


def saved(app, name: str, tmp_path: Path) -> str:
    """Save the screen as ``name``.svg (docs/ when asked) and return its text."""
    folder = DOCS if os.environ.get("GEMMA_STUDIO_SCREENSHOTS") == "docs" else tmp_path
    svg = app.export_screenshot(title="Gemma Studio")
    ElementTree.fromstring(svg)  # a picture a browser can draw
    (folder / f"{name}.svg").write_text(svg, encoding="utf-8")
    return " ".join(screen_text(app).split())


async def screenshot_of_view(run: Path, key: str, view: type, name: str, tmp_path: Path) -> str:
    """Open ``run``, press ``key``, wait for the ``view`` screen and save it as ``name``."""
    app = studio(run)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, view), f"the {view.__name__}")
        await pilot.pause(0.5)
        return saved(app, name, tmp_path)


async def test_the_charts_screenshot_shows_every_logged_metric_of_the_run(trained_run, tmp_path):
    text = await screenshot_of_view(trained_run, "g", ChartsScreen, "charts", tmp_path)
    for metric in ("loss", "grad", "tokens/s", "learning rate"):
        assert metric in text.lower(), metric


async def test_the_samples_screenshot_shows_the_prompt_at_each_step(trained_run, tmp_path):
    text = await screenshot_of_view(trained_run, "w", SamplesScreen, "samples", tmp_path)
    assert PROMPT in text
    assert all(f"{step}" in text for step in (30, 90, 120))


async def test_the_inspect_screenshot_shows_a_layers_attention_and_the_lens(trained_run, tmp_path):
    app = studio(trained_run)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        app.chat_panel.send(LONG_PROMPT)  # Inspect opens on the last chat prompt
        await until(pilot, lambda: not app.chat_panel.busy, "the chat reply")
        app.screen.set_focus(None)
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, InspectScreen), "the Inspect screen")
        screen = app.screen
        await until(pilot, lambda: not screen.running and screen.found, "the inspection pass")
        await pilot.pause(0.3)
        text = saved(app, "inspect", tmp_path)
    assert "sliding" in text and "step 120" in text and "Romeo" in text


async def test_the_studio_screenshot_shows_layers_by_entropy_and_a_reply_by_probability(trained_run, tmp_path):
    app = studio(trained_run)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        await pilot.press("a", "slash", *"JULIET:", "enter")
        await until(pilot, lambda: len(app.query(ChatExchange)) and app.query(ChatExchange).last().finished,
                    "the reply")
        await pilot.press("escape", "u", "right", "right")
        await pilot.pause(0.3)
        text = saved(app, "layers-and-probabilities", tmp_path)
    assert "shade: entropy" in text and "probability" in text and "token 2 of" in text


async def test_the_studio_screenshot_shows_a_run_training_and_a_reply_from_its_weights(tmp_path, corpus):
    train_path, val_path = corpus
    engine = TrainingEngine(TrainSettings.for_preset(
        preset="nano", output_dir=str(tmp_path / "live"), train_dataset_path=str(train_path),
        val_dataset_path=str(val_path), cache_dir=str(tmp_path / "cache"), device="cpu", dtype="fp32",
        max_steps=2_000, eval_iters=60, eval_batches=2, save_steps=100_000, seed=1, serve=False))
    app = create_app(engine, poll_hz=20)
    engine.start()
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            await until(pilot, lambda: len(engine.snapshot().eval_history) >= 3 or not engine.is_alive(),
                        "three evaluations", deadline_s=600)
            app.chat_panel.send("ROMEO:")
            await until(pilot, lambda: not app.chat_panel.busy, "the reply", deadline_s=600)
            app.screen.set_focus(None)
            app.query_one("#chat-log").scroll_home(animate=False)  # the prompt and how the reply starts
            await pilot.pause(1.5)  # a poll or two: the screen shows the latest step
            text = saved(app, "studio", tmp_path)
            app.shut_down()  # as a user quits: training stopped, the thread joined
            await until(pilot, lambda: not engine.is_alive(), "the run to stop", deadline_s=600)
    finally:
        engine.stop(save=False)
        engine.join(timeout=600)
    assert "RUNNING" in text and "model @ step" in text and "ROMEO:" in text
