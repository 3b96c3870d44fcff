"""The studio's help screen, zoomed panes, and what it remembers between launches."""

from __future__ import annotations

import json

from textual.widgets import Input

from gemma_tui.preferences import preferences_path
from gemma_tui.preview import PreviewEngine
from gemma_tui.screens.confirm import ConfirmScreen
from gemma_tui.screens.help import HelpScreen
from gemma_tui.screenshots import screen_text
from gemma_tui.widgets.chat_panel import ChatPanel
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
            for needed in ("Layers", "sliding-window", "⅃", "gradient norm", "Without an NVIDIA GPU"):
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
                     "chat": {"temperature": "0.5", "top-k": "", "top-p": "", "max-tokens": "96"}}

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
