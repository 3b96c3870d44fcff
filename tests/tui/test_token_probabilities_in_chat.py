"""The chat's replies shaded by how sure the model was of each token, and what it weighed at one.

What a user relies on: the shading is off until `u` (or the palette) turns it on; then every
reply of the session, the one streaming included, has each token on its probability band's
shade, with a legend naming the bands; `←` `→` on a reply, or a click on a token, show the
tokens the model weighed there with their probabilities; `u` again takes it all away; the
choice is remembered; every theme's shades keep the text readable.

The engine is the preview's: each word of its reply is a token with a made-up, fixed
probability (tests/studio_preview_tokens.py), so the screens are the same on every run. The
numbers themselves are checked against the model in tests/core/test_token_probabilities.py.
Snapshots: regenerate with GEMMA_TUI_UPDATE_SNAPSHOTS=1 (see tests/tui/test_panes.py).
"""

from __future__ import annotations


import pytest

from gemma_tui.app import create_app
from gemma_tui.palette import studio_palette
from gemma_tui.preferences import Preferences
from studio_preview import PreviewChatJob, PreviewEngine
from studio_preview_tokens import SURENESS
from studio_screens import screen_text, until
from gemma_tui.token_shading import BANDS, MIN_INK_CONTRAST, band_of, ink_on, shade_of
from gemma_tui.widgets.chat_exchange import ChatExchange
from gemma_tui.widgets.chat_panel import ChatPanel
from gemma_tui.widgets.probability_legend import ProbabilityLegend
from tests.tui.test_panes import NO_GPU, FixedTelemetry, PaneHost, _utc_clock, check_snapshot  # noqa: F401

REPLY = "Thou art the very glass of fashion, my good lord."
WORDS = REPLY.split(" ")


def studio(engine=None):
    return create_app(engine or PreviewEngine(alive=True, reply=REPLY), telemetry=FixedTelemetry(NO_GPU),
                      telemetry_hz=0.001, poll_hz=20)


async def ask(pilot, prompt: str = "Hamlet") -> ChatExchange:
    """Send ``prompt`` and wait for the whole reply; the focus leaves the prompt after."""
    app = pilot.app
    await pilot.press("slash", *prompt, "enter")
    await until(pilot, lambda: len(app.query(ChatExchange)) and app.query(ChatExchange).last().finished,
                "the reply")
    await pilot.press("escape")
    return app.query(ChatExchange).last()


def shaded_tokens(exchange: ChatExchange) -> dict[int, str]:
    """token index -> the background it is drawn on, from the reply's text as drawn."""
    text = exchange.as_text()
    return {span.style.meta["token"]: str(span.style.bgcolor.name) for span in text.spans
            if not isinstance(span.style, str) and "token" in span.style.meta}


def expected_shades(app, count: int) -> dict[int, str]:
    palette = studio_palette(app)
    return {i: str(shade_of(band_of(SURENESS[i % len(SURENESS)]), palette).rich_color.name) for i in range(count)}


async def test_the_shading_is_off_until_asked_for_then_each_token_takes_its_probabilitys_shade():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        exchange = await ask(pilot)
        assert len(exchange.tokens) == len(WORDS)  # the probabilities came anyway, for later
        assert shaded_tokens(exchange) == {} and not app.query_one(ProbabilityLegend).display
        await pilot.press("u")
        assert shaded_tokens(exchange) == expected_shades(app, len(WORDS))
        assert len(set(shaded_tokens(exchange).values())) == len(BANDS)  # the preview visits every band
        assert app.query_one(ProbabilityLegend).display
        await pilot.pause()
        assert "≥80% ≥50% ≥20% ≥5% <5%  probability" in screen_text(app)  # the legend, in its narrow form


async def test_arrows_on_a_reply_pick_a_token_and_show_what_the_model_weighed_there():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        exchange = await ask(pilot)
        await pilot.press("u")
        assert app.focused is exchange  # the newest reply, so the arrows work at once
        await pilot.press("right", "right")
        await pilot.pause()
        assert exchange.selected == 1
        assert "token 2 of 10: ▸·art 46% · ·the 27% · ·my 14% · ·a 6.7% · ·thy 3.4%" in screen_text(app)
        await pilot.press("end")
        await pilot.pause()
        assert exchange.selected == len(WORDS) - 1 and "token 10 of 10:" in screen_text(app)
        await pilot.press("left", "left", "left")
        await pilot.pause()
        weighed = exchange.as_text().plain.splitlines()[-1]  # as written, before the pane wraps it
        assert weighed == "token 7 of 10: ·the 48% · ·my 24% · ·a 12% · ·thy 6.1% · ▸·fashion, 3.1%"


async def test_a_click_on_a_token_shows_its_alternatives():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        exchange = await ask(pilot)
        await pilot.press("u")
        await pilot.pause()
        line = exchange.as_text().plain.split("\n")[1]
        await pilot.click(ChatExchange, offset=(line.index(" glass") + 2, 1))
        await pilot.pause()
        assert exchange.selected == WORDS.index("glass") and app.focused is exchange
        assert exchange.as_text().plain.splitlines()[-1].startswith("token 5 of 10: ·the 36% · ▸·glass 27%")


async def test_turning_the_shading_off_takes_away_the_shades_the_alternatives_and_the_legend():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        exchange = await ask(pilot)
        await pilot.press("u", "right")
        await pilot.pause()
        assert "token 1 of 10:" in screen_text(app)
        await pilot.press("u")
        await pilot.pause()
        text = screen_text(app)
        assert shaded_tokens(exchange) == {} and "token 1 of 10:" not in text and "probability" not in text
        assert not app.query_one(ProbabilityLegend).display and not exchange.can_focus and app.focused is None
        assert exchange.as_text().plain.endswith(f"Hamlet {REPLY}")  # the reply itself stays


