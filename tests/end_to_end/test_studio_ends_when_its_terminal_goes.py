"""A studio whose terminal goes away ends as Ctrl-C ends it: a launched run saves a checkpoint
and the studio exits with 130, whether the terminal hung up (SIGHUP) or simply disappeared
(no signal at all: Textual would otherwise read an endless end of input and spin a core,
unseen, for as long as the machine is up)."""

from __future__ import annotations

import json
import os

import pytest

from gemma_core.data.corpus import bundled_works
from tests.tui.test_compare_follows_logs import exit_status_once_its_terminal_goes


@pytest.mark.parametrize("kind", ["controlling", "plain"], ids=["hung-up", "closed-without-a-signal"])
def test_a_launched_studio_saves_and_ends_when_its_terminal_goes_away(kind, tmp_path):
    data = tmp_path / "train.txt"
    data.write_text(bundled_works()[0].text[:60_000], encoding="utf-8")
    folder = tmp_path / "run"
    env = dict(os.environ, COLUMNS="160", LINES="45", GEMMA_STUDIO_CACHE=str(tmp_path / "cache"))
    launch = ["launch", "--preset", "nano", "--output_dir", str(folder), "--train_dataset_path", str(data),
              "--device", "cpu", "--max_steps", "1000000", "--eval_iters", "100000", "--save_steps", "100000"]
    assert exit_status_once_its_terminal_goes(kind, launch, b"RUNNING", env, timeout=240) == 130
    state = json.loads((folder / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] >= 1
