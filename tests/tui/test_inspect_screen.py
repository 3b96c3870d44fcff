"""The Inspect screen: one prompt run through the weights the studio shows, looked inside.

What a user relies on: `i` (or the palette) opens it on the last chat prompt; the arrows walk
the layers and heads and the caption says which; a sliding layer's map shows its band (keys
beyond the window blank); the prompt's tokens are shaded by surprisal; a new prompt re-runs
the pass; and a studio that cannot run it says why instead of failing.

The engine is the preview's with a real, tiny, randomised model behind ``compute`` (the same
``ChatService.compute`` a live run and a finished one use).
"""

from __future__ import annotations

import time

import pytest
import torch
from conftest import tiny_config

from gemma_core.chat import ChatService, FixedWeights
from gemma_core.inspect import MAX_TOKENS
from gemma_core.model.config import FULL, SLIDING
from gemma_core.model.model import Gemma3Model
from gemma_core.tokenizers.tokenizer import load_tokenizer
from gemma_tui.app import create_app
from gemma_tui.inspection import NOT_HERE
from studio_preview import PreviewEngine
from gemma_tui.screens.inspect import FALLBACK_PROMPT, InspectScreen, default_prompt
from studio_screens import screen_text
from gemma_tui.widgets.attention_map import AttentionMap
from gemma_tui.widgets.lens_table import LAST, POSITIONS, LensTable
from gemma_tui.widgets.token_strip import TokenStrip
from tests.tui.test_panes import NO_GPU, FixedTelemetry, _utc_clock, check_snapshot  # noqa: F401

TOKENIZER = load_tokenizer("shakespeare-4k")
WINDOW = 4
CONFIG = tiny_config(vocab_size=4096, sliding_window=WINDOW, layer_types=[SLIDING, FULL, SLIDING])
CHAT_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"
STEP = 640  # the preview snapshot's step: the weights "belong" to it


@pytest.fixture(scope="module")
def model() -> Gemma3Model:
    torch.manual_seed(3)
    model = Gemma3Model(CONFIG)
    with torch.no_grad():  # far from the initial weights: every token's surprisal differs
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.eval()


class InspectablePreview(PreviewEngine):
    """The preview run, with weights to inspect through ``compute``."""

    def __init__(self, model: Gemma3Model) -> None:
        super().__init__(alive=True, model_config=CONFIG)
        self.tokenizer = TOKENIZER
        self._service = ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32)
        self.passes: list[str] = []

    def compute(self, pieces_of, per_turn: int = 1):
        self.passes.append("pass")
        return self._service.compute(pieces_of, per_turn)


def studio(engine):
    return create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)


async def until(pilot, condition, what: str, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if not pilot.app.is_running or pilot.app._exception is not None:
            raise AssertionError(f"the studio ended while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {deadline_s:.0f} s for {what}")
        await pilot.pause(0.05)


async def opened(pilot, app, key: str = "i") -> InspectScreen:
    """Press ``key`` (or run the palette when None) and wait for the pass to be shown."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, InspectScreen), "the Inspect screen")
    screen = app.screen
    await until(pilot, lambda: not screen.running and (screen.found or screen.problem), "the pass")
    await pilot.pause(0.1)
    return screen


async def chatted(pilot, app, prompt: str = CHAT_PROMPT) -> None:
    app.chat_panel.send(prompt)
    await until(pilot, lambda: not app.chat_panel.busy, "the chat reply")
    app.screen.set_focus(None)  # one-letter keys act again


def map_lines(screen: InspectScreen) -> list[str]:
    """The map's rows as text (below its caption and legend)."""
    text = screen.query_one(AttentionMap).render().plain
    return text.splitlines()[3:]


# ---------------------------------------------------------------- opening
async def test_i_opens_inspect_on_the_last_chat_prompt_with_the_weights_step(model):
    engine = InspectablePreview(model)
    app = studio(engine)
    async with app.run_test(size=(120, 36)) as pilot:
        await chatted(pilot, app, "an earlier prompt")
        await chatted(pilot, app)
        screen = await opened(pilot, app)
        assert screen.problem is None
        assert screen.query_one("#inspect-prompt").value == CHAT_PROMPT.replace("\n", "⏎")  # one line
        assert "".join(screen.found.tokens) == CHAT_PROMPT
        status = str(screen.query_one("#inspect-status").render())
        assert f"weights of step {STEP}" in status and f"{len(screen.found.tokens)} tokens" in status
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, InspectScreen), "the screen to close")


async def test_the_palette_lists_inspect_and_opens_it(model):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=(120, 36)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Inspect the model" in titles
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Inspect the model")
        await pilot.pause(0.5)
        screen = await opened(pilot, app, "enter")
        assert screen.found is not None


