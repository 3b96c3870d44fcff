"""A studio whose terminal goes away ends as Ctrl-C ends it: a launched run saves a checkpoint
and the studio exits with 130, whether the terminal hung up (SIGHUP) or simply disappeared
(no signal at all: Textual would otherwise read an endless end of input and spin a core,
unseen, for as long as the machine is up)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from gemma_core.data.corpus import bundled_works
from tests.tui.test_compare_follows_logs import LAUNCH_ON_A_TERMINAL, read_screen

ON_A_TERMINAL = LAUNCH_ON_A_TERMINAL.replace("'compare', ", "")


@pytest.mark.parametrize("kind", ["controlling", "plain"], ids=["hung-up", "closed-without-a-signal"])
def test_a_launched_studio_saves_and_ends_when_its_terminal_goes_away(kind, tmp_path):
    data = tmp_path / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    folder = tmp_path / "run"
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="160", LINES="45",
               GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    env.pop("TEXTUAL_DRIVER", None)
    process = subprocess.Popen(
        [sys.executable, "-c", ON_A_TERMINAL, kind, "launch", "--preset", "nano", "--output_dir", str(folder),
         "--train_dataset_path", str(data), "--device", "cpu", "--max_steps", "1000000", "--eval_iters", "100000",
         "--save_steps", "100000"],
        stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True)
    os.close(follower)
    try:
        screen = read_screen(leader, b"RUNNING", 240)
        assert b"RUNNING" in screen, screen[-2000:]
        os.close(leader)  # the terminal window is closed
        leader = -1
        process.wait(240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(60)
        if leader >= 0:
            os.close(leader)
    assert process.returncode == 130
    state = json.loads((folder / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] >= 1
