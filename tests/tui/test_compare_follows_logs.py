"""`gemma-tui compare` scales with how much a run logs, not with how long it has logged: each
log is read in full once, then only the lines a live run appends, always off the UI thread;
a run that has ended is never read again; and the comparison ends when its terminal goes away,
whether the terminal hangs up (SIGHUP) or just disappears."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gemma_tui.compare as compare
from gemma_core.run.history import LossCurveFollower
from gemma_core.run.log_follower import LogFollower
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState
from gemma_core.train.settings import TrainSettings
from gemma_tui.compare import CompareApp
from gemma_tui.widgets.compare_chart import CompareChart


def train(folder: Path, corpus, steps: int) -> Path:
    train_path, val_path = corpus
    engine = TrainingEngine(TrainSettings.for_preset(
        preset="nano", output_dir=str(folder), train_dataset_path=str(train_path), val_dataset_path=str(val_path),
        cache_dir=str(folder.parent / "cache"), device="cpu", dtype="fp32", max_steps=steps, eval_iters=2,
        save_steps=100_000, seed=1, serve=False))
    engine.start()
    assert engine.join(timeout=240)
    assert engine.snapshot().state is RunState.FINISHED, engine.snapshot().error
    return folder


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus) -> Path:
    return train(tmp_path_factory.mktemp("finished") / "run", corpus, steps=4)


@pytest.fixture
def unfinished(finished, tmp_path) -> Path:
    """A run whose logs may still grow: its logs and config, no checkpoint at its last step."""
    folder = tmp_path / "growing"
    folder.mkdir()
    for name in ("config.json", "training_log.jsonl", "validation_log.jsonl"):
        shutil.copy(finished / name, folder / name)
    return folder


def step_line(step: int, loss: float = 5.0) -> str:
    entry = {"step": step, "train_loss": loss, "learning_rate": 1e-3, "tokens_seen": 512 * step}
    return json.dumps(entry) + "\n"


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(text)


def wait_until(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class ReadsRecorded:
    """Every read of a log, by file and by the thread that did it."""

    def __init__(self, monkeypatch) -> None:
        self.reads: list[tuple[Path, threading.Thread]] = []
        original = LogFollower.read_appended

        def recorded(follower, *args, **kwargs):
            self.reads.append((follower.path, threading.current_thread()))
            return original(follower, *args, **kwargs)

        monkeypatch.setattr(LogFollower, "read_appended", recorded)

    def of(self, folder: Path) -> list[str]:
        return [path.name for path, _ in self.reads if path.parent == folder]


# ------------------------------------------------------------ the log follower
def test_a_followed_log_gives_each_appended_line_once_and_a_torn_line_once_it_is_whole(tmp_path):
    log = tmp_path / "training_log.jsonl"
    log.write_text(step_line(1) + step_line(2), encoding="utf-8")
    follower = LogFollower(log, chunk_bytes=7)  # lines split across reads, as a long log's are
    assert [entry["step"] for _, entry in follower.read_appended()] == [1, 2]
    assert list(follower.read_appended()) == []  # nothing new: nothing read again
    torn = step_line(3)
    append(log, torn[:10])  # a line still being written
    assert list(follower.read_appended()) == []
    append(log, torn[10:] + step_line(4))
    assert [(line, entry["step"]) for line, entry in follower.read_appended()] == [(3, 3), (4, 4)]
    assert not follower.started_over


def test_a_log_replaced_or_cut_short_is_read_again_from_its_start(tmp_path):
    log = tmp_path / "training_log.jsonl"
    log.write_text(step_line(1) + step_line(2) + step_line(3), encoding="utf-8")
    follower = LogFollower(log)
    assert len(list(follower.read_appended())) == 3
    replacement = tmp_path / "new.jsonl"  # as truncate_logs_to rewrites a log on resume
    replacement.write_text(step_line(1) + step_line(2, loss=4.0) + step_line(3, loss=3.0), encoding="utf-8")
    os.replace(replacement, log)
    assert [entry["train_loss"] for _, entry in follower.read_appended()] == [5.0, 4.0, 3.0]
    assert follower.started_over
    log.write_text(step_line(1, loss=9.0), encoding="utf-8")  # cut short in place
    assert [entry["train_loss"] for _, entry in follower.read_appended()] == [9.0]
    assert follower.started_over
    log.unlink()
    assert list(follower.read_appended()) == [] and follower.started_over


def test_a_damaged_line_is_said_once_and_the_lines_after_it_are_read(tmp_path):
    log = tmp_path / "training_log.jsonl"
    log.write_text(step_line(1) + "not json\n" + step_line(3), encoding="utf-8")
    follower = LogFollower(log)
    assert [entry["step"] for _, entry in follower.read_appended()] == [1, 3]
    assert follower.damage == [f"{log}:2: damaged log line (not a JSON object); delete the line or restore "
                               "the file"]
    append(log, step_line(4))
    assert [entry["step"] for _, entry in follower.read_appended()] == [4]
    assert len(follower.damage) == 1


def test_a_long_log_is_kept_as_three_float_columns(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    lines = "".join(step_line(s) for s in range(1, 70_001))  # more than one block of rows
    (folder / "training_log.jsonl").write_text(lines, encoding="utf-8")
    curves = LossCurveFollower(folder)
    curves.read_appended()
    columns = curves.train.columns
    assert columns.steps.tolist()[-2:] == [69_999, 70_000] and columns.tokens[-1] == 512 * 70_000
    assert sum(c.nbytes for c in (columns.steps, columns.tokens, columns.loss)) == 24 * 70_000


# ------------------------------------------------------------------- compare
async def test_lines_a_live_run_appends_appear_and_are_read_off_the_ui_thread(finished, unfinished,
                                                                             monkeypatch):
    monkeypatch.setattr(compare, "RELOAD_S", 0.1)
    reads = ReadsRecorded(monkeypatch)
    app = CompareApp([finished, unfinished])
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
        chart = app.query_one(CompareChart)
        assert chart.runs[1].steps.tolist() == [1, 2, 3, 4]  # read in full before the first drawing
        append(unfinished / "training_log.jsonl", step_line(5, loss=1.0) + step_line(6, loss=0.5))
        deadline = time.monotonic() + 120
        while chart.runs[1].steps.size < 6:
            assert time.monotonic() < deadline, "the appended steps never appeared"
            await pilot.pause(0.05)
        assert chart.runs[1].loss.tolist()[-2:] == [1.0, 0.5]
    assert reads.reads and all(thread is not threading.main_thread() for _, thread in reads.reads)


async def test_a_run_that_has_ended_is_read_once_and_never_again(finished, unfinished,
                                                                    monkeypatch):
    monkeypatch.setattr(compare, "RELOAD_S", 0.05)
    reads = ReadsRecorded(monkeypatch)
    app = CompareApp([finished, unfinished])
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
        first = len(reads.reads)
        deadline = time.monotonic() + 120
        while len(reads.reads) < first + 10:  # the run that may grow is read again and again
            assert time.monotonic() < deadline, "the live run's logs were not followed"
            await pilot.pause(0.05)
    assert sorted(reads.of(finished)) == ["training_log.jsonl", "validation_log.jsonl"]
    assert len(reads.of(unfinished)) >= 12
    assert app.runs[0].ended and not app.runs[1].ended


async def test_a_damaged_log_is_refused_before_anything_is_shown(finished, unfinished):
    append(unfinished / "validation_log.jsonl", '{"step": "three", "val_loss": 1.0}\n')
    app = CompareApp([finished, unfinished])
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
    assert app.refusal is not None
    assert str(app.refusal).startswith(f"{unfinished / 'validation_log.jsonl'}:")
    assert "'step' is 'three'" in str(app.refusal)


# ---------------------------------------------------- a terminal that goes away
LAUNCH_ON_A_TERMINAL = (
    "import os, sys\n"
    "if sys.argv[1] == 'controlling':\n"  # the terminal becomes this session's: closing it sends SIGHUP
    "    os.close(os.open(os.ttyname(0), os.O_RDWR))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'gemma_tui', *sys.argv[2:]])\n")


def read_screen(leader: int, wanted: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                seen += os.read(leader, 65536)
            except OSError:
                break
    return seen


def exit_status_once_its_terminal_goes(kind: str, gemma_tui_args: list[str], shown: bytes, env: dict,
                                      timeout: float = 120) -> int:
    """Run ``gemma-tui ARGS`` on a terminal of its own (its controlling one, or a ``plain`` one
    that sends no SIGHUP), close the terminal once ``shown`` is on it, and return how it exits."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = dict(env, TERM="xterm-256color")
    env.pop("TEXTUAL_DRIVER", None)
    process = subprocess.Popen([sys.executable, "-c", LAUNCH_ON_A_TERMINAL, kind, *gemma_tui_args],
                               stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True)
    os.close(follower)
    try:
        screen = read_screen(leader, shown, timeout)
        assert shown in screen, screen[-2000:]
        os.close(leader)  # the terminal window is closed
        leader = -1
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(60)
        if leader >= 0:
            os.close(leader)


@pytest.mark.parametrize("kind", ["controlling", "plain"], ids=["hung-up", "closed-without-a-signal"])
def test_the_comparison_exits_when_its_terminal_goes_away(kind, finished, unfinished):
    env = dict(os.environ, COLUMNS="120", LINES="40")
    assert exit_status_once_its_terminal_goes(kind, ["compare", str(finished), str(unfinished)],
                                              b"growing", env) == 130  # named in the legend row