async def test_earlier_replies_of_the_session_are_shaded_too():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        first = await ask(pilot, "Hamlet")
        second = await ask(pilot, "Ophelia")
        await pilot.press("u")
        assert shaded_tokens(first) == shaded_tokens(second) == expected_shades(app, len(WORDS))
        assert app.focused is second
        await pilot.press("shift+tab", "right")  # Tab goes from reply to reply
        await pilot.pause()
        assert app.focused is first and first.selected == 0 and second.selected is None


class HeldJob(PreviewChatJob):
    """A reply that gives its next word only when the test lets it."""

    allowed = 0

    def take(self) -> str:
        return super().take() if self._given < self.allowed else ""

    @property
    def done(self) -> bool:
        return self.cancelled or self._given >= len(self._words)


class HeldEngine(PreviewEngine):
    def chat(self, prompt, params, alternatives: int = 0):
        self.job = HeldJob(self._snapshot.step, self.reply, alternatives=alternatives)
        return self.job


async def test_a_reply_still_streaming_is_shaded_as_its_tokens_arrive():
    engine = HeldEngine(alive=True, reply=REPLY)
    app = studio(engine)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("u", "slash", *"Hamlet", "enter")
        await until(pilot, lambda: hasattr(engine, "job"), "the reply to start")
        exchange = app.query_one(ChatExchange)
        engine.job.allowed = 3
        await until(pilot, lambda: len(shaded_tokens(exchange)) == 3, "three shaded tokens")
        assert not exchange.finished and exchange.status == "streaming…"
        exchange.focus()
        await pilot.press("right")
        await pilot.pause()
        assert "token 1 of 3: ▸·Thou 93%" in screen_text(app)
        engine.job.allowed = len(WORDS)
        await until(pilot, lambda: exchange.finished, "the rest of the reply")
        assert shaded_tokens(exchange) == expected_shades(app, len(WORDS)) and exchange.selected == 0


async def test_the_choice_is_remembered_for_the_next_studio():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("u")
        await until(pilot, lambda: Preferences.load()[0].token_probabilities, "the preference to be saved")
    again = studio()
    async with again.run_test(size=(120, 36)) as pilot:
        exchange = await ask(pilot)
        assert again.chat_panel.shows_probabilities and shaded_tokens(exchange)


async def test_the_palette_turns_the_shading_on():
    app = studio()
    async with app.run_test(size=(120, 36)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Token probabilities on / off" in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Token probabilities")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.chat_panel.shows_probabilities, "the shading")


async def test_every_theme_shades_each_band_distinctly_with_text_that_reads_on_it():
    app = PaneHost(ChatPanel(PreviewEngine()), lambda panel: panel.show_probabilities(True))
    async with app.run_test(size=(100, 20)) as pilot:
        for theme in sorted(app.available_themes):
            app.theme = theme
            await pilot.pause()
            palette = studio_palette(app)
            shades = [shade_of(band, palette) for band in range(len(BANDS))]
            assert len({shade.hex for shade in shades}) == len(BANDS), theme
            for shade in shades:
                assert abs(ink_on(shade, palette).brightness - shade.brightness) >= MIN_INK_CONTRAST - 0.05, theme


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_a_shaded_reply_with_a_token_picked_fits_its_terminal(size):
    app = studio()
    async with app.run_test(size=size) as pilot:
        await ask(pilot)
        await pilot.press("u", "right", "right", "right", "right")
        await pilot.pause(0.2)
        lines = screen_text(app).splitlines()
        assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines)
        check_snapshot(f"chat_probabilities_{size[0]}x{size[1]}", app)


# ------------------------------------------------------------------ attached
class ServedNano(PreviewEngine):
    """The preview run as its server shows it, with nano weights answering its chats."""

    trains = True

    def __init__(self) -> None:
        import torch

        from gemma_core.chat import ChatService, FixedWeights
        from tests.core.test_token_probabilities import TOKENIZER, nano_with_opinions

        model = nano_with_opinions()
        super().__init__(alive=True, model_config=model.cfg)
        self.tokenizer = TOKENIZER
        self._service = ChatService(FixedWeights(model, 640), TOKENIZER, torch.float32)

    def chat(self, prompt, params, special_tokens=False, alternatives=0):
        return self._service.chat(prompt, params, special_tokens, alternatives)

    def compute(self, pieces_of, per_turn: int = 1):
        return self._service.compute(pieces_of, per_turn)

    def subscribe(self, callback):
        return lambda: None

    def unsubscribe(self, callback) -> None:
        return None


async def test_a_studio_attached_to_a_run_shades_the_replies_its_server_streams(tmp_path):
    """The real path: the studio's RemoteEngine asks the run's server, nano weights behind it."""
    from gemma_core.serve.client import RemoteEngine
    from gemma_core.serve.openai_api import Limits
    from gemma_core.serve.server import RunServer

    server = RunServer(ServedNano(), "nano", folder=tmp_path, limits=Limits())
    server.start()
    engine = RemoteEngine(tmp_path)
    try:
        app = studio(engine)
        async with app.run_test(size=(120, 36)) as pilot:
            app.query_one("#chat-max-tokens").value = "6"
            app.query_one("#chat-temperature").value = "0"  # greedy: the same reply every time
            exchange = await ask(pilot, "ROMEO:")
            await pilot.press("u", "right")
            await pilot.pause()
            assert exchange.job.step == 640 and len(exchange.tokens) == 6 and shaded_tokens(exchange)
            weighed = exchange.as_text().plain.splitlines()[-1]
            assert weighed.startswith("token 1 of 6: ") and "▸" in weighed and "%" in weighed
    finally:
        engine.close()
        server.close()
