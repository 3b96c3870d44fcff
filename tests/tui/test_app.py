"""The studio against a preview engine: keys and palette drive the engine, quit is safe.

No training here (see test_tui_live.py for the real engine): ``PreviewEngine``
records each control call, so these tests say exactly what a key does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gemma_core.errors import UserError
from gemma_core.model.generation import SamplingParams
from gemma_core.run.events import RunState
from gemma_tui.app import create_app
from studio_preview import PreviewEngine, preview_snapshot
from gemma_tui.screens.confirm import ConfirmScreen
from gemma_tui.screens.quit_choice import KEEP, QuitChoiceScreen
from studio_screens import screen_text
from gemma_tui.widgets.chat_exchange import ChatExchange
from gemma_tui.widgets.chat_panel import ChatPanel, read_sampling_params
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart

SIZE = (160, 48)


class QuietTelemetry:
    def sample(self):
        from gemma_core.telemetry import HostReading, TelemetrySample
        return TelemetrySample(0.0, None, None, HostReading(None, 2, None, None), "test")


async def until(pilot, condition, timeout: float = 10.0) -> None:
    """Let the studio run until ``condition()`` holds (its poll timer fires every 0.5 s)."""
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)


def studio(engine: PreviewEngine, **options):
    return create_app(engine, telemetry=QuietTelemetry(), poll_hz=20, **options)


async def test_control_keys_call_the_engine():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await pilot.pause(0.1)
        assert engine.snapshot().state is RunState.PAUSED
        await pilot.press("p", "s", "e")
        assert engine.calls == ["pause", "unpause", "save_now", "eval_now"]
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep training
        assert "stop(save=True)" not in engine.calls
        await pilot.press("x", "y")
        assert engine.calls[-1] == "stop(save=True)"


async def test_controls_are_disabled_when_nothing_trains():
    engine = PreviewEngine(preview_snapshot(state=RunState.VIEWING), alive=False)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p", "s", "e", "x")
        assert engine.calls == []
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.check_action("save_now", ()) is None  # greyed out in the footer


async def test_chart_keys_change_the_view():
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        chart = app.query_one(LossChart)
        await pilot.press("l", "t", "right_square_bracket", "right_square_bracket")
        assert chart.log_scale and chart.x_axis == "tokens" and chart.smoothing == 0.95
        await pilot.press("left_square_bracket")
        assert chart.smoothing == 0.9
        await pilot.pause()
        assert "x: tokens · log · smoothing 0.90" in screen_text(app)


async def test_palette_lists_every_action_and_runs_them():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for title in ("Pause / resume training", "Save checkpoint now", "Evaluate now",
                      "Stop training", "Toggle log scale", "Toggle x axis: steps / tokens",
                      "Chat with the model", "Cancel chat reply", "Theme", "Quit"):
            assert title in titles, title
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Save checkpoint now")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "save_now" in engine.calls


async def test_quit_asks_while_training_whether_to_stop_the_run_or_keep_it():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, QuitChoiceScreen)
        assert "Keep it training in the background" in screen_text(app)
        await pilot.press("escape")  # changed my mind
        assert not isinstance(app.screen, QuitChoiceScreen) and app.is_running
        await pilot.press("q", "s")
        await pilot.pause(0.3)
        assert not app.is_running
    assert engine.calls == ["stop(save=True)"] and app.return_value is None


async def test_keeping_the_run_saves_it_and_hands_it_on():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q", "k")
        await pilot.pause(0.3)
        assert not app.is_running
    # The run stops with a checkpoint; the command line trains on from it in the background.
    assert engine.calls == ["stop(save=True)"] and app.return_value == KEEP


async def test_an_attached_studio_detaches_on_quit_and_never_stops_the_run():
    engine = PreviewEngine(alive=True)
    engine.owns_run = False
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause(0.2)
        assert not app.is_running
    assert engine.calls == ["close"]


async def test_quit_gives_up_waiting_for_a_trainer_that_does_not_stop():
    class Stuck(PreviewEngine):
        """A trainer busy somewhere that never sees the stop (a hung disk, say)."""

        def stop(self, save: bool = True) -> None:
            self.calls.append(f"stop(save={save})")

        def join(self, timeout: float | None = None) -> bool:
            return False

    engine = Stuck(alive=True)
    app = studio(engine)
    app.QUIT_TIMEOUT_S = 0.5
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q", "enter")
        await until(pilot, lambda: not app.is_running, timeout=5.0)
        assert not app.is_running
    assert engine.calls[0] == "stop(save=True)"


async def test_quit_without_a_live_run_exits_at_once():
    engine = PreviewEngine(preview_snapshot(state=RunState.FINISHED), alive=False)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause(0.1)
        assert not app.is_running
    assert engine.calls == []


async def test_engine_failure_shows_as_a_message_not_a_traceback():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        engine.set_snapshot(replace(
            preview_snapshot(state=RunState.FAILED, error="stopped at step 641: 5 steps in a row "
                             "had a non-finite loss"), version=10_000))
        await until(pilot, lambda: "non-finite loss" in screen_text(app))
        await until(pilot, lambda: any("failed at step 640" in n.title for n in app._notifications))
        text = screen_text(app)
        assert "FAILED" in text and "non-finite loss" in text and "Traceback" not in text
        assert any("failed at step 640" in n.title for n in app._notifications)
        assert app.query_one("#run-stats").has_class("-failed")


async def test_broken_snapshot_call_is_reported_once():
    class Broken(PreviewEngine):
        def snapshot(self):
            raise RuntimeError("lost")

    app = studio(Broken())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        messages = [n.message for n in app._notifications]
        assert sum("stopped answering" in m for m in messages) == 1


async def test_layer_map_selects_by_key_and_click():
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        layer_map = app.query_one(LayerMap)
        assert app.focused is layer_map  # focused first, so one-letter keys work at once
        await pilot.press("right", "right")
        assert layer_map.selected == 2
        await pilot.press("down")
        assert layer_map.selected == 2 + layer_map.columns
        await pilot.press("end")
        assert layer_map.selected == 17
        # Layer 7: content row 1 + 7 // columns, column 7 % columns; cells are 7 cells apart.
        columns = layer_map.columns
        x = 2 + (7 % columns) * 7 + 2  # border + padding, then into the cell
        y = 1 + 1 + 7 // columns  # border, legend line, then the row
        await pilot.click(LayerMap, offset=(x, y))
        assert layer_map.selected == 7
        await pilot.pause()
        assert "Layer 7 of 18" in screen_text(app)


async def test_chat_streams_a_reply_and_shows_the_step():
    engine = PreviewEngine()
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"To be", "enter")
        panel = app.query_one(ChatPanel)
        assert panel.busy
        seen = set()
        for _ in range(60):
            await pilot.pause(0.05)
            exchange = app.query_one(ChatExchange)
            seen.add(exchange.reply)
            if not panel.busy:
                break
        assert exchange.reply == " " + engine.reply
        assert len(seen) > 3 and exchange.pieces == len(engine.reply.split())  # in pieces
        assert engine.chat_requests[0][0] == "To be"
        assert "model @ step 640" in screen_text(app)


def send_keys_at_once(app, *keys: tuple[str, str]) -> None:
    """Keys that arrive together, before the studio handles the first: a browser or an ssh
    session delivers a quickly typed "/ROMEO⏎" this way."""
    from textual import events
    for key, character in keys:
        event = events.Key(key, character)
        event.set_sender(app)
        app._driver.send_message(event)


async def test_what_is_typed_right_after_slash_goes_to_the_prompt_and_a_slash_in_it_stays():
    engine = PreviewEngine()
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        send_keys_at_once(app, ("slash", "/"), ("R", "R"), ("O", "O"), ("slash", "/"), ("x", "x"), ("enter", "\r"))
        await until(pilot, lambda: engine.chat_requests)
        assert engine.chat_requests[0][0] == "RO/x"


async def test_escape_cancels_a_streaming_reply():
    engine = PreviewEngine(reply=" ".join(["word"] * 500))
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"Hi", "enter")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.3)
        exchange = app.query_one(ChatExchange)
        assert exchange.finished and exchange.status == "cancelled"
        assert exchange.reply.count("word") < 500
        await pilot.press("escape")  # nothing left to cancel: leaves the prompt
        assert app.focused is None or app.focused.id != "chat-prompt"


async def test_model_output_cannot_steer_the_terminal():
    engine = PreviewEngine(reply="evil\x1b[2J\x1b]0;pwned\x07 [bold red]markup[/]")
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", "a", "enter")
        for _ in range(40):
            await pilot.pause(0.05)
            if not app.query_one(ChatPanel).busy:
                break
        reply = app.query_one(ChatExchange).reply
        assert "\x1b" not in reply and "\x07" not in reply
        assert "[bold red]markup[/]" in screen_text(app)  # shown as text, not interpreted


def test_sampling_settings_are_checked():
    params = read_sampling_params({"temperature": "0", "top-k": "40", "top-p": "0.9",
                                   "max-tokens": "12"})
    assert params == SamplingParams(max_new_tokens=12, temperature=0.0, top_k=40, top_p=0.9)
    assert read_sampling_params({}).top_k is None
    for bad in ({"temperature": "hot"}, {"temperature": "nan"}, {"top-p": "1.5"}, {"top-k": "0"},
                {"max-tokens": "-1"}, {"max-tokens": "2.5"}):
        with pytest.raises(UserError):
            read_sampling_params(bad)


async def test_bad_sampling_settings_notify_instead_of_asking():
    engine = PreviewEngine()
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#chat-top-p").value = "7"
        await pilot.press("slash", "a", "enter")
        await pilot.pause(0.1)
        assert engine.chat_requests == []
        assert any("top_p" in n.message for n in app._notifications)


async def test_theme_switch_redraws_with_the_new_colours():
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "gemma-dark"
        assert "#6e9eff" in app.export_screenshot().lower()
        app.theme = "gemma-light"
        await pilot.pause(0.2)
        svg = app.export_screenshot().lower()
        assert "#1a56db" in svg and "#d9480f" in svg  # chart line and full-attention legend
        app.theme = "nord"  # a built-in theme works too: colours from its own palette
        await pilot.pause(0.2)
        assert app.query_one(LossChart).series(80)["smoothed"]


async def test_ctrl_t_opens_the_theme_picker():
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause(0.2)
        assert "gemma-light" in screen_text(app)


async def test_bad_theme_file_notifies_and_falls_back(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "broken"\nprimary = "not a colour"\n', encoding="utf-8")
    app = studio(PreviewEngine(), theme=str(broken))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "gemma-dark"
        assert any("broken.toml" in n.message for n in app._notifications)


async def test_unknown_theme_name_notifies_and_falls_back():
    app = studio(PreviewEngine(), theme="no-such-theme")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "gemma-dark"
        assert any("no-such-theme" in n.message for n in app._notifications)


async def test_builtin_theme_by_name():
    app = studio(PreviewEngine(), theme="dracula")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "dracula"
        assert not app._notifications


async def test_keys_do_not_act_behind_a_question():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.press("p", "e", "q")  # none of these may reach the engine or stack dialogs
        assert engine.calls == []
        assert len(app.screen_stack) == 2
        await pilot.press("escape")
        assert len(app.screen_stack) == 1


@pytest.mark.parametrize("pace_s", [2.0, 4.0])
async def test_while_a_cpu_trains_the_studio_takes_a_snapshot_once_per_pace(pace_s, monkeypatch):
    # A browser page's studio runs at pace 4 (gemma-tui serve passes --cpu-pace 4), the
    # terminal's at 2: each redraw takes from the cores the training uses.
    app = create_app(PreviewEngine(alive=True), telemetry=QuietTelemetry(), cpu_pace_s=pace_s)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        clock = [1000.0]
        monkeypatch.setattr("gemma_tui.app.time.monotonic", lambda: clock[0])
        app._drawn_at = clock[0]
        later = replace(app.snapshot, version=app.snapshot.version + 1)
        assert later.device == "cpu" and later.state is RunState.RUNNING
        clock[0] += pace_s - 0.2
        assert app._paced_out(later)  # too soon: this snapshot is skipped
        clock[0] += 0.2
        assert not app._paced_out(later)
        assert app.query_one(LossChart).max_data_hz <= 1 / pace_s


async def test_in_a_browser_the_footer_shows_the_keys_a_page_receives(monkeypatch):
    from gemma_tui.app import GemmaStudio

    monkeypatch.setattr(GemmaStudio, "is_web", property(lambda self: True))
    app = studio(PreviewEngine(alive=True))
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: "? Help" in screen_text(app).splitlines()[-1], timeout=60)
        footer = screen_text(app).splitlines()[-1]
        assert "? Help" in footer and "T Theme" in footer and "F1" not in footer and "^t" not in footer
        await pilot.press("T")  # the key the footer names works
        await until(pilot, lambda: "gemma-light" in screen_text(app), timeout=60)
        assert "gemma-light" in screen_text(app)


async def test_every_theme_draws_every_pane_and_the_charts_without_error():
    """Textual's ANSI themes name terminal colours ("ansi_blue") that are not RGB: the studio's
    own drawing (layer map, charts, legends) must still draw in them, as in every other theme."""
    app = studio(PreviewEngine(alive=True))
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        themes = sorted(app.available_themes)
        assert {"ansi-dark", "ansi-light", "gemma-dark", "gemma-light"} <= set(themes)
        await pilot.press("a", "u")  # layers shaded by entropy, chat tokens by probability
        from gemma_tui.widgets.layer_map import ENTROPY, LayerMap
        assert app.query_one(LayerMap).shading == ENTROPY and app.chat_panel.shows_probabilities
        for view in ("studio", "charts"):
            if view == "charts":
                await pilot.press("escape", "g", "a")  # each layer's entropy over the run
            for name in themes:
                app.theme = name
                await pilot.pause()
                assert app._exception is None, f"{name} ({view}): {app._exception!r}"
                assert screen_text(app).strip(), f"{name} ({view}) drew nothing"
