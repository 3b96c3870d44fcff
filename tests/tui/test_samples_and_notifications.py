"""What the model wrote, by step (the Samples screen, `w`), and a run that needs its user
telling them outside the studio (bell and OSC 9 notification) once per event.

The Samples screen is kept as text snapshots at 80x24 and 160x45 (regenerate with
GEMMA_TUI_UPDATE_SNAPSHOTS=1 after a deliberate change; see test_panes.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from textual.widgets import DataTable

from gemma_core.run.layout import CHAT_TRANSCRIPT, SAMPLES
from gemma_core.run.samples_log import SampleHistory, read_samples
from gemma_core.serve.wire import snapshot_from_wire, to_wire
from gemma_core.run.events import EvalResult, RunState, SampleProduced
from gemma_core.run.state_store import RunStateStore
from gemma_tui import notifications
from gemma_tui.app import create_app
from gemma_tui.notifications import RunWatcher, alert_sequence, terminal_shows_osc9
from gemma_tui.preferences import Preferences
from studio_preview import PreviewEngine, preview_snapshot
from gemma_tui.screens.samples import SamplesScreen
from studio_screens import screen_text
from tests.tui.test_panes import NO_GPU, FixedTelemetry, check_snapshot

ROMEO = {100: " the the and the of the the", 300: " And what art thou, that speak so loud",
         500: " I will not be so bold to say, my lord, that the king is dead and gone to his rest."}
JULIET = {100: " o o o the", 300: " Good night, good night", 500: " Parting is such sweet sorrow."}


def gallery_samples() -> tuple[SampleProduced, ...]:
    return tuple(SampleProduced(step, prompt, texts[step])
                 for step in (100, 300, 500) for prompt, texts in (("ROMEO:", ROMEO), ("JULIET:", JULIET)))


def write_chat(folder: Path, *exchanges: tuple[int | None, str, str]) -> None:
    with open(folder / CHAT_TRANSCRIPT, "a", encoding="utf-8") as transcript:
        for step, prompt, reply in exchanges:
            transcript.write(json.dumps({"step": step, "prompt": prompt, "reply": reply, "ended": "complete"}) + "\n")


def studio(snapshot) -> object:
    return create_app(PreviewEngine(snapshot=snapshot), telemetry=FixedTelemetry(NO_GPU),
                      telemetry_hz=0.001, poll_hz=20)


async def open_samples(app, pilot) -> SamplesScreen:
    await pilot.pause(0.1)
    await pilot.press("w")
    for _ in range(40):
        await pilot.pause(0.05)
        if isinstance(app.screen, SamplesScreen) and app.screen.query_one(DataTable).row_count:
            break
    await pilot.pause(0.1)
    return app.screen


def table_rows(screen: SamplesScreen) -> list[list[str]]:
    table = screen.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def detail(screen: SamplesScreen) -> str:
    return str(screen.query_one("#samples-text").render())


@pytest.fixture
def run_folder(tmp_path) -> Path:
    write_chat(tmp_path, (400, "KING:", " my lords, we shall be gone ere morning"))
    return tmp_path


# ------------------------------------------------------------------- gallery
async def test_the_samples_screen_lists_every_sample_and_chat_reply_by_step_newest_first(run_folder):
    app = studio(replace(preview_snapshot(), samples=gallery_samples(), output_dir=str(run_folder)))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_samples(app, pilot)
        rows = table_rows(screen)
        assert [(row[0].strip(), row[1], row[2]) for row in rows] == [
            ("500", "sample", "ROMEO:"), ("500", "sample", "JULIET:"), ("400", "chat", "KING:"),
            ("300", "sample", "ROMEO:"), ("300", "sample", "JULIET:"),
            ("100", "sample", "ROMEO:"), ("100", "sample", "JULIET:")]
        await pilot.press("o")  # oldest first
        await pilot.pause(0.1)
        assert [row[0].strip() for row in table_rows(screen)] == ["100", "100", "300", "300", "400", "500", "500"]
        assert "o Newest first" in screen_text(app)
        await pilot.press("o")
        await pilot.pause(0.1)
        assert table_rows(screen)[0][:3] == rows[0][:3] and "o Oldest first" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, SamplesScreen)


async def test_selecting_a_sample_shows_it_whole_then_the_same_prompt_at_every_step(run_folder):
    app = studio(replace(preview_snapshot(), samples=gallery_samples(), output_dir=str(run_folder)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(app, pilot)
        # The newest ROMEO sample is longer than its cell: the table cuts it, the detail does not.
        assert "to his rest." not in table_rows(screen)[0][3]
        text = detail(screen)
        assert text.startswith("ROMEO:" + ROMEO[500])
        sequence = text[text.index("The same prompt"):]
        assert [sequence.index(ROMEO[step].strip()) for step in (100, 300, 500)] == sorted(
            sequence.index(ROMEO[step].strip()) for step in (100, 300, 500))  # oldest first
        assert JULIET[300].strip() not in text
        await pilot.press("down")  # JULIET at step 500
        await pilot.pause(0.1)
        text = detail(screen)
        assert text.startswith("JULIET:" + JULIET[500]) and JULIET[100].strip() in text
        assert ROMEO[300].strip() not in text
        assert "Step 500 · sample" in screen_text(app)


async def test_chat_replies_appear_with_the_step_whose_weights_answered_as_they_are_kept(run_folder):
    app = studio(replace(preview_snapshot(), samples=(), output_dir=str(run_folder)))
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_samples(app, pilot)
        assert [(r[0].strip(), r[1], r[2]) for r in table_rows(screen)] == [("400", "chat", "KING:")]
        # A reply kept while the screen is open shows within a couple of seconds.
        write_chat(run_folder, (640, "KING:", " now is the winter of our discontent"))
        for _ in range(60):
            await pilot.pause(0.1)
            if len(table_rows(screen)) == 2:
                break
        assert [(r[0].strip(), r[1]) for r in table_rows(screen)] == [("640", "chat"), ("400", "chat")]
        text = detail(screen)
        assert text.startswith("KING: now is the winter") and "we shall be gone" in text  # both steps


async def test_model_text_with_markup_or_escape_codes_is_shown_as_plain_text(tmp_path):
    hostile = SampleProduced(200, "[bold]X[/bold]", " \x1b]0;owned\x07[red]red[/red] \x1b[2J done")
    app = studio(replace(preview_snapshot(), samples=(hostile,), output_dir=str(tmp_path)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_samples(app, pilot)
        text = detail(screen)
        assert "\x1b" not in text and "\x07" not in text
        assert text.startswith("[bold]X[/bold]") and "[red]red[/red]" in text
        assert "[red]red[/red]" in screen_text(app)


async def test_with_nothing_sampled_the_screen_says_how_to_get_samples(tmp_path):
    app = studio(replace(preview_snapshot(), output_dir=str(tmp_path)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("w")
        await pilot.pause(0.3)
        assert isinstance(app.screen, SamplesScreen)
        assert "--sample_prompt" in screen_text(app)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_samples_screen_snapshot(size, run_folder):
    app = studio(replace(preview_snapshot(), samples=gallery_samples(), output_dir=str(run_folder)))
    async with app.run_test(size=size) as pilot:
        await open_samples(app, pilot)
        await pilot.pause(0.2)
        text = screen_text(app)
        lines = text.splitlines()
        assert len(lines) == size[1] and all(len(line) <= size[0] for line in lines)
        check_snapshot(f"samples_{size[0]}x{size[1]}", app)


# ------------------------------------------ samples travel in the snapshot
def test_a_run_keeps_its_samples_in_its_snapshot_and_an_attached_studio_receives_them():
    store = RunStateStore("run", "/nowhere", 1000, None)
    for sample in gallery_samples():
        store.publish(sample)
    snap = store.snapshot()
    assert [(s.step, s.prompt) for s in snap.samples] == [(s.step, s.prompt) for s in gallery_samples()]
    over_the_wire = snapshot_from_wire(json.loads(json.dumps(to_wire(snap))))
    assert over_the_wire.samples == snap.samples


def test_a_long_run_keeps_a_bounded_spread_of_its_samples_first_and_newest_included():
    history = SampleHistory(capacity=8)
    for step in range(10, 1010, 10):
        for prompt in ("A", "B"):
            history.add(SampleProduced(step, prompt, f"{prompt}{step}"))
    kept = history.snapshot()
    steps = sorted({s.step for s in kept})
    assert len(steps) <= 8 and steps[0] == 10 and steps[-1] == 1000
    assert all([s.prompt for s in kept if s.step == step] == ["A", "B"] for step in steps)  # never half a step


def test_a_finished_or_resumed_run_reads_its_samples_file_skipping_damaged_lines(tmp_path):
    lines = [json.dumps({"step": 100, "prompt": "ROMEO:", "text": " hi"}), "{not json",
             json.dumps({"step": "x", "prompt": "ROMEO:", "text": " no"}), json.dumps([1, 2]),
             json.dumps({"step": 200, "prompt": "ROMEO:", "text": " hello"}), '{"step": 300, "pro']
    (tmp_path / SAMPLES).write_text("\n".join(lines), encoding="utf-8")
    samples, note = read_samples(tmp_path)
    assert [(s.step, s.text) for s in samples] == [(100, " hi"), (200, " hello")]
    assert note is not None and "4 damaged lines" in note and str(tmp_path / SAMPLES) in note
    assert read_samples(tmp_path / "missing") == ([], None)
    store = RunStateStore("run", str(tmp_path), 300, None)
    store.load_samples(samples)
    assert [s.step for s in store.snapshot().samples] == [100, 200]


# ------------------------------------------------------------- notifications
def _with_evals(snap, losses):
    evals = tuple(EvalResult(step=100 * (i + 1), tokens_seen=0, val_loss=loss, perplexity=math.exp(min(loss, 50)),
                             bits_per_byte=1.0) for i, loss in enumerate(losses))
    finite = [e for e in evals if math.isfinite(e.val_loss)]
    return replace(snap, eval_history=evals, best_eval=min(finite, key=lambda e: e.val_loss) if finite else None,
                   version=snap.version + 1)


def _running():
    return _with_evals(preview_snapshot(step=600, state=RunState.RUNNING), [3.0, 2.5, 2.2])


def _non_finite(snap):
    latest = replace(snap.latest, loss=math.nan)
    return replace(snap, latest=latest, skipped_steps=snap.skipped_steps + 1, version=snap.version + 1)


def _rising(snap, later_losses):
    """A snapshot per new evaluation, each after the one before."""
    snapshots, losses = [], [e.val_loss for e in snap.eval_history]
    for loss in later_losses:
        losses.append(loss)
        snap = _with_evals(snap, losses)
        snapshots.append(snap)
    return snapshots


def _state(snap, state, error=None):
    return replace(snap, state=state, error=error, version=snap.version + 1)


# Each: the snapshots a studio sees after the first, and the one notice they must give.
SEQUENCES = {
    "finished": lambda s: [_state(s, RunState.FINISHED)],
    "failed": lambda s: [_state(s, RunState.FAILED, "step 601: 5 steps in a row had a non-finite loss")],
    "stopped": lambda s: [_state(s, RunState.STOPPED)],
    "validation rising": lambda s: _rising(s, [2.3, 2.4, 2.6]),
    "loss not finite": lambda s: [_non_finite(s)],
}
WORDS = {"finished": "finished at step 600", "failed": "failed at step 600: step 601",
         "stopped": "stopped at step 600 of 1,500", "validation rising": "rose 3 evaluations in a row",
         "loss not finite": "not finite at step 600"}
TOASTS = {"finished": "Finished", "failed": "Training failed at step 600", "stopped": "Stopped",
          "validation rising": "Run diverging", "loss not finite": "Run diverging"}


class TerminalWrites:
    """What the studio sends to its terminal through notifications.write_to_terminal."""

    def __init__(self, monkeypatch) -> None:
        self.writes: list[str] = []
        monkeypatch.setattr(notifications, "write_to_terminal", lambda app, data: self.writes.append(data))


@pytest.fixture
def terminal(monkeypatch) -> TerminalWrites:
    monkeypatch.setenv("TERM_PROGRAM", "WezTerm")  # a terminal that shows OSC 9
    return TerminalWrites(monkeypatch)


async def drive(app, engine, snapshots, redraws: int = 5):
    """Show each snapshot in turn, then keep redrawing the last one."""
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.pause(0.1)
        for snap in snapshots:
            engine.set_snapshot(snap)
            await pilot.pause(0.15)
        for _ in range(redraws):
            app.refresh_from_engine()
            await pilot.pause(0.05)
        return [(n.title, n.message) for n in app._notifications]


@pytest.mark.parametrize("event", list(SEQUENCES))
async def test_a_run_that_ends_or_diverges_rings_and_notifies_outside_the_studio_exactly_once(event, terminal):
    first = _running()
    engine = PreviewEngine(snapshot=first, alive=True)
    app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)
    toasts = await drive(app, engine, SEQUENCES[event](first))
    assert len(terminal.writes) == 1, terminal.writes
    write = terminal.writes[0]
    assert write.startswith("\x1b]9;Gemma Studio: ") and write.endswith("\x07\a")
    assert WORDS[event] in write
    assert write.count("\x1b") == 1 and write.count("\x07") == 2  # nothing inside can end it early
    # ... and a toast in the studio says it too, once.
    assert [title for title, _ in toasts].count(TOASTS[event]) == 1, toasts


async def test_opening_a_run_that_has_already_ended_or_is_diverging_rings_nothing(terminal):
    for snap in (_state(_running(), RunState.FINISHED), _state(_running(), RunState.FAILED, "boom"),
                 _non_finite(_with_evals(_running(), [3.0, 2.5, 2.6, 2.7, 2.8]))):
        engine = PreviewEngine(snapshot=snap)
        app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)
        await drive(app, engine, [])
    assert terminal.writes == []


async def test_turning_notifications_off_keeps_the_bell_and_osc_9_quiet_and_is_remembered(terminal):
    first = _running()
    engine = PreviewEngine(snapshot=first, alive=True)
    app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), telemetry_hz=0.001, poll_hz=20)
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.pause(0.1)
        await app.run_action("toggle_notifications")
        for snap in SEQUENCES["validation rising"](first) + [_state(first, RunState.FINISHED)]:
            engine.set_snapshot(snap)
            await pilot.pause(0.15)
        toasts = [n.title for n in app._notifications]
        app._save_preferences()
    assert terminal.writes == []
    assert "Run diverging" in toasts  # the toast inside the studio still shows
    assert Preferences.load()[0].notifications is False


def test_a_diverging_run_is_told_once_per_episode_and_again_after_it_recovers():
    watcher = RunWatcher(rising_evals=3)
    base = _running()
    told = [watcher.observe(s) for s in (
        base, _with_evals(base, [3.0, 2.5, 2.2, 2.3, 2.4, 2.5]),  # 3 rises at once (snapshots skipped)
        _with_evals(base, [3.0, 2.5, 2.2, 2.3, 2.4, 2.5, 2.6]),  # still rising: already told
        _with_evals(base, [3.0, 2.5, 2.2, 2.3, 2.4, 2.5, 2.6, 2.1]),  # recovered
        _with_evals(base, [3.0, 2.5, 2.2, 2.3, 2.4, 2.5, 2.6, 2.1, 2.2, 2.3, 2.4]))]  # a new episode
    assert [len(notices) for notices in told] == [0, 1, 0, 0, 1]
    # A non-finite loss: once, until a finite validation loss comes after it.
    watcher = RunWatcher()
    bad = _non_finite(base)
    worse = _non_finite(bad)
    recovered = _with_evals(replace(worse, latest=replace(worse.latest, loss=2.0)), [3.0, 2.5, 2.2, 2.1])
    again = _non_finite(recovered)
    assert [len(watcher.observe(s)) for s in (base, bad, worse, recovered, again)] == [0, 1, 0, 0, 1]


@pytest.mark.parametrize("environ,osc9", [
    ({"TERM_PROGRAM": "iTerm.app"}, True), ({"WT_SESSION": "x"}, True), ({"TERM": "xterm-kitty"}, True),
    ({"TERM": "foot"}, True), ({"TERM_PROGRAM": "WezTerm"}, True), ({"TERM_PROGRAM": "textual"}, True),
    ({"TERM": "xterm-256color"}, False), ({"TERM": "linux"}, False), ({"TERM_PROGRAM": "tmux"}, False)])
def test_osc_9_goes_only_to_terminals_that_show_it_and_the_bell_to_every_one(environ, osc9):
    assert terminal_shows_osc9(environ) is osc9
    sequence = alert_sequence("Gemma Studio: finished\x1b]0;x\x07\x9c\nnext", terminal_shows_osc9(environ))
    assert sequence.endswith("\a")
    if osc9:
        assert sequence == "\x1b]9;Gemma Studio: finished]0;x next\x07\a"
    else:
        assert sequence == "\a"


def test_a_nan_step_in_the_history_does_not_count_as_a_rise():
    snap = _with_evals(_running(), [3.0, 2.5, math.nan, 2.6, 2.7])
    assert notifications.rising_streak(snap) == 1


# ------------------------------------------------- a real run's samples, end to end
def test_a_real_runs_samples_reach_its_snapshot_a_viewer_of_it_and_its_resumption(tmp_path, corpus):
    from gemma_core.run.viewer import RunViewer
    from gemma_core.train.engine import TrainingEngine
    from gemma_core.train.settings import TrainSettings

    train, val = corpus
    out = tmp_path / "run"
    engine = TrainingEngine(TrainSettings.for_preset(
        preset="nano", output_dir=str(out), train_dataset_path=str(train), val_dataset_path=str(val),
        cache_dir=str(tmp_path / "cache"), device="cpu", dtype="fp32", max_steps=4, eval_iters=2,
        save_steps=4, seed=3, sample_prompt=("ROMEO:", "JULIET:"), sample_every=2, sample_tokens=3))
    engine.start()
    assert engine.join(timeout=240)
    snap = engine.snapshot()
    assert snap.state is RunState.FINISHED, snap.error
    assert [(s.step, s.prompt) for s in snap.samples] == [(2, "ROMEO:"), (2, "JULIET:"), (4, "ROMEO:"),
                                                         (4, "JULIET:")]
    assert all(s.text for s in snap.samples)

    assert RunViewer(out, device="cpu").snapshot().samples == snap.samples  # the run opened later

    resumed = TrainingEngine(TrainSettings.for_resume(out, max_steps=6, train_dataset_path=str(train),
                                                      val_dataset_path=str(val)))
    resumed.start()
    assert resumed.join(timeout=240)
    again = resumed.snapshot()
    assert again.state is RunState.FINISHED, again.error
    assert [s.step for s in again.samples] == [2, 2, 4, 4, 6, 6]  # its earlier samples, then the new


# -------------------------------------------------- the browser and desktop page
NODE_HARNESS = r"""
const script = require("fs").readFileSync(0, "utf8");
const shown = [];
class FakeSocket {
  constructor() { this.listeners = []; }
  addEventListener(type, listener) { if (type === "message") this.listeners.push(listener); }
}
global.window = { WebSocket: FakeSocket, addEventListener() {} };
global.document = { title: "Gemma Studio", hasFocus: () => false };
window.Notification = global.Notification = class {
  constructor(title, options) { shown.push([title, options.body]); }
};
Notification.permission = "granted";
new Function(script)();
const socket = new window.WebSocket("ws://studio");
const bytes = (text) => new TextEncoder().encode(text).buffer;
for (const chunk of ["\x1b[2Jframe", "x\x1b]9;Gemma Studio: training finished at step 30.\x07\x07y", "plain"]) {
  socket.listeners.forEach((listener) => listener({ data: bytes(chunk) }));
}
socket.listeners.forEach((listener) => listener({ data: "[\"pong\", \"1\"]" }));
console.log(JSON.stringify({ shown, title: document.title }));
"""


def test_the_browser_page_turns_the_studios_osc_9_into_one_desktop_notification_and_marks_its_title():
    import re
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js to run the page's script")
    page = (Path(__file__).parents[2] / "gemma_tui" / "web" / "app_index.html").read_text(encoding="utf-8")
    script = next(body for body in re.findall(r"<script>(.*?)</script>", page, re.S) if "]9;" in body
                  or "OSC 9" in body)
    done = subprocess.run([node, "-e", NODE_HARNESS], input=script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["shown"] == [["Gemma Studio", "Gemma Studio: training finished at step 30."]]
    assert result["title"] == "● Gemma Studio"