def test_without_a_chat_the_prompt_is_the_runs_sample_prompt_else_romeo():
    class Settings:
        sample_prompt = ("", "JULIET:")

    class Engine:
        settings = Settings()

    class FinishedRun:
        config_data = {"training": {"sample_prompt": ["HAMLET:"]}}

    assert default_prompt(Engine()) == "JULIET:"
    assert default_prompt(FinishedRun()) == "HAMLET:"
    assert default_prompt(PreviewEngine()) == FALLBACK_PROMPT == "ROMEO:"


# ------------------------------------------------------------- the views
async def test_arrows_move_between_layers_and_heads_and_the_caption_follows(model):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(pilot, app)
        attention = screen.query_one(AttentionMap)
        assert attention.caption() == (f"layer 0 of 3 · sliding, window {WINDOW}",
                                       f"head 1 of 4 · entropy {float(screen.found.layers[0].entropy[0]):.2f} nats")
        await pilot.press("down")
        assert attention.caption()[0] == "layer 1 of 3 · full (global)"
        await pilot.press("right", "right")
        entropy = float(screen.found.layers[1].entropy[2])
        assert attention.caption()[1] == f"head 3 of 4 · entropy {entropy:.2f} nats"
        await pilot.press("pagedown")
        assert attention.caption()[0].startswith("layer 2 of 3")
        await pilot.press("up", "left")
        assert attention.caption()[0].startswith("layer 1 of 3") and attention.caption()[1].startswith("head 2")
        await pilot.press("left", "left")  # round to the last head
        assert attention.caption()[1].startswith("head 4 of 4")


async def test_a_sliding_layer_leaves_keys_beyond_its_window_blank_and_a_full_layer_does_not(model):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=(160, 45)) as pilot:
        await chatted(pilot, app)
        screen = await opened(pilot, app)
        tokens = len(screen.found.tokens)
        assert tokens > 3 * WINDOW
        sliding = map_lines(screen)
        last = sliding[-1]  # the last queries: they see only the last WINDOW keys
        drawn = last.rstrip()
        assert drawn.endswith("▀") and drawn.startswith(" ")
        scale = len(drawn) // tokens  # cells per token
        blank_keys = (len(drawn) - len(drawn.lstrip())) // scale
        assert blank_keys >= tokens - WINDOW - 1
        await pilot.press("down")  # the full layer: the last token sees every one before it
        full_last = map_lines(screen)[-1]
        assert full_last.startswith("▀") and full_last.rstrip().count(" ") == 0
        # Above the diagonal nothing is seen, in either kind of layer.
        assert map_lines(screen)[0].rstrip().count("▀") <= 2 * scale


async def test_the_token_strip_shades_the_most_surprising_token_strongest(model):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(pilot, app)
        strip = screen.query_one(TokenStrip)
        bits = screen.found.surprisal
        assert strip.shades[0] is None  # nothing predicts the first token
        most = max(range(1, len(bits)), key=lambda i: bits[i])
        least = min(range(1, len(bits)), key=lambda i: bits[i])
        from gemma_tui.palette import studio_palette

        surface = studio_palette(app).surface

        def distance(color) -> float:
            return sum(abs(a - b) for a, b in zip(color.rgb, surface.rgb))

        assert distance(strip.shades[most]) > distance(strip.shades[least])
        shown = str(strip.render())
        assert f"{bits[most]:.1f}" in shown and f"{bits[least]:.1f}" in shown


async def test_the_lens_opens_narrow_as_the_last_positions_top_tokens_and_v_shows_every_position(model):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, app)
        lens = screen.query_one(LensTable)
        assert lens.view == LAST and lens.row_count == len(screen.found.layers)
        assert len(lens.columns) == 2 + screen.found.top_k
        await pilot.press("v")
        assert lens.view == POSITIONS and len(lens.columns) == 1 + len(screen.found.tokens)


# --------------------------------------------------------------- re-runs
async def test_a_new_prompt_runs_again_on_enter_and_r_runs_it_once_more(model):
    engine = InspectablePreview(model)
    app = studio(engine)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(pilot, app)
        first = screen.found
        await pilot.press("slash")
        field = screen.query_one("#inspect-prompt")
        assert screen.focused is field
        field.value = ""
        await pilot.press(*"JULIET:", "enter")
        await until(pilot, lambda: screen.found is not first and not screen.running, "the second pass")
        assert "".join(screen.found.tokens) == "JULIET:"
        shown = str(screen.query_one(TokenStrip).render())
        assert shown.startswith("J –") and all(token in shown for token in screen.found.tokens)
        second = screen.found
        await pilot.press("r")  # the map has the focus again: r runs the same prompt
        await until(pilot, lambda: screen.found is not second and not screen.running, "the third pass")
        assert len(engine.passes) == 3


