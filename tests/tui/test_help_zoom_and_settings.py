"""The studio's help screen, zoomed panes, honest chat, and what it remembers between launches."""

from __future__ import annotations

import json
from dataclasses import replace

from textual.widgets import Input

from gemma_core.model.sampling import GenerationStats

from gemma_tui.preferences import preferences_path
from studio_preview import PreviewEngine, preview_snapshot
from gemma_tui.screens.confirm import ConfirmScreen
from gemma_tui.screens.help import HelpScreen
from studio_screens import screen_text
from gemma_tui.widgets.chat_exchange import ChatExchange
from gemma_tui.widgets.chat_panel import ChatPanel, finish_note
from gemma_tui.widgets.layer_map import LayerMap
from gemma_tui.widgets.loss_chart import LossChart
from tests.tui.test_app import SIZE, studio, until


async def test_f1_or_question_mark_opens_the_help_and_keys_do_not_act_behind_it():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        for key in ("f1", "question_mark"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            text = screen_text(app)
            for needed in ("Keys", "pause or resume training", "zoom the focused pane", "F1 or ? this help"):
                assert needed in text, needed
            app.screen.query_one("#help-dialog").scroll_end(animate=False)
            await pilot.pause()
            text = " ".join(screen_text(app).split())  # the panes, further down
            for needed in ("Layers", "sliding-window", "right axis", "gradient norm", "Without an NVIDIA GPU"):
                assert needed in text, needed
            await pilot.press("p")  # not a pause while the help is up
            assert engine.calls == []
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)


async def test_z_zooms_the_focused_pane_to_the_whole_screen_and_back():
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("z")  # the layer map has the focus at start
        assert app.screen.maximized is app.query_one(LayerMap)
        await pilot.press("z")
        assert app.screen.maximized is None
        await pilot.press("slash", "f11")  # in the prompt, z is a letter: F11 zooms the chat
        assert app.screen.maximized is app.query_one(ChatPanel)
        await pilot.press("escape")
        assert app.screen.maximized is None
        app.screen.set_focus(None)
        await pilot.press("z")  # nothing focused: the chart
        assert app.screen.maximized is app.query_one(LossChart)
        await pilot.pause()
        assert app.query_one(LossChart).size.width == SIZE[0] - 2  # the whole screen, inside its border


async def test_theme_smoothing_and_chat_settings_are_remembered_for_the_next_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        app.theme = "gemma-light"
        await pilot.press("right_square_bracket")
        app.query_one("#chat-top-p", Input).value = "2"  # refused when sent: never remembered
        await pilot.press("slash", *"Hi", "enter")
        app.query_one("#chat-top-p", Input).value = ""
        app.query_one("#chat-temperature", Input).value = "0.5"
        await pilot.press(*"Hello", "enter")  # settings that start a reply are remembered
        await until(pilot, lambda: preferences_path().exists() and "0.5" in preferences_path().read_text())
    saved = json.loads(preferences_path().read_text())
    assert preferences_path().is_relative_to(tmp_path / "config")  # the user's config folder
    assert saved == {"theme": "gemma-light", "smoothing": 0.9,
                     "chat": {"temperature": "0.5", "top-k": "", "top-p": "", "max-tokens": "96"},
                     "notifications": True, "token_probabilities": False}

    again = studio(PreviewEngine())
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.theme == "gemma-light"
        assert again.query_one(LossChart).smoothing == 0.9
        assert again.query_one("#chat-temperature", Input).value == "0.5"
        assert "smoothing 0.90" in screen_text(again)
    assert studio(PreviewEngine(), theme="nord").theme == "nord"  # --theme wins for this launch


async def test_a_damaged_settings_file_is_a_notice_and_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    preferences_path().parent.mkdir(parents=True)
    preferences_path().write_text("{not json")
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "gemma-dark"
        assert any("settings not read" in n.message and "studio.json" in n.message for n in app._notifications)


async def test_smoothing_keys_update_the_charts_subtitle_instead_of_stacking_toasts():
    app = studio(PreviewEngine())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*["right_square_bracket"] * 6)
        await pilot.pause()
        assert not any("Smoothing" in n.message for n in app._notifications)
        assert "smoothing 0.99" in screen_text(app)


