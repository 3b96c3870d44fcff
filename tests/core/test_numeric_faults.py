"""A non-finite loss is caught at its step: skipped and counted, and too many in a row stop the run."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import nano_settings

from gemma_core.model.model import Gemma3Model
from gemma_core.train import checkpoints
from gemma_core.train.engine import TrainingEngine
from gemma_core.run.events import RunState


@pytest.fixture
def poisoned_steps(monkeypatch):
    """Make the loss NaN on chosen optimizer steps (1-based), as a fault in the data or math would."""
    chosen: set[int] = set()
    calls = {"n": 0}
    real_loss = Gemma3Model.loss

    def loss(self, inputs, targets, ignore_index=-100):
        calls["n"] += 1
        value = real_loss(self, inputs, targets, ignore_index)
        return value * float("nan") if calls["n"] in chosen else value

    monkeypatch.setattr(Gemma3Model, "loss", loss)
    return chosen


def test_isolated_nan_steps_are_skipped_and_counted(tmp_path, corpus, poisoned_steps):
    poisoned_steps.update({5, 9})
    engine = TrainingEngine(nano_settings(tmp_path, corpus, max_steps=12, eval_iters=100, save_steps=100))
    engine.start()
    assert engine.join(timeout=120)
    snapshot = engine.snapshot()
    assert snapshot.state is RunState.FINISHED, snapshot.error
    assert snapshot.skipped_steps == 2
    steps = [e["step"] for e in json.loads((tmp_path / "run" / "training_log.json").read_text())]
    assert steps == list(range(1, 13))  # skipped steps are retried, not logged as done
    assert any("not finite" in m.text for m in snapshot.messages)


def test_repeated_nan_stops_the_run_naming_the_step_and_keeps_the_checkpoint(tmp_path, corpus, poisoned_steps):
    poisoned_steps.update(range(9, 100))
    engine = TrainingEngine(nano_settings(tmp_path, corpus, max_steps=40, eval_iters=100, save_steps=4,
                                          max_bad_steps=3))
    engine.start()
    assert engine.join(timeout=120)
    snapshot = engine.snapshot()
    assert snapshot.state is RunState.FAILED
    assert "stopped at step 9: 3 steps in a row had a non-finite loss" in snapshot.error
    model_state, _, state = checkpoints.load_checkpoint(tmp_path / "run")
    assert state["step"] == 8
    assert all(torch.isfinite(t).all() for t in model_state.values())