async def test_a_prompt_too_long_is_refused_in_one_line_and_the_last_pass_stays(model):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(pilot, app)
        before = screen.found
        screen.rerun("word " * (MAX_TOKENS + 10))
        await until(pilot, lambda: not screen.running, "the refusal")
        status = str(screen.query_one("#inspect-status").render())
        assert status.startswith("Not inspected: ") and "at most" in status and "\n" not in status
        assert screen.found is before


async def test_a_studio_without_the_runs_weights_says_where_inspect_works():
    app = studio(PreviewEngine(alive=True))  # no compute, no inspect: like nothing here
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await opened(pilot, app)
        assert str(screen.query_one("#inspect-status").render()) == f"Not inspected: {NOT_HERE}"


# ------------------------------------------------------------- snapshots
@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_the_inspect_screen_fits_its_terminal(model, size):
    app = studio(InspectablePreview(model))
    async with app.run_test(size=size) as pilot:
        await chatted(pilot, app)
        await opened(pilot, app)
        await pilot.pause(0.2)
        text = screen_text(app)
        lines = text.splitlines()
        assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines)
        assert "layer 0 of 3" in text and "Logit lens" in text and "Esc Close" in lines[-1].replace("esc", "Esc")
        check_snapshot(f"inspect_{size[0]}x{size[1]}", app)


# ------------------------------------------------------------- attached
class ServedPreview(InspectablePreview):
    """What a run's server needs of a run, around the inspectable preview."""

    trains = True

    def subscribe(self, callback):
        return lambda: None

    def unsubscribe(self, callback) -> None:
        return None


@pytest.fixture()
def served(model, tmp_path):
    from gemma_core.serve.openai_api import Limits
    from gemma_core.serve.server import RunServer

    server = RunServer(ServedPreview(model), "preview", folder=tmp_path, limits=Limits())
    server.start()
    yield tmp_path, server
    server.close()


def post(server, path: str, body: bytes) -> tuple[int, dict]:
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", path, body=body, headers={"Authorization": f"Bearer {server.token}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def test_an_attached_studio_inspects_through_the_runs_server(model, served):
    from gemma_core.serve.client import RemoteEngine

    folder, _ = served
    engine = RemoteEngine(folder)
    app = studio(engine)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            screen = await opened(pilot, app)
            assert screen.problem is None and "".join(screen.found.tokens) == FALLBACK_PROMPT
            assert screen.found.step == STEP and len(screen.found.layers) == 3
            assert map_lines(screen)[0].startswith("▀")
    finally:
        engine.close()


@pytest.mark.parametrize("body, param, says", [
    (b'{"prompt": 5}', "prompt", "send {"),
    (b'{"prompt": "ROMEO:", "top_k": 0}', "top_k", "from 1 to 50"),
    (b'{"prompt": "ROMEO:", "top_k": true}', "top_k", "from 1 to 50"),
    (b'{"prompt": "ROMEO:", "colour": 1}', "colour", "unknown field"),
    (b'{"prompt": ""}', "prompt", "is empty"),
    (('{"prompt": "' + "word " * (MAX_TOKENS + 10) + '"}').encode(), "prompt", "at most 512"),
    (('{"prompt": "' + "w" * 20_000 + '"}').encode(), "prompt", "characters"),
    (b'[1, 2]', "prompt", "send {"),
], ids=["not-text", "top_k-0", "top_k-bool", "unknown-field", "empty", "too-many-tokens", "too-many-chars",
        "not-an-object"])
def test_the_inspect_route_refuses_a_bad_request_in_the_openai_error_shape(served, body, param, says):
    _, server = served
    status, answer = post(server, "/api/inspect", body)
    assert status == 400, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert says in error["message"]


def test_the_inspect_route_answers_the_documented_shape_and_needs_the_key(served):
    _, server = served
    status, answer = post(server, "/api/inspect", b'{"prompt": "ROMEO:", "top_k": 3}')
    assert status == 200
    assert set(answer) == {"step", "tokens", "layers", "next", "surprisal"}
    assert answer["step"] == STEP and len(answer["next"]) == 3
    assert [layer["type"] for layer in answer["layers"]] == ["sliding", "full", "sliding"]
    server.token, real = "not-the-key", server.token
    try:
        status, answer = post(server, "/api/inspect", b'{"prompt": "ROMEO:"}')
    finally:
        server.token = real
    assert status == 401
