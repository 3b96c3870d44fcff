"""The Python API: everything the command line does, a notebook does with the same defaults."""

from __future__ import annotations

import json
import threading
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from gemma_core import (CheckpointSaved, CommandRefused, EvalResult, RunFinished, RunState, TrainingEngine,
                        TrainingFailed, TrainSettings)
from gemma_core.cli import build_parser
from gemma_core.cli.train import settings_from_args
from gemma_core.data.corpus import training_works, validation_works
from gemma_core.errors import UserError
from gemma_core.model.presets import DEFAULT_PRESET, PRESETS
from gemma_core.run.events import StateChanged, StepMetrics


def test_default_settings_are_the_default_preset_and_train_as_shipped():
    assert TrainSettings() == TrainSettings.for_preset(DEFAULT_PRESET)
    settings = TrainSettings()
    settings.validate()
    assert settings.tiktoken_encoder_name == PRESETS[DEFAULT_PRESET].training.tokenizer
    assert settings.max_length <= PRESETS[DEFAULT_PRESET].config.context_length
    TrainingEngine(settings)  # constructs without a complaint


def test_the_command_line_and_python_agree_on_every_preset():
    for name in PRESETS:
        args = build_parser().parse_args(["train", "--preset", name])
        assert settings_from_args(args) == TrainSettings.for_preset(name)


def test_a_short_run_scales_the_presets_intervals_but_keeps_explicit_ones():
    short = TrainSettings.for_preset("demo", max_steps=3)
    assert (short.warmup_steps, short.eval_iters, short.save_steps) == (1, 1, 1)
    args = build_parser().parse_args(["train", "--max_steps", "3"])
    assert settings_from_args(args) == short  # `gemma-core train --max_steps 3` trains
    medium = TrainSettings.for_preset("demo", max_steps=700)
    assert (medium.warmup_steps, medium.eval_iters, medium.save_steps) == (25, 100, 200)
    assert TrainSettings.for_preset("demo", max_steps=5000).warmup_steps == 50  # never scaled up
    with pytest.raises(UserError, match="--warmup_steps 50 is above --max_steps 3"):
        TrainSettings.for_preset("demo", max_steps=3, warmup_steps=50)


def nano(tmp_path, **overrides) -> TrainSettings:
    texts = [w.text[:4000] for w in training_works()[:8]]
    values = dict(output_dir=str(tmp_path / "run"), train_texts=texts, cache_dir=str(tmp_path / "cache"),
                  device="cpu", dtype="fp32", max_steps=20, eval_iters=10, save_steps=10, seed=5)
    values.update(overrides)
    return TrainSettings.for_preset("nano", **values)


def test_run_trains_from_texts_in_memory_and_returns_the_final_snapshot(tmp_path):
    final = TrainingEngine(nano(tmp_path)).run()
    assert final.state is RunState.FINISHED and final.step == 20
    assert [e.step for e in final.eval_history] == [10, 20]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert saved["train_texts"]["documents"] == 8 and len(saved["train_texts"]["sha256"]) == 64


def test_resume_continues_a_run_and_keeps_its_id(tmp_path):
    first = TrainingEngine(nano(tmp_path)).run()
    texts = [w.text[:4000] for w in training_works()[:8]]
    with pytest.raises(UserError, match="pass the same train_texts= to resume it"):
        TrainingEngine.resume(tmp_path / "run", max_steps=30)
    engine = TrainingEngine.resume(tmp_path / "run", max_steps=30, train_texts=texts)
    final = engine.run()
    assert final.step == 30 and final.run_id == first.run_id
    assert [e.step for e in final.eval_history] == [10, 20, 30]  # the history came back
    other = [w.text[:4000] for w in validation_works()[:3]]
    with pytest.raises(TrainingFailed, match="trained on other data: its training"):
        TrainingEngine.resume(tmp_path / "run", max_steps=40, train_texts=other).run()


