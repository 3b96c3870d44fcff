"""Opening or attaching to a run shows how it stands (issue 27, 11): a run stopped early says so
with the command that resumes it; the earlier exchanges of its chat.jsonl are shown; q in a
run opened from the picker goes back to the list; a log read in place of another, or cut
short, is said with the file used and why."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gemma_core.run.history import read_run_history
from gemma_core.run.viewer import RunViewer
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState
from gemma_core.train.settings import TrainSettings
from gemma_tui import cli
from gemma_tui.app import create_app
from studio_preview import PreviewEngine, preview_snapshot
from gemma_tui.run_picker import OPEN, RunPicker
from studio_screens import screen_text
from tests.tui.test_panes import NO_GPU, FixedTelemetry, _utc_clock  # noqa: F401


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, corpus) -> Path:
    """A nano run of 1,000 planned steps, stopped (with a checkpoint) after a few."""
    train_path, val_path = corpus
    out = tmp_path_factory.mktemp("stopped") / "run"
    engine = TrainingEngine(TrainSettings.for_preset(
        preset="nano", output_dir=str(out), train_dataset_path=str(train_path), val_dataset_path=str(val_path),
        cache_dir=str(out.parent / "cache"), device="cpu", dtype="fp32", max_steps=1000, eval_iters=2,
        save_steps=100_000, seed=1, serve=False))
    engine.start()
    deadline_steps = 3
    import time
    end = time.monotonic() + 240
    while engine.snapshot().step < deadline_steps and time.monotonic() < end:
        time.sleep(0.05)
    engine.stop(save=True)
    assert engine.join(timeout=240)
    assert engine.snapshot().state is RunState.STOPPED, engine.snapshot().error
    return out


def test_a_run_stopped_early_opens_as_stopped_with_its_resume_command(stopped_run):
    snap = RunViewer(stopped_run, device="cpu").snapshot()
    assert snap.state is RunState.STOPPED and snap.max_steps == 1000
    said = " ".join(m.text for m in snap.messages)
    assert f"stopped at step {snap.step:,} of 1,000" in said
    assert f"gemma-core train --resume --output_dir {stopped_run}" in said


async def test_the_studio_on_a_stopped_run_shows_stopped_the_step_and_the_resume_command(stopped_run):
    app = create_app(RunViewer(stopped_run, device="cpu"), telemetry=FixedTelemetry(NO_GPU), poll_hz=20)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.5)
        text = " ".join(screen_text(app).split())
        assert "STOPPED" in text and "VIEWING" not in text
        assert "/ 1,000" in text and "--resume" in text


def transcript(folder: Path, *records: dict, damaged: bool = False) -> None:
    lines = [json.dumps(r) for r in records] + (['{"prompt": "torn'] if damaged else [])
    (folder / "chat.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_earlier_exchanges_from_chat_jsonl_are_shown_when_a_run_is_opened(tmp_path):
    transcript(tmp_path, {"step": 120, "prompt": "ROMEO:", "reply": " But soft", "ended": "complete"},
               {"step": 480, "prompt": "JULIET:", "reply": " \x1b[31mO Romeo", "ended": "cut"}, damaged=True)
    engine = PreviewEngine(replace(preview_snapshot(), output_dir=str(tmp_path)), alive=True)
    app = create_app(engine, telemetry=FixedTelemetry(NO_GPU), poll_hz=20)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.5)
        text = " ".join(screen_text(app).split())
        assert "model @ step 120 › ROMEO: But soft (earlier)" in text
        assert "model @ step 480 › JULIET:" in text and "O Romeo" in text and "\x1b" not in text
        assert any("1 damaged line left out" in n.message for n in app._notifications)


def test_q_in_a_run_opened_from_the_picker_goes_back_to_the_list_on_that_run(tmp_path, monkeypatch):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
        (run / "training_log.jsonl").write_text(json.dumps({"step": 1, "train_loss": 5.0, "learning_rate": 1e-3})
                                                + "\n", encoding="utf-8")
    shown, opened = [], []

    def picker_run(self):
        shown.append((self.cursor_on, self.notice))
        by_folder = {entry.folder.resolve(): entry for entry in self.entries}
        return [(OPEN, [by_folder[runs[1].resolve()]]), (OPEN, [by_folder[runs[0].resolve()]]), None][len(shown) - 1]

    def open_run(folder, args):
        opened.append(folder.resolve())
        if len(opened) == 2:
            raise cli.UserError(f"{folder}: no model.safetensors")
        return 0

    monkeypatch.setattr(RunPicker, "run", picker_run)
    monkeypatch.setattr(cli, "open_finished_run", open_run)
    monkeypatch.setattr(cli, "require_terminal", lambda: None)
    args = cli.build_parser().parse_args(["open", "--runs", str(tmp_path)])
    assert cli.pick_a_run(args) == 0
    assert opened == [runs[1].resolve(), runs[0].resolve()]
    assert [cursor.resolve() if cursor else None for cursor, _ in shown] == [None, runs[1].resolve(),
                                                                            runs[0].resolve()]
    assert "no model.safetensors" in shown[2][1]  # a run that cannot be shown: said in the list


async def test_the_picker_starts_on_the_run_left_and_says_why_one_could_not_be_shown(tmp_path):
    from gemma_core.serve.catalog import find_runs

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "training_log.jsonl").write_text('{"step": 1, "train_loss": 5.0}\n', encoding="utf-8")
    entries = find_runs(tmp_path)
    picker = RunPicker(tmp_path, entries, cursor_on=entries[2].folder, notice="b: no model.safetensors")
    async with picker.run_test(size=(100, 20)) as pilot:
        await pilot.pause(0.3)
        assert picker.current.folder == entries[2].folder
        assert any("no model.safetensors" in n.message for n in picker._notifications)


def step_entry(step: int) -> dict:
    return {"step": step, "train_loss": 5.0 - step / 100, "learning_rate": 1e-3, "tokens_seen": 512 * step}


@pytest.mark.parametrize("case", ["seed-only", "seed-cut-no-stream", "stream-and-cut-seed", "torn-stream"])
def test_which_log_was_read_and_why_is_said(tmp_path, case):
    seed = json.dumps([step_entry(s) for s in range(1, 6)])
    stream = "".join(json.dumps(step_entry(s)) + "\n" for s in range(1, 9))
    if case == "seed-only":
        (tmp_path / "training_log.json").write_text(seed, encoding="utf-8")
        expected_steps, said = 5, "read training_log.json (5 steps): the folder has no training_log.jsonl"
    elif case == "seed-cut-no-stream":
        (tmp_path / "training_log.json").write_text(seed[:len(seed) // 2], encoding="utf-8")
        expected_steps, said = 0, "training_log.json: damaged"
    elif case == "stream-and-cut-seed":
        (tmp_path / "training_log.json").write_text(seed[:len(seed) // 2], encoding="utf-8")
        (tmp_path / "training_log.jsonl").write_text(stream, encoding="utf-8")
        expected_steps, said = 8, "read training_log.jsonl (8 steps) instead"
    else:
        (tmp_path / "training_log.jsonl").write_text(stream + '{"step": 9, "train_lo', encoding="utf-8")
        expected_steps, said = 8, "its last line is cut short"
    history = read_run_history(tmp_path, 100)
    assert len(history.steps) == expected_steps
    assert any(said in note for note in history.notes), history.notes


def test_logs_in_order_say_nothing(tmp_path):
    (tmp_path / "training_log.jsonl").write_text("".join(json.dumps(step_entry(s)) + "\n" for s in range(1, 4)),
                                                 encoding="utf-8")
    (tmp_path / "training_log.json").write_text(json.dumps([step_entry(s) for s in range(1, 4)]), encoding="utf-8")
    assert read_run_history(tmp_path, 100).notes == ()