async def test_unfocused_pane_borders_stand_out_in_both_studio_themes():
    for theme in ("gemma-dark", "gemma-light"):
        app = studio(PreviewEngine(), theme=theme)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            pane = app.query_one("#run-stats")
            border = pane.styles.border_top[1]
            background = app.screen.styles.background
            assert abs(border.brightness - background.brightness) > 0.2, (theme, border, background)


async def test_the_stop_question_names_the_resume_command_and_its_keys():
    app = studio(PreviewEngine(alive=True))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        text = screen_text(app)
        assert "`" not in text
        assert "gemma-tui" in text and "--resume --output_dir output continues" in text
        assert "(y)" in text and "(n)" in text


async def test_a_reply_cut_by_max_tokens_is_marked_and_says_so_and_a_cut_prompt_is_said(tmp_path):
    cut = GenerationStats(prompt_tokens=40, completion_tokens=9, finish_reason="length", prompt_cut=25)
    snapshot = replace(preview_snapshot(), output_dir=str(tmp_path))
    app = studio(PreviewEngine(snapshot, reply_stats=cut))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"To be", "enter")
        await until(pilot, lambda: not app.chat_panel.busy)
        exchange = app.query_one(ChatExchange)
        assert exchange.cut and exchange.as_text().plain.endswith(
            "lord.…  [prompt cut to its last 40 tokens to fit the context · cut at max tokens (96)]")
        # Every exchange is kept in the run folder, with the step and the settings that asked.
        await until(pilot, lambda: (tmp_path / "chat.jsonl").exists())
        [record] = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text().splitlines()]
        assert record["prompt"] == "To be" and record["reply"] == exchange.reply and record["step"] == 640
        assert record["ended"] == "cut" and record["settings"]["max_new_tokens"] == 96


def test_why_a_reply_ended_is_said_only_when_the_model_did_not_end_it():
    assert finish_note(GenerationStats(finish_reason="stop"), 96) == ""
    assert finish_note(GenerationStats(finish_reason="length"), 96) == "cut at max tokens (96)"
    assert finish_note(GenerationStats(finish_reason="length", context_full=True), 96) == "cut: the context is full"


async def test_slash_in_a_settings_field_goes_to_the_prompt_and_a_new_prompt_comes_into_view():
    app = studio(PreviewEngine(reply=" ".join(["line\n"] * 40)))  # a reply taller than the pane
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"first", "enter")
        await until(pilot, lambda: not app.chat_panel.busy)
        log = app.query_one("#chat-log")
        log.scroll_home(animate=False)
        await pilot.pause()
        assert log.max_scroll_y > 0 and log.scroll_y == 0  # reading the old reply from its top
        app.query_one("#chat-top-k", Input).focus()
        await pilot.press("slash")
        assert app.focused.id == "chat-prompt" and app.query_one("#chat-top-k", Input).value == ""
        await pilot.press(*"second", "enter")
        await until(pilot, lambda: not app.chat_panel.busy)
        await pilot.pause(0.2)
        assert log.scroll_y == log.max_scroll_y > 0  # the new exchange is on screen


async def test_c_copies_the_last_reply_and_confirms(monkeypatch):
    app = studio(PreviewEngine())
    copied = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        assert copied == [] and any("No reply to copy" in n.message for n in app._notifications)
        await pilot.press("slash", *"Hi", "enter")
        await until(pilot, lambda: not app.chat_panel.busy)
        app.screen.set_focus(None)
        await pilot.press("c")
        assert copied == [app.query_one(ChatExchange).reply]
        assert any("Copied the last reply" in n.message for n in app._notifications)


async def test_a_new_best_validation_loss_is_announced():
    engine = PreviewEngine(alive=True)
    app = studio(engine)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        snap = engine.snapshot()
        better = replace(snap.best_eval, step=snap.step + 20, val_loss=snap.best_eval.val_loss - 0.1)
        engine.set_snapshot(replace(snap, best_eval=better, version=snap.version + 1))
        await until(pilot, lambda: any("New best validation loss" in n.message for n in app._notifications))
        assert any(f"at step {better.step:,}" in n.message for n in app._notifications)