def test_commands_complete_with_their_outcome(tmp_path):
    engine = TrainingEngine(nano(tmp_path, max_steps=100_000, eval_iters=100_000, save_steps=100_000))
    stepped = threading.Event()
    engine.subscribe(lambda e: stepped.set() if isinstance(e, StepMetrics) and e.step >= 2 else None)
    engine.start()
    assert stepped.wait(120)
    paused = engine.pause().result(timeout=60)
    assert isinstance(paused, StateChanged) and paused.state is RunState.PAUSED
    saved = engine.save_now().result(timeout=60)
    assert isinstance(saved, CheckpointSaved) and saved.step == engine.snapshot().step
    assert engine.save_now().result(timeout=60) == saved  # nothing new to save: the same checkpoint
    result = engine.eval_now().result(timeout=60)
    assert isinstance(result, EvalResult) and result.step == saved.step
    assert engine.unpause().result(timeout=60).state is RunState.RUNNING
    finished = engine.stop().result(timeout=120)
    assert isinstance(finished, RunFinished) and finished.reason == "stopped" and finished.checkpoint
    assert engine.join(timeout=60)
    with pytest.raises(CommandRefused, match="not running"):
        engine.save_now().result(timeout=1)
    assert engine.stop().result(timeout=1).reason == "stopped"


def test_a_command_can_be_waited_on_with_a_timeout(tmp_path):
    engine = TrainingEngine(nano(tmp_path))
    with pytest.raises(FutureTimeout):
        engine.eval_now().result(timeout=0.1)  # not started: nothing answers yet
    engine.run()


def test_subscribers_can_unsubscribe_and_every_event_names_the_run(tmp_path):
    engine = TrainingEngine(nano(tmp_path))
    kept, dropped = [], []
    engine.subscribe(kept.append)
    unsubscribe = engine.subscribe(dropped.append)
    unsubscribe()
    final = engine.run()
    assert kept and not dropped
    assert {event.run_id for event in kept} == {final.run_id} and final.run_id


def test_a_failed_run_raises_with_its_reason(tmp_path):
    with pytest.raises(TrainingFailed, match="--max_length 300 is above the model's context_length 256"):
        TrainingEngine(nano(tmp_path, max_length=300, stride=300)).run()


def test_an_engine_sets_every_attribute_when_it_is_made(tmp_path):
    engine = TrainingEngine(nano(tmp_path))
    before = set(vars(engine))
    engine.run()
    assert set(vars(engine)) == before


def test_a_command_cancelled_before_it_runs_is_dropped(tmp_path):
    engine = TrainingEngine(nano(tmp_path, max_steps=12))
    evaluation = engine.eval_now()
    assert evaluation.cancel()  # still waiting: the run has not started
    final = engine.run()
    assert evaluation.cancelled() and [e.step for e in final.eval_history] == [10, 12]


def test_mistakes_in_python_are_refused_where_they_are_made(tmp_path):
    from gemma_core import SamplingParams, TrainSettings

    with pytest.raises(TypeError, match=r"TrainingEngine takes TrainSettings.*for_preset\('nano'\)"):
        TrainingEngine("nano")
    with pytest.raises(UserError, match="'max_steps' must be a whole number, got '3'"):
        TrainSettings(max_steps="3")
    with pytest.raises(UserError, match="stop_strings must be a list of strings"):
        SamplingParams(stop_strings="ab").validate()
    engine = TrainingEngine(TrainSettings.for_preset("nano", output_dir=str(tmp_path / "run"), max_steps=2,
                                                     train_texts=training_works_texts(), device="cpu"))
    with pytest.raises(UserError, match="the prompt must be text, got NoneType"):
        engine.chat(None, SamplingParams())
    with pytest.raises(UserError, match="--max_new_tokens must be 0 or more, got -5"):
        engine.chat("KING", SamplingParams(max_new_tokens=-5))
    with pytest.raises(UserError, match="the prompt is not valid UTF-8 text"):
        engine.chat("hi\udcff", SamplingParams())


def training_works_texts() -> tuple[str, ...]:
    return tuple(work.text[:5000] for work in training_works()[:3])
